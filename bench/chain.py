"""How long `accrual verify` takes over a large log, and what of it is
reading, what hashing (projections/chain.py).

    python -m bench.workload --events 1000000 --members 100000 --out w.jsonl
    ACCRUAL_DATABASE_URL=... accrual ingest w.jsonl
    ACCRUAL_DATABASE_URL=... python -m bench.chain [--repeat 3]

On the store that `ACCRUAL_DATABASE_URL` names (its read models followed to
the end, so the checkpoints cover the log), three passes over the stored
events, each `--repeat` times, in this process:

- read: the stored events a page at a time, nothing else;
- chain: read and hash, as the projector's chain does when it follows the
  log (its cost beside the read models' writes);
- verify: `Runtime.verify()`, as `accrual verify` runs it (read, hash, and
  compare with the checkpoints in one snapshot).

Prints one JSON line: the events and the best seconds and events/s of each.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

from accrual.runtime import Runtime
from accrual.settings import Settings
from projections import chain


def _timed(run: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with Runtime(Settings.from_env()) as runtime:
        db, table = runtime.db, runtime.app.recorder.events_table_name

        def rows() -> Any:
            return chain.stored_rows(db.query, db.is_postgres, table, 0)

        def read() -> None:
            for _ in rows():
                pass

        def hash_all() -> None:
            head = chain.GENESIS
            for row in rows():
                head = chain.link(head, *row)

        verdict = runtime.verify()
        assert verdict.ok and verdict.chained == verdict.position, verdict.as_json()
        seconds = {"read": _timed(read, args.repeat), "chain": _timed(hash_all, args.repeat),
                   "verify": _timed(runtime.verify, args.repeat)}
        store = "postgresql" if db.is_postgres else "sqlite"
    result = {"store": store, "events": verdict.events, **{
        name: {"seconds": round(s, 2), "events_per_s": round(verdict.events / s)} for name, s in seconds.items()
    }}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
