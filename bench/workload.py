"""A seeded, reproducible JSON Lines workload in the shape of the contract
(/work/shared/contract/EVENTS.md; one message a line with its `topic`).

    python -m bench.workload --events 100000 --members 10000 --seed 1 --out w.jsonl

writes `w.jsonl` and `w.plan.json` (the counts by kind and a plan of ticks:
the 1st, 15th and 25th of each month covered, each with the number of lines
whose arrival precedes it, for a benchmark that interleaves ticks).

What is in it (shares of the *activity* events, i.e. everything that is not an
enrollment, a duplicate, a conflicting duplicate or a malformed line):

- enrollments for ~95% of the members (capped at half the events): 85% of them
  in the first two weeks of the span, the rest at any time (so their earlier
  events are held and released, some as not eligible);
- usage charges ~55%, card purchases and refunds ~30% (one refund in ten),
  MTS shop purchases with 1-4 lines and returns for ~15% of them ~6%, MGTS
  links and monthly bills ~4% (one link per MGTS account, bills arriving in
  the first days of the month after their period, one in ten late),
  Баллы Плюс transfers ~2%; activity is spread over members with log-normal
  weights (a few heavy users, many light ones);
- ~1% exact duplicates (re-sent within two days), ~0.05% conflicting
  duplicates (same event_id, another amount) and ~0.05% malformed lines
  (bad JSON, bad msisdn, three-decimal amount, unknown topic, missing field,
  wrong topic);
- timestamps in Moscow time (+03:00), increasing overall in file order, with
  3% of usage, card and partner events arriving 1 hour to 7 days late;
  amounts as decimal strings with two places.

The same arguments always give the same bytes.
"""
from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from schemas import TYPE_TOPIC

#: Bump when the output for the same arguments changes (cache key of bench.run).
GENERATOR_VERSION = 1

MSK = timezone(timedelta(hours=3))
DAY = 86_400

ENROLL, USAGE, CARD_PURCHASE, CARD_REFUND, SHOP_PURCHASE, BALLYPLUS, MGTS_LINK, MGTS_BILL, MALFORMED = range(9)
KIND_NAMES = {
    ENROLL: "member_enrolled",
    USAGE: "usage_charged",
    CARD_PURCHASE: "card_purchase",
    CARD_REFUND: "card_refund",
    SHOP_PURCHASE: "shop_purchase",
    BALLYPLUS: "ballyplus_transfer",
    MGTS_LINK: "mgts_account_linked",
    MGTS_BILL: "mgts_bill",
    MALFORMED: "malformed",
}
TOPICS = TYPE_TOPIC  # message type -> inbound topic (EVENTS.md)
ID_PREFIX = {
    "member_enrolled": "enr",
    "usage_charged": "use",
    "shop_purchase": "shp",
    "shop_return": "ret",
    "mgts_account_linked": "lnk",
    "mgts_bill": "bill",
    "card_purchase": "cp",
    "card_refund": "cr",
    "ballyplus_transfer": "bp",
}
# Shares of the activity events (normalised; they sum to 0.97 as in the brief).
ACTIVITY_SHARES = {"usage": 0.55, "card": 0.30, "shop": 0.06, "mgts": 0.04, "ballyplus": 0.02}
ENROLLED_SHARE = 0.95
EARLY_ENROLLMENT_SHARE = 0.85
DUPLICATE_SHARE = 0.01
CONFLICT_SHARE = 0.0005
MALFORMED_SHARE = 0.0005
CARD_REFUND_SHARE = 0.10
RETURN_SHARE = 0.15  # of shop purchases
LATE_SHARE = 0.03
LATE_MGTS_BILL_SHARE = 0.10
SERVICES = ("mobile", "mobile_internet", "home_internet", "tv")
CHANNELS = ("web", "sms", "shop", "auto")
CHANNEL_WEIGHTS = (50, 25, 15, 10)
CATEGORIES = ("mts_branded", "other", "excluded")
CATEGORY_WEIGHTS = (25, 65, 10)
LINE_COUNTS = (1, 2, 3, 4)
LINE_COUNT_WEIGHTS = (50, 30, 15, 5)
MALFORMED_VARIANTS = (
    "invalid_json", "invalid_msisdn", "invalid_amount", "unknown_topic", "invalid_schema", "wrong_topic"
)

_IDX_BITS = 32
_IDX_MASK = (1 << _IDX_BITS) - 1


def _epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=MSK).timestamp())


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _stamp(ts: int) -> str:
    return datetime.fromtimestamp(ts, MSK).isoformat()


def _money(cents: int) -> str:
    cents = max(1, min(cents, 1_000_000_000))
    return f"{cents // 100}.{cents % 100:02d}"


def _split(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Whole numbers in proportion to `shares` that add up to `total`."""
    weight = sum(shares.values())
    exact = {k: total * v / weight for k, v in shares.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    rest = total - sum(counts.values())
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[:rest]:
        counts[k] += 1
    return counts


class _Writer:
    """Turns the sorted skeleton into lines, merging in what was scheduled
    for later (returns, duplicates, conflicting duplicates)."""

    def __init__(self, rng: random.Random, seed: int, msisdns: list[int], t0: int, t1: int, handle: Any):
        self.rng = rng
        self.seed = seed
        self.msisdns = msisdns
        self.t0, self.t1 = t0, t1
        self.handle = handle
        self.pending: list[tuple[int, int, str, str]] = []  # (arrival, seq, line, label)
        self.seq = 0
        self.serial = 0
        self.lines = 0
        self.counts: dict[str, int] = {}
        self.card_of: dict[int, str] = {}
        self.ticks: list[tuple[int, str]] = []  # (epoch, as_of) still ahead
        self.tick_lines: list[dict[str, Any]] = []

    def msisdn(self, index: int) -> str:
        return f"79{self.msisdns[index]:09d}"

    def next_id(self, kind: str) -> str:
        self.serial += 1
        return f"{ID_PREFIX[kind]}-{self.seed}-{self.serial}"

    def schedule(self, arrival: int, line: str, label: str) -> None:
        self.seq += 1
        heapq.heappush(self.pending, (min(arrival, self.t1 - 1), self.seq, line, label))

    def flush_until(self, arrival: int) -> None:
        while self.pending and self.pending[0][0] <= arrival:
            at, _, line, label = heapq.heappop(self.pending)
            self.emit(at, line, label)

    def emit(self, arrival: int, line: str, label: str) -> None:
        while self.ticks and self.ticks[0][0] <= arrival:
            _, as_of = self.ticks.pop(0)
            self.tick_lines.append({"as_of": as_of, "after_line": self.lines})
        self.handle.write(line)
        self.handle.write("\n")
        self.lines += 1
        self.counts[label] = self.counts.get(label, 0) + 1

    def occurred(self, arrival: int, may_be_late: bool) -> int:
        if may_be_late and self.rng.random() < LATE_SHARE:
            return max(self.t0, arrival - self.rng.randint(3600, 7 * DAY))
        return arrival

    @staticmethod
    def dump(message: dict[str, Any]) -> str:
        return json.dumps(message, ensure_ascii=False)

    def message(self, kind: str, occurred: int, event_id: str | None = None, **fields: Any) -> dict[str, Any]:
        return {
            "topic": TOPICS[kind],
            "event_id": event_id or self.next_id(kind),
            "type": kind,
            "occurred_at": _stamp(occurred),
            **fields,
        }


@dataclass(frozen=True)
class _Counts:
    """How many of each kind a workload holds (before returns, duplicates and
    conflicting duplicates are scheduled, which are picked from the lines)."""

    enroll: int
    duplicate: int
    conflict: int
    malformed: int
    usage: int
    card: int
    refund: int
    shop: int
    shop_return: int
    ballyplus: int
    mgts_accounts: int
    bills: int

    @classmethod
    def of(cls, events: int, members: int, months: int) -> _Counts:
        n_enroll = min(round(ENROLLED_SHARE * members), events // 2)
        n_dup = round(DUPLICATE_SHARE * events)
        n_conflict = round(CONFLICT_SHARE * events)
        n_malformed = round(MALFORMED_SHARE * events)
        activity = max(0, events - n_enroll - n_dup - n_conflict - n_malformed)
        share = _split(activity, ACTIVITY_SHARES)
        n_refund = round(share["card"] * CARD_REFUND_SHARE)
        n_return = round(share["shop"] * RETURN_SHARE / (1 + RETURN_SHARE))
        n_shop = share["shop"] - n_return
        n_mgts_accounts = max(1, share["mgts"] // months) if share["mgts"] else 0
        return cls(
            enroll=n_enroll,
            duplicate=n_dup,
            conflict=n_conflict,
            malformed=n_malformed,
            usage=share["usage"],
            card=share["card"] - n_refund,
            refund=n_refund,
            shop=n_shop,
            shop_return=n_return if n_shop else 0,
            ballyplus=share["ballyplus"],
            mgts_accounts=n_mgts_accounts,
            bills=share["mgts"] - n_mgts_accounts,
        )


def _key(ts: int, kind: int, index: int) -> int:
    """A line of the skeleton: sorts by time, then kind; `index` says whose."""
    return ((ts * 16 + kind) << _IDX_BITS) | index


def _member_keys(rng: random.Random, n: _Counts, members: int, t0: int, span: int) -> list[int]:
    """Enrollments, then the activity of the members, by log-normal weights."""
    keys: list[int] = []
    for index in rng.sample(range(members), n.enroll):
        if rng.random() < EARLY_ENROLLMENT_SHARE:
            ts = t0 + rng.randrange(14 * DAY)
        else:
            ts = t0 + rng.randrange(span)
        keys.append(_key(ts, ENROLL, index))

    weights = [rng.lognormvariate(0.0, 1.0) for _ in range(members)]
    cumulative, total = [], 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    del weights
    plan_kinds = [USAGE] * n.usage + [CARD_PURCHASE] * n.card + [CARD_REFUND] * n.refund
    plan_kinds += [SHOP_PURCHASE] * n.shop + [BALLYPLUS] * n.ballyplus
    who = rng.choices(range(members), cum_weights=cumulative, k=len(plan_kinds))
    del cumulative
    for kind, index in zip(plan_kinds, who, strict=True):
        keys.append(_key(t0 + rng.randrange(span), kind, index))
    return keys


def _mgts_keys(
    rng: random.Random, n: _Counts, members: int, start: date, months: int, t0: int, t1: int
) -> tuple[list[int], list[int]]:
    """MGTS accounts, each linked to a member and billed monthly for the
    previous month; returns (the lines, the member of each account)."""
    span = t1 - t0
    keys: list[int] = []
    mgts_member = [rng.randrange(members) for _ in range(n.mgts_accounts)]
    for account in range(n.mgts_accounts):
        if rng.random() < 0.8:
            ts = t0 + rng.randrange(60 * DAY)
        else:
            ts = t0 + rng.randrange(span)
        keys.append(_key(ts, MGTS_LINK, account))
    for bill in range(n.bills):
        account = bill % n.mgts_accounts
        period = (bill // n.mgts_accounts) % (months - 1)  # periods 0 .. months-2
        month_start = _epoch(_add_months(start, period + 1))
        if rng.random() < LATE_MGTS_BILL_SHARE:
            ts = month_start + rng.randrange(5 * DAY, 40 * DAY)
        else:
            ts = month_start + rng.randrange(5 * DAY)
        keys.append(_key(min(ts, t1 - 1), MGTS_BILL, account * 64 + period))
    return keys, mgts_member


def _kind_of(key: int) -> int:
    return (key >> _IDX_BITS) % 16


def _repeats(rng: random.Random, n: _Counts, keys: list[int]) -> tuple[set[int], set[int], set[int]]:
    """Which lines get a return, a conflicting duplicate or a duplicate."""
    purchases = [p for p, k in enumerate(keys) if _kind_of(k) == SHOP_PURCHASE]
    with_return = set(rng.sample(purchases, min(n.shop_return, len(purchases))))
    del purchases
    priced = [p for p, k in enumerate(keys) if _kind_of(k) in (USAGE, CARD_PURCHASE, CARD_REFUND)]
    conflicting = set(rng.sample(priced, min(n.conflict, len(priced))))
    del priced
    duplicated = set(rng.sample(range(len(keys)), min(n.duplicate, len(keys))))
    return with_return, conflicting, duplicated


def _ticks(start: date, months: int) -> list[tuple[int, str]]:
    """The 1st, 15th and 25th of each month covered, and the 1st after."""
    ticks: list[tuple[int, str]] = []
    for m in range(months + 1):
        first = _add_months(start, m)
        for day in (1, 15, 25):
            d = first.replace(day=day)
            if d > start and (m < months or day == 1):
                ticks.append((_epoch(d), d.isoformat()))
    return ticks


def generate(
    events: int,
    members: int,
    seed: int,
    out: Path,
    start: date = date(2025, 1, 1),
    months: int = 12,
) -> dict[str, Any]:
    """Writes the workload to `out` and its plan next to it; returns the plan."""
    if members < 1 or events < 1 or months < 2:
        raise ValueError("need at least one member, one event and two months")
    if members > _IDX_MASK:
        raise ValueError("too many members")
    rng = random.Random(seed)
    t0, t1 = _epoch(start), _epoch(_add_months(start, months))
    n = _Counts.of(events, members, months)

    # -- the skeleton: one key a line, sorted by time ----------------------------
    msisdns = rng.sample(range(10**9), members)
    keys = _member_keys(rng, n, members, t0, t1 - t0)
    mgts_keys, mgts_member = _mgts_keys(rng, n, members, start, months, t0, t1)
    keys += mgts_keys
    del mgts_keys
    for _ in range(n.malformed):
        keys.append(_key(t0 + rng.randrange(t1 - t0), MALFORMED, rng.randrange(members)))
    keys.sort()
    repeats = _repeats(rng, n, keys)

    # -- writing ---------------------------------------------------------------------
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        w = _Writer(rng, seed, msisdns, t0, t1, handle)
        w.ticks = _ticks(start, months)
        _write(w, rng, keys, repeats, mgts_member, start)
    tmp.replace(out)

    plan = {
        "generator_version": GENERATOR_VERSION,
        "events": events,
        "members": members,
        "seed": seed,
        "start": start.isoformat(),
        "months": months,
        "lines": w.lines,
        "mgts_accounts": n.mgts_accounts,
        "counts": dict(sorted(w.counts.items())),
        "ticks": w.tick_lines,
    }
    plan_path(out).write_text(json.dumps(plan, indent=1) + "\n", encoding="utf-8")
    return plan


def _write(
    w: _Writer,
    rng: random.Random,
    keys: list[int],
    repeats: tuple[set[int], set[int], set[int]],
    mgts_member: list[int],
    start: date,
) -> None:
    """Writes the skeleton's lines in order, with what they schedule for later
    (a return, a conflicting duplicate, a duplicate) merged in when due."""
    with_return, conflicting, duplicated = repeats
    for position, key in enumerate(keys):
        head = key >> _IDX_BITS
        ts, kind, index = head // 16, head % 16, key & _IDX_MASK
        w.flush_until(ts)
        message = _build(w, rng, kind, ts, index, mgts_member, start)
        line = w.dump(message) if isinstance(message, dict) else message
        w.emit(ts, line, KIND_NAMES[kind])
        if kind == SHOP_PURCHASE and position in with_return:
            _schedule_return(w, rng, message, ts)
        if position in conflicting:
            other = dict(message)
            cents = int(message["amount"].replace(".", ""))
            other["amount"] = _money(cents + rng.randint(1, 5000))
            w.schedule(ts + rng.randint(60, 3 * DAY), w.dump(other), "conflicting_duplicate")
        if position in duplicated:
            w.schedule(ts + rng.randint(1, 2 * DAY), line, "duplicate")
    w.flush_until(w.t1 + 1)
    while w.ticks:
        _, as_of = w.ticks.pop(0)
        w.tick_lines.append({"as_of": as_of, "after_line": w.lines})


def plan_path(out: Path) -> Path:
    return out.with_name(out.stem + ".plan.json")


def _build(w: _Writer, rng: random.Random, kind: int, ts: int, index: int, mgts_member: list[int], start: date) -> Any:
    if kind == ENROLL:
        channel = rng.choices(CHANNELS, CHANNEL_WEIGHTS)[0]
        return w.message("member_enrolled", ts, msisdn=w.msisdn(index), channel=channel)
    if kind == USAGE:
        return w.message(
            "usage_charged", w.occurred(ts, True), msisdn=w.msisdn(index),
            service=rng.choice(SERVICES), amount=_money(rng.randint(1000, 150_000)),
        )
    if kind in (CARD_PURCHASE, CARD_REFUND):
        card = w.card_of.get(index)
        if card is None:
            card = w.card_of[index] = f"card-{w.seed}-{index}"
        mu = 7.0 if kind == CARD_PURCHASE else 6.0
        cents = int(min(rng.lognormvariate(mu, 1.0), 300_000) * 100)
        name = "card_purchase" if kind == CARD_PURCHASE else "card_refund"
        return w.message(name, w.occurred(ts, True), msisdn=w.msisdn(index), card_id=card, amount=_money(cents))
    if kind == SHOP_PURCHASE:
        event_id = w.next_id("shop_purchase")
        count = rng.choices(LINE_COUNTS, LINE_COUNT_WEIGHTS)[0]
        lines = [
            {
                "line_id": f"l{n}",
                "category": rng.choices(CATEGORIES, CATEGORY_WEIGHTS)[0],
                "amount": _money(int(min(rng.lognormvariate(8.0, 1.2), 500_000) * 100)),
            }
            for n in range(count)
        ]
        return w.message(
            "shop_purchase", ts, event_id=event_id, msisdn=w.msisdn(index),
            store_id=f"S{rng.randint(1, 200)}", receipt_id="rcpt-" + event_id.split("-", 1)[1], lines=lines,
        )
    if kind == BALLYPLUS:
        points = max(1, min(int(rng.lognormvariate(4.0, 1.2)), 100_000))
        return w.message("ballyplus_transfer", w.occurred(ts, True), msisdn=w.msisdn(index), partner_points=points)
    if kind == MGTS_LINK:
        return w.message(
            "mgts_account_linked", ts, mgts_account=f"MGTS{w.seed % 100:02d}{index:08d}",
            msisdn=w.msisdn(mgts_member[index]),
        )
    if kind == MGTS_BILL:
        account, period = divmod(index, 64)
        month = _add_months(start, period)
        return w.message(
            "mgts_bill", ts, mgts_account=f"MGTS{w.seed % 100:02d}{account:08d}",
            period=f"{month.year:04d}-{month.month:02d}", amount=_money(rng.randint(15_000, 250_000)),
        )
    if kind == MALFORMED:
        return _malformed(w, rng, ts, index)
    raise AssertionError(kind)


def _schedule_return(w: _Writer, rng: random.Random, purchase: dict[str, Any], ts: int) -> None:
    lines = purchase["lines"]
    chosen = rng.sample(lines, rng.randint(1, len(lines)))
    returned = []
    for line in chosen:
        cents = int(line["amount"].replace(".", ""))
        if rng.random() >= 0.6 and cents > 1:
            cents = rng.randint(1, cents - 1)
        returned.append({"line_id": line["line_id"], "amount": _money(cents)})
    arrival = min(ts + rng.randint(DAY, 30 * DAY), w.t1 - 1)
    message = w.message(
        "shop_return", arrival, msisdn=purchase["msisdn"], store_id=purchase["store_id"],
        receipt_id=purchase["receipt_id"], lines=returned,
    )
    w.schedule(arrival, w.dump(message), "shop_return")


def _malformed(w: _Writer, rng: random.Random, ts: int, index: int) -> str:
    variant = rng.choice(MALFORMED_VARIANTS)
    message = w.message(
        "usage_charged", ts, msisdn=w.msisdn(index), service="mobile", amount=_money(rng.randint(1000, 90_000))
    )
    if variant == "invalid_json":
        text = w.dump(message)
        return text[: len(text) // 2]
    if variant == "invalid_msisdn":
        message["msisdn"] = "8" + message["msisdn"][1:]
    elif variant == "invalid_amount":
        message["amount"] = message["amount"] + "5"
    elif variant == "unknown_topic":
        message["topic"] = "mts.unknown.v1"
    elif variant == "invalid_schema":
        del message["occurred_at"]
    elif variant == "wrong_topic":
        message["topic"] = "bank.card.v1"
    return w.dump(message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workload", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2025, 1, 1))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    plan = generate(args.events, args.members, args.seed, args.out, start=args.start, months=args.months)
    took = time.perf_counter() - began
    counts = ", ".join(f"{k} {v}" for k, v in plan["counts"].items())
    print(
        f"wrote {plan['lines']} lines to {args.out} in {took:.1f}s ({counts}); "
        f"{len(plan['ticks'])} ticks in {plan_path(args.out)}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
