"""The back-office dashboard on a large store: how long `web.dashboard.at_a_glance` takes.

    python -m bench.dashboard --events 100000 --members 10000

Builds a SQLite store from a seeded workload (bench.workload, ticks on the
1st, 15th and 25th of each month) as bench.books does, then reads the
dashboard as of the last tick on a read-only connection, as the web app
does, `--repeat` times, and prints the fastest and the median read (the
first read warms the page cache; the others are what a refresh costs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

from bench.books import build
from bench.workload import generate, plan_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--months", type=int, default=18)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)

    from accrual.settings import parse_database_url
    from projections.db import Database
    from projections.tables import Names
    from web.dashboard import at_a_glance

    with tempfile.TemporaryDirectory() as work:
        workload = Path(work) / "w.jsonl"
        generate(args.events, args.members, args.seed, workload, months=args.months)
        url = f"sqlite:///{work}/dashboard.sqlite3"
        built = build(url, workload)
        today = date.fromisoformat(json.loads(plan_path(workload).read_text())["ticks"][-1]["as_of"])
        db = Database(parse_database_url(url), read_only=True)
        first = time.perf_counter()
        board = at_a_glance(db, Names(), today)
        first_s = time.perf_counter() - first
        reads = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            at_a_glance(db, Names(), today)
            reads.append(time.perf_counter() - started)
        # What the per-day table of issued points would cost from the history instead of the books
        # (the choice web/dashboard.py makes): every accrual read, no index by date.
        started = time.perf_counter()
        db.query("SELECT rule, substr(occurred_utc, 1, 13), SUM(points) FROM rm_history "
                 "WHERE kind = 'accrued' AND occurred_utc >= ? GROUP BY 1, 2", ((today.replace(day=1)).isoformat(),))
        history_s = time.perf_counter() - started
        rows = {"members": db.query("SELECT COUNT(*) FROM rm_members")[0][0],
                "history": db.query("SELECT COUNT(*) FROM rm_history")[0][0],
                "rejections": db.query("SELECT COUNT(*) FROM rm_rejections")[0][0],
                "books": db.query("SELECT COUNT(*) FROM rm_books")[0][0]}
        db.close()
    result = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "events": args.events,
              "members": args.members, "machine": f"{platform.machine()} {os.cpu_count()} cpu", **built,
              "rows": rows, "months": len(board.liability), "first_ms": round(first_s * 1000, 1),
              "fastest_ms": round(min(reads) * 1000, 1), "median_ms": round(statistics.median(reads) * 1000, 1),
              "issued_by_day_from_history_ms": round(history_s * 1000, 1)}
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
