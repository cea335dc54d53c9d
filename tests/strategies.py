"""Hypothesis strategies and message builders for the property tests.

Messages are the inbound JSON objects of EVENTS.md (with the extra `topic`
field of the JSON Lines edge); they are turned into bytes only when sent, so
that a test can keep, resend, reformat or corrupt them."""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from engine.calendar import MOSCOW, shift_month
from tests.programme import TOPICS

MEMBERS = ("79990000001", "79990000002", "79990000003")
#: an msisdn that an MGTS account may be linked to but that never enrolls
OUTSIDER = "79990000099"
MGTS_ACCOUNTS = ("mgts-1", "mgts-2")
CARDS = ("card-1", "card-2")
SERVICES = ("mobile", "mobile_internet", "home_internet", "tv")
CATEGORIES = ("mts_branded", "other", "excluded")
CHANNELS = ("web", "sms", "shop", "auto")

members = st.sampled_from(MEMBERS)
services = st.sampled_from(SERVICES)
channels = st.sampled_from(CHANNELS)
cards = st.sampled_from(CARDS)
mgts_accounts = st.sampled_from(MGTS_ACCOUNTS)
link_targets = st.sampled_from(MEMBERS + (OUTSIDER,))


def rubles(kopecks: int) -> str:
    """12345 -> "123.45" (a contract money string, two decimals)."""
    assert kopecks > 0
    return f"{kopecks // 100}.{kopecks % 100:02d}"


def kopecks_of(amount: str) -> int:
    whole, _, cents = amount.partition(".")
    return int(whole) * 100 + int((cents + "00")[:2])


def money(low: str = "0.01", high: str = "999.99") -> st.SearchStrategy[str]:
    return st.integers(kopecks_of(low), kopecks_of(high)).map(rubles)


usage_amounts = money("0.01", "999.99")
shop_amounts = money("0.01", "999.99")
mgts_amounts = money("0.01", "999.99")
# Card spend reaches the 10 000 and 30 000 tiers of rule 5 now and then.
card_amounts = st.one_of(money("0.01", "999.99"), money("1000.00", "16000.00"))
partner_points = st.integers(1, 500)

#: minute of the Moscow day, with the midnight boundary favoured
minutes_of_day = st.one_of(st.just(0), st.just(1439), st.integers(0, 1439))


def timestamp(day: date, minute: int = 720, utc: bool = False) -> str:
    """An RFC 3339 timestamp for `day` at `minute` Moscow time, written with
    the Moscow offset or (same moment) in UTC."""
    local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=MOSCOW)
    if utc:
        return local.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    return local.strftime("%Y-%m-%dT%H:%M:%S+03:00")


def month_of_day(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def reformatted(message: dict[str, Any]) -> bytes:
    """The same content in other bytes: other key order and spacing and an
    unknown extra field (EVENTS.md: unknown extra fields are ignored)."""
    body = dict(reversed(list(message.items())))
    body["x_resent_by"] = "property-test"
    return json.dumps(body, indent=1, ensure_ascii=False).encode()


def conflicting(message: dict[str, Any]) -> dict[str, Any]:
    """Same event_id and topic, other content."""
    changed = json.loads(json.dumps(message))
    if "amount" in changed:
        changed["amount"] = rubles(kopecks_of(changed["amount"]) + 100)
    elif "partner_points" in changed:
        changed["partner_points"] += 1
    elif "lines" in changed:
        line = changed["lines"][0]
        line["amount"] = rubles(kopecks_of(line["amount"]) + 1)
    else:
        moment = datetime.fromisoformat(changed["occurred_at"]) + timedelta(minutes=1)
        changed["occurred_at"] = moment.isoformat()
    return changed


MALFORMED_KINDS = (
    "not_json",
    "bad_amount",
    "zero_amount",
    "number_amount",
    "bad_msisdn",
    "missing_occurred_at",
    "unknown_type",
    "duplicate_line_id",
)


class Messages:
    """Builds inbound messages with unique event ids."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._receipts = itertools.count(1)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def make(self, type_: str, at: str, **fields: Any) -> dict[str, Any]:
        return {
            "topic": TOPICS[type_],
            "event_id": self.next_id(type_),
            "type": type_,
            "occurred_at": at,
            **fields,
        }

    def new_receipt_id(self) -> str:
        return f"R{next(self._receipts)}"

    def malformed(self, kind: str, at: str) -> bytes:
        n = next(self._ids)
        usage = {
            "topic": TOPICS["usage_charged"],
            "event_id": f"bad-{n}",
            "type": "usage_charged",
            "occurred_at": at,
            "msisdn": MEMBERS[0],
            "service": "mobile",
            "amount": "10.00",
        }
        if kind == "not_json":
            return f'{{"topic": "mts.usage.v1", "event_id": "bad-{n}", "amount": '.encode()
        if kind == "bad_amount":
            usage["amount"] = "1.234"
        elif kind == "zero_amount":
            usage["amount"] = "0.00"
        elif kind == "number_amount":
            usage["amount"] = 12.5
        elif kind == "bad_msisdn":
            usage["msisdn"] = "8" + MEMBERS[0][1:]
        elif kind == "missing_occurred_at":
            del usage["occurred_at"]
        elif kind == "unknown_type":
            usage["type"] = "usage_refunded"
        elif kind == "duplicate_line_id":
            usage = {
                "topic": TOPICS["shop_purchase"],
                "event_id": f"bad-{n}",
                "type": "shop_purchase",
                "occurred_at": at,
                "msisdn": MEMBERS[0],
                "store_id": "S1",
                "receipt_id": f"RBAD{n}",
                "lines": [
                    {"line_id": "L1", "category": "other", "amount": "30.00"},
                    {"line_id": "L1", "category": "other", "amount": "30.00"},
                ],
            }
        else:
            raise AssertionError(kind)
        return encode(usage)


# -- a whole non-tick scenario (property 3) ---------------------------------------


@dataclass(frozen=True)
class Line:
    """One line to send: the bytes, and whether it is a `member_enrolled`."""

    raw: bytes
    enrollment: bool

    def __repr__(self) -> str:  # readable falsifying examples
        return f"Line({self.raw.decode(errors='replace')!r})"


YEAR_START = date(2026, 1, 1)
YEAR_DAYS = 365


@st.composite
def days_of_2026(draw: st.DrawFn) -> date:
    return YEAR_START + timedelta(days=draw(st.integers(0, YEAR_DAYS - 1)))


@st.composite
def moments_of_2026(draw: st.DrawFn) -> str:
    return timestamp(draw(days_of_2026()), draw(minutes_of_day), draw(st.booleans()))


SCENARIO_KINDS = (
    "enroll",
    "usage",
    "card_purchase",
    "card_refund",
    "shop_purchase",
    "shop_return",
    "link",
    "bill",
    "ballyplus",
    "duplicate",
    "conflict",
    "malformed",
)


@st.composite
def scenarios(draw: st.DrawFn, max_messages: int = 30) -> list[Line]:
    """A list of inbound lines (no ticks) for the members of 2026: spends of
    every kind, enrollments (some members twice, some never), returns within
    and beyond what is left and for unknown receipts, duplicates, conflicting
    duplicates and malformed lines. Receipt ids are unique per purchase."""
    m = Messages()
    lines: list[Line] = []
    sent: list[dict[str, Any]] = []  # valid messages, for duplicates and conflicts
    receipts: list[tuple[str, str, dict[str, tuple[str, int]]]] = []  # (receipt, msisdn, lines)
    count = draw(st.integers(1, max_messages))
    for _ in range(count):
        kind = draw(st.sampled_from(SCENARIO_KINDS))
        at = draw(moments_of_2026())
        msisdn = draw(members)
        if kind == "duplicate":
            if lines:
                lines.append(draw(st.sampled_from(lines)))
            continue
        if kind == "malformed":
            lines.append(Line(m.malformed(draw(st.sampled_from(MALFORMED_KINDS)), at), False))
            continue
        if kind == "conflict":
            message = conflicting(draw(st.sampled_from(sent))) if sent else None
        else:
            message = _valid_message(draw, m, kind, at, msisdn, receipts)
        if message is None:
            continue
        sent.append(message)
        lines.append(Line(encode(message), message["type"] == "member_enrolled"))
    return lines


def _valid_message(
    draw: st.DrawFn, m: Messages, kind: str, at: str, msisdn: str,
    receipts: list[tuple[str, str, dict[str, tuple[str, int]]]],
) -> dict[str, Any]:
    """A new valid message of `kind` (not a duplicate, a conflict or a
    malformed line) for `scenarios`; a purchase adds its receipt to `receipts`."""
    if kind == "enroll":
        return m.make("member_enrolled", at, msisdn=msisdn, channel=draw(channels))
    if kind == "usage":
        return m.make("usage_charged", at, msisdn=msisdn, service=draw(services), amount=draw(usage_amounts))
    if kind in ("card_purchase", "card_refund"):
        return m.make(kind, at, msisdn=msisdn, card_id=draw(cards), amount=draw(card_amounts))
    if kind == "shop_purchase":
        receipt = m.new_receipt_id()
        body = [
            {"line_id": f"L{i}", "category": draw(st.sampled_from(CATEGORIES)), "amount": draw(shop_amounts)}
            for i in range(1, draw(st.integers(1, 3)) + 1)
        ]
        receipts.append((receipt, msisdn, {b["line_id"]: (b["category"], kopecks_of(b["amount"])) for b in body}))
        return m.make("shop_purchase", at, msisdn=msisdn, store_id="S1", receipt_id=receipt, lines=body)
    if kind == "shop_return":
        return m.make("shop_return", at, msisdn=msisdn, store_id="S1", **draw(return_body(receipts)))
    if kind == "link":
        return m.make("mgts_account_linked", at, mgts_account=draw(mgts_accounts), msisdn=draw(link_targets))
    if kind == "bill":
        period = f"2026-{draw(st.integers(1, 12)):02d}"
        return m.make("mgts_bill", at, mgts_account=draw(mgts_accounts), period=period, amount=draw(mgts_amounts))
    if kind == "ballyplus":
        return m.make("ballyplus_transfer", at, msisdn=msisdn, partner_points=draw(partner_points))
    raise AssertionError(f"unknown scenario kind {kind}")


@st.composite
def return_body(draw: st.DrawFn, receipts: list[tuple[str, str, dict[str, tuple[str, int]]]]) -> dict[str, Any]:
    """A return for a known receipt (within what the line holds, or beyond,
    or for a line that is not on it) or for an unknown receipt."""
    if not receipts or draw(st.integers(0, 5)) == 0:
        return {"receipt_id": f"R-unknown-{draw(st.integers(1, 3))}", "lines": [{"line_id": "L1", "amount": "1.00"}]}
    receipt, _owner, bought = draw(st.sampled_from(receipts))
    chosen = draw(st.lists(st.sampled_from(sorted(bought)), min_size=1, max_size=len(bought), unique=True))
    body = []
    for line_id in chosen:
        held = bought[line_id][1]
        mode = draw(st.sampled_from(("part", "all", "beyond")))
        if mode == "part":
            kopecks = draw(st.integers(1, held))
        elif mode == "all":
            kopecks = held
        else:
            kopecks = held + draw(st.integers(1, 10_000))
        body.append({"line_id": line_id, "amount": rubles(kopecks)})
    if draw(st.integers(0, 9)) == 0:
        body.append({"line_id": "L9", "amount": "1.00"})  # not on the receipt
    return {"receipt_id": receipt, "lines": body}


@st.composite
def tick_dates(draw: st.DrawFn) -> list[date]:
    """Increasing tick dates through 2026 and 2027 (the 15th and 25th
    favoured), always ending past every expiry of a 2026 scenario."""
    day = st.one_of(st.just(15), st.just(25), st.integers(1, 28))
    months = st.integers(0, 23).map(lambda i: shift_month("2026-02", i))
    picked = draw(
        st.lists(st.builds(lambda mo, d: date(int(mo[:4]), int(mo[5:]), d), months, day), min_size=0, max_size=6)
    )
    return sorted(set(picked)) + [date(2028, 2, 1)]


__all__ = [
    "CARDS",
    "MALFORMED_KINDS",
    "MEMBERS",
    "MGTS_ACCOUNTS",
    "OUTSIDER",
    "Line",
    "Messages",
    "card_amounts",
    "conflicting",
    "encode",
    "money",
    "month_of_day",
    "reformatted",
    "scenarios",
    "tick_dates",
    "timestamp",
]
