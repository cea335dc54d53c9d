"""The notifier's throughput on the real broker: `accrual notifier` (one
process, TICKS clock, the development outbox) handling a seeded day of
points events, then the daily run for every member.

    python -m bench.notifier --url sqlite:////tmp/notifier.sqlite3 [--bootstrap 127.0.0.1:19092]
                             [--members 5000] [--events 50000] [--seed 7]

Untimed: topics with a fresh prefix, the notifier started and its clock set
to 09:30 Moscow of the bench's day (no daily run yet). Timed:
1. `events`: the records (credits of yesterday by usage, shop, card rules,
   each a new lot, a tenth of the lots expiring within 30 days, and one
   transfer offer per 50 records, sent at once) produced and handled,
   until the group has committed past the last one;
2. `daily run`: one tick at 10:00; every member's summary of yesterday and
   reminders, until handled.
Each figure is the wall time over the count, with the messages the outbox
got; the result is appended to bench/results/notifier.jsonl.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from bench.run import _git_head
from engine.calendar import MOSCOW

DAY = date(2026, 6, 10)
RULES = ("usage", "usage", "usage", "shop", "card")


def records(members: int, events: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(key, value) in each member's account order, as the publisher writes them."""
    rng = random.Random(seed)
    msisdns = [f"7916{n:07d}" for n in range(members)]
    version = dict.fromkeys(msisdns, 1)
    balance = dict.fromkeys(msisdns, 0)
    lot_id = dict.fromkeys(msisdns, 0)
    out = []
    yesterday = DAY - timedelta(days=1)
    for n in range(events):
        msisdn = msisdns[n % members] if n < members else rng.choice(msisdns)
        version[msisdn] += 1
        occurred = datetime(yesterday.year, yesterday.month, yesterday.day, 8, tzinfo=MOSCOW) + timedelta(
            seconds=rng.randrange(12 * 3600))
        value: dict = {"msisdn": msisdn, "account_version": version[msisdn], "occurred_at": occurred.isoformat(),
                       "source_event_id": f"e-{n}", "counterpart": None, "transfer_points": None, "deadline": None}
        if n % 50 == 49:
            deadline = datetime(DAY.year, DAY.month, DAY.day, 9, 20, tzinfo=MOSCOW) + timedelta(hours=24)
            value.update(event_type="TransferOfferReceived", points=0, rule=None, reason="offered", lots=[],
                         counterpart=rng.choice(msisdns), transfer_points=rng.randrange(10, 500),
                         deadline=deadline.isoformat(), source_event_id=f"tr-{n}")
        else:
            points = rng.randrange(1, 300)
            lot_id[msisdn] += 1
            expires = DAY + timedelta(days=rng.randrange(1, 30)) if rng.random() < 0.1 else yesterday + timedelta(
                days=365)
            value.update(event_type="PointsAccrued", points=points, rule=rng.choice(RULES), reason=None,
                         lots=[{"lot_id": lot_id[msisdn], "lot_date": yesterday.isoformat(),
                                "expires_on": expires.isoformat(), "points": points, "change": "opened"}])
        balance[msisdn] += value["points"]
        value["balance_after"] = balance[msisdn]
        out.append((msisdn.encode(), json.dumps(value).encode()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the outbox's database (sqlite:////… or postgresql://…)")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--members", type=int, default=5000)
    parser.add_argument("--events", type=int, default=50000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    from tests.kafka_support import setup_topics
    from tests.notifier_kafka_support import NotifierProcess, outbox, produce_records, tick, wait_until_handled

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    names = setup_topics(args.bootstrap, prefix)
    work = Path(tempfile.mkdtemp(prefix="accrual-bench-notifier-"))
    workload = records(args.members, args.events, args.seed)
    notifier = NotifierProcess(args.url, args.bootstrap, prefix, work / "notifier.log",
                               ACCRUAL_NOTIFIER_COMMIT_EVERY="1").start()
    try:
        tick(args.bootstrap, names, datetime(DAY.year, DAY.month, DAY.day, 9, 30, tzinfo=MOSCOW))
        wait_until_handled(args.bootstrap, names, [names.notifier_ticks], timeout=300, notifiers=[notifier])
        before = len(outbox(args.url))
        if before:  # the seeded keys would be dropped as repeats: a faster, wrong figure
            raise SystemExit(f"the outbox at {args.url} already holds {before} messages (an earlier run's?): "
                             "the bench needs a fresh database")

        started = time.perf_counter()
        produce_records(args.bootstrap, names.points_events, workload)
        produced = time.perf_counter() - started
        wait_until_handled(args.bootstrap, names, [names.points_events], timeout=1800, notifiers=[notifier])
        handled = time.perf_counter() - started
        offers = len(outbox(args.url)) - before

        started = time.perf_counter()
        tick(args.bootstrap, names, datetime(DAY.year, DAY.month, DAY.day, 10, 0, tzinfo=MOSCOW))
        wait_until_handled(args.bootstrap, names, [names.notifier_ticks], timeout=1800, notifiers=[notifier])
        daily = time.perf_counter() - started
        sent = len(outbox(args.url)) - before - offers
    finally:
        notifier.terminate()
    result = {
        "bench": "notifier", "date": datetime.now(timezone.utc).date().isoformat(), "machine": _machine(),
        "commit": _git_head(),  # which code: the results of several versions share the file
        "store": args.url.split(":", 1)[0], "members": args.members, "events": args.events, "seed": args.seed,
        "events_s": round(handled, 2), "events_per_s": round(args.events / handled),
        "produce_s": round(produced, 2), "offers_sent": offers,
        "daily_run_s": round(daily, 2), "members_per_s": round(args.members / daily),
        "daily_run_messages": sent,
    }
    print(json.dumps(result, ensure_ascii=False))
    with open(Path(__file__).resolve().parent / "results" / "notifier.jsonl", "a", encoding="utf-8") as results:
        results.write(json.dumps(result, ensure_ascii=False) + "\n")


def _machine() -> str:
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{platform.machine()}, {cores} cores, Python {sys.version.split()[0]}"


if __name__ == "__main__":
    main()
