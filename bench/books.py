"""The books on a large log: how long the auditors' commands take and how
much memory they hold (docs/books.md).

    python -m bench.books --events 1000000 --members 100000 --store sqlite

Builds a store from a seeded workload (bench.workload) with its plan of
ticks (the 1st, 15th and 25th of each month), then runs, each as its own
`accrual` process timed by /usr/bin/time: `report liability --json`,
`report liability --by month --json`, `report breakage --json`,
`balances --json --at-tick` (the last tick), `balance MSISDN --at-tick`,
`export history --csv` (every closed period). Prints and appends to
bench/results/books.jsonl: seconds, peak RSS, movements exported.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

from bench.workload import generate, plan_path

RESULTS = Path(__file__).parent / "results" / "books.jsonl"


def build(store_url: str, workload: Path) -> dict[str, float]:
    """Ingests the workload in the slices its plan gives, ticking between them."""
    from accrual.runtime import Runtime
    from accrual.settings import Settings

    plan = json.loads(plan_path(workload).read_text())["ticks"]
    lines = workload.read_bytes().splitlines(keepends=True)
    started = time.perf_counter()
    done = 0
    with Runtime(Settings.from_env({"ACCRUAL_DATABASE_URL": store_url})) as runtime, \
            tempfile.TemporaryDirectory() as scratch:
        for tick in plan:
            upto = tick["after_line"]
            if upto > done:
                piece = Path(scratch) / f"{done}.jsonl"
                piece.write_bytes(b"".join(lines[done:upto]))
                runtime.ingest(piece, datetime.now(timezone.utc))
                done = upto
            runtime.tick(date.fromisoformat(tick["as_of"]))
        runtime.projector.catch_up()
    return {"build_s": round(time.perf_counter() - started, 1), "ticks": len(plan)}


def timed(store_url: str, *args: str) -> tuple[float, int, str]:
    """(seconds, peak RSS in MiB, stdout) of one `accrual` process."""
    exe = Path(sys.executable).with_name("accrual")
    env = {**os.environ, "ACCRUAL_DATABASE_URL": store_url}
    with tempfile.NamedTemporaryFile("r") as rss:
        started = time.perf_counter()
        result = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, str(exe), *args],
                                env=env, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
        kib = int(rss.read().strip().splitlines()[-1])
    return round(seconds, 2), kib // 1024, result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.books", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--months", type=int, default=18, help="the span: past 12, lots start to expire")
    parser.add_argument("--store", default="sqlite", help="sqlite, or a postgresql:// URL of an empty database")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as work:
        workload = Path(work) / "w.jsonl"
        generate(args.events, args.members, args.seed, workload, months=args.months)
        url = f"sqlite:///{work}/books.sqlite3" if args.store == "sqlite" else args.store
        result: dict = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "events": args.events,
                        "members": args.members, "seed": args.seed, "months": args.months, "store": url.split(":")[0],
                        "machine": f"{platform.machine()} {os.cpu_count()} cpu", **build(url, workload)}
        periods = json.loads(timed(url, "report", "liability", "--json")[2])
        last_tick = periods[-1]["period_end"]
        anyone = next(iter(json.loads(timed(url, "balances", "--json")[2])))
        for name, args_ in (
            ("liability", ("report", "liability", "--json")),
            ("liability_by_month", ("report", "liability", "--by", "month", "--json")),
            ("breakage", ("report", "breakage", "--json")),
            ("balances_at_tick", ("balances", "--json", "--at-tick", last_tick)),
            ("balance_at_tick", ("balance", anyone, "--json", "--at-tick", last_tick)),
            ("export_csv", ("export", "history", "--csv", f"{work}/movements.csv")),
        ):
            seconds, mib, _ = timed(url, *args_)
            result[name] = {"s": seconds, "rss_mib": mib}
        with open(f"{work}/movements.csv", encoding="utf-8") as exported:
            result["movements"] = sum(1 for _ in exported) - 1
        result["closing"] = periods[-1]["closing"]
    print(json.dumps(result, ensure_ascii=False))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
