"""The store's own insert limit: the bench workload's stored events and inbox
rows written again with the bare recorder, no engine.

    python -m bench.recorder [--store sqlite|postgres|both] [--batch-size 500] [--repeat 3]
                             [--events N] [--members M] [--seed S]

The workload (`bench.run.workload`) is ingested once into a scratch SQLite
store, with the recorder's `insert_events` wrapped to keep what each unit of
work hands it (its stored events and inbox rows: the batches as the engine
makes them, of --batch-size messages); those are cached beside the workload
(delete the `.recorder-b*.pickle` file there after the engine changes what it
stores).
Then, on a fresh store of each kind, the same calls are made in the same
order on the application's recorder alone, and the time inside them gives
the insert rate. On a noisy machine an ingest figure is read against this
one: the ingest cannot go faster than its store takes the rows.
"""
from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.run import _settings, cache_dir, new_store, workload

Batch = tuple[list[Any], list[Any]]  # (stored events, inbox rows)


def engine_batches(path: Path, batch_size: int) -> list[Batch]:
    """What the engine hands its recorder for this workload, one item per
    transaction (captured once, then read from the cache)."""
    cached = cache_dir() / f"{path.stem}.recorder-b{batch_size}.pickle"
    if cached.exists():
        return pickle.loads(cached.read_bytes())
    print(f"capturing the engine's batches of {path.name} ...", file=sys.stderr, flush=True)
    batches = _capture(path, batch_size)
    cached.write_bytes(pickle.dumps(batches, protocol=pickle.HIGHEST_PROTOCOL))
    return batches


def _capture(path: Path, batch_size: int) -> list[Batch]:
    from accrual.intake import read_batches
    from accrual.runtime import Runtime

    os.environ["ACCRUAL_BATCH_SIZE"] = str(batch_size)
    store = new_store("sqlite")
    batches: list[Batch] = []
    try:
        with Runtime(_settings(store.url)) as runtime:
            recorder = runtime.app.recorder
            insert = recorder.insert_events

            def keeping(stored_events: Any, **kwargs: Any) -> Any:
                batches.append((list(stored_events), [tuple(row) for row in kwargs.get("inbox") or ()]))
                return insert(stored_events, **kwargs)

            recorder.insert_events = keeping
            runtime.apply(read_batches(path, batch_size, datetime.now(timezone.utc)))
    finally:
        store.drop()
    return batches


def insert_seconds(kind: str, batches: list[Batch]) -> float:
    """Seconds inside `insert_events` for all the batches, on a fresh store."""
    from accrual.storage import open_application

    store = new_store(kind)
    try:
        app = open_application(_settings(store.url))
        try:
            recorder = app.recorder
            seconds = 0.0
            for stored_events, inbox in batches:
                began = time.perf_counter()
                recorder.insert_events(stored_events, inbox=inbox)
                seconds += time.perf_counter() - began
            return seconds
        finally:
            app.close()
    finally:
        store.drop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recorder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--batch-size", type=int, default=500, help="messages per unit of work, as ACCRUAL_BATCH_SIZE")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    path, _ = workload(args.events, args.members, args.seed)
    batches = engine_batches(path, args.batch_size)
    events = sum(len(e) for e, _ in batches)
    rows = sum(len(i) for _, i in batches)
    print(f"{len(batches)} transactions of {args.batch_size} messages: {events:,} stored events, "
          f"{rows:,} inbox rows")
    for kind in ["sqlite", "postgres"] if args.store == "both" else [args.store]:
        rates = []
        for _ in range(args.repeat):
            rates.append(events / insert_seconds(kind, batches))
            print(f"  [{kind}] {rates[-1]:,.0f} events/s (with their inbox rows)", file=sys.stderr, flush=True)
        print(f"{kind}: best {max(rates):,.0f}, median {statistics.median(rates):,.0f} stored events/s "
              f"(with {rows / events:.2f} inbox rows each), {args.repeat} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
