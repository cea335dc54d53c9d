"""The outbound publisher's own cost: how many events a second
`Publisher.read_chunk` (and its commit) maps into outbound records, without
Kafka, over a whole store from position 0.

    python -m bench.publisher --url sqlite:////tmp/pub.sqlite3 [--events 100000] [--months 18] [--repeat 3]

If the store at --url is empty, an untimed setup fills it: the seeded
workload of `bench.workload` (--events lines over events/10 members, over
--months months from 2025-01-01, so that lots opened in the first months
expire), ingested with its plan's ticks. Each repeat then drops the
publisher's tables and publishes the whole log again, chunk by chunk (the
read of the log, the mapping, and the commit of position, balances and lot
dates), which is what the leader does between sends.

With --upgraded, each repeat publishes the first half of the log untimed,
then empties `outbound_lots`, as in a store whose publisher ran a release
that kept no lot dates, and times the second half: every draw from a lot
opened in the first half that the event does not date reads the account
as it stood before the event (once per account), counted as `account reads`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

from bench.run import _segments, _settings

PUBLISHER_TABLES = ("outbound_position", "outbound_balances", "outbound_lots")


def fill(url: str, events: int, months: int, seed: int) -> None:
    from accrual.runtime import Runtime
    from bench.workload import generate, plan_path

    work = Path(tempfile.mkdtemp(prefix="accrual-publisher-"))
    generate(events=events, members=max(events // 10, 10), seed=seed, out=work / "w.jsonl", months=months)
    ticks = json.loads(plan_path(work / "w.jsonl").read_text())["ticks"]
    with Runtime(_settings(url)) as runtime:
        received_at = datetime.now(timezone.utc)
        segments = _segments(work / "w.jsonl", [t["after_line"] for t in ticks], runtime.settings.batch_size,
                             received_at)
        for index, batches in enumerate(segments):
            runtime.apply(batches)
            if index < len(ticks):
                runtime.tick(date.fromisoformat(ticks[index]["as_of"]))


def publish_all(url: str, upgraded: bool = False) -> tuple[float, int, Counter]:
    """Seconds to map the whole log (or its second half, `upgraded`),
    records made, and the points events by type."""
    from accrual.publisher import Publisher
    from accrual.runtime import Runtime
    from tests.kafka_support import names_for

    with Runtime(_settings(url)) as runtime:
        with runtime.db.transaction() as tx:
            for table in PUBLISHER_TABLES:
                tx.execute(f"DROP TABLE IF EXISTS {table}")
        names = names_for("bench.")
        publisher = Publisher(runtime.app, runtime.db, names)
        if upgraded:
            half = (runtime.app.recorder.max_notification_id() or 0) // 2
            while publisher.position() < half:
                commit = publisher.read_chunk(min(2000, half - publisher.position()))[1]
                commit()
            with runtime.db.transaction() as tx:
                tx.execute("DELETE FROM outbound_lots")
        records = 0
        types: Counter = Counter()
        seconds = 0.0
        while True:
            began = time.perf_counter()
            out, commit, _ = publisher.read_chunk()
            commit()
            seconds += time.perf_counter() - began
            if not out:
                break
            records += len(out)
            for record in out:  # (not timed)
                if record.topic == names.points_events:
                    types[json.loads(record.value)["event_type"]] += 1
        return seconds, records, types


def _count_account_reads() -> list[int]:
    from accrual import lot_dates

    count = [0]
    learn = lot_dates.LotDates._learn_from_the_account

    def counted(self, event):  # type: ignore[no-untyped-def]
        count[0] += 1
        learn(self, event)

    lot_dates.LotDates._learn_from_the_account = counted  # type: ignore[method-assign]
    return count


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.publisher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=18)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--upgraded", action="store_true")
    args = parser.parse_args()
    from accrual.runtime import Runtime

    with Runtime(_settings(args.url)) as runtime:
        empty = not runtime.app.recorder.max_notification_id()
    if empty:
        began = time.perf_counter()
        fill(args.url, args.events, args.months, args.seed)
        print(f"filled the store in {time.perf_counter() - began:.0f} s")
    rates = []
    for _ in range(args.repeat):
        reads = _count_account_reads() if args.upgraded else None
        seconds, records, types = publish_all(args.url, args.upgraded)
        if reads is not None:
            print(f"account reads: {reads[0]}")
        events = sum(types.values())
        rates.append(events / seconds)
        print(f"{events} points events ({records} records) in {seconds:.2f} s: {events / seconds:,.0f} ev/s")
    print(f"best {max(rates):,.0f} / median {statistics.median(rates):,.0f} ev/s; by type: {dict(types)}")


if __name__ == "__main__":
    main()
