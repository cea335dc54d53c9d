"""Where the time goes: the ingest and the replay under cProfile.

    python -m bench.profile [--events N] [--members M] [--seed S] [--store sqlite|postgres]
                            [--what ingest|replay|both] [--top 30] [--out DIR]

Ingests the benchmark workload into a fresh store under cProfile (the same
call as `accrual ingest`: `Runtime.apply(read_batches(...))`), then replays
it (`Runtime.replay()`) under a second profile; prints the top functions by
cumulative and by own time and writes `ingest.prof` / `replay.prof` to --out
(open them with `python -m pstats` or snakeviz).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.run import _settings, new_store, workload


def _print(profile: cProfile.Profile, title: str, top: int, out: Path) -> None:
    profile.dump_stats(str(out))
    for order in ("cumulative", "tottime"):
        buffer = io.StringIO()
        stats = pstats.Stats(profile, stream=buffer).strip_dirs().sort_stats(order)
        stats.print_stats(top)
        print(f"\n===== {title}: top {top} by {order} =====")
        text = buffer.getvalue()
        start = text.find("   ncalls")
        print(text[start:] if start >= 0 else text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--what", choices=("ingest", "replay", "both"), default="both")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args(argv)

    from accrual.intake import read_batches
    from accrual.runtime import Runtime

    path, plan = workload(args.events, args.members, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    store = new_store(args.store)
    try:
        with Runtime(_settings(store.url)) as runtime:
            profile = cProfile.Profile() if args.what in ("ingest", "both") else None
            began = time.perf_counter()
            if profile is not None:
                profile.enable()
            batches = read_batches(path, runtime.settings.batch_size, datetime.now(timezone.utc))
            runtime.apply(batches)
            if profile is not None:
                profile.disable()
            took = time.perf_counter() - began
            print(f"ingest of {plan['lines']} lines: {took:.1f}s"
                  + (" under cProfile" if profile else "") + f" ({plan['lines'] / took:,.0f} events/s)")
            if profile is not None:
                _print(profile, "ingest", args.top, args.out / "ingest.prof")
        if args.what in ("replay", "both"):
            with Runtime(_settings(store.url)) as runtime:
                profile = cProfile.Profile()
                began = time.perf_counter()
                profile.enable()
                count = runtime.replay()
                profile.disable()
                took = time.perf_counter() - began
                print(f"\nreplay of {count} stored events: {took:.1f}s under cProfile")
                _print(profile, "replay", args.top, args.out / "replay.prof")
    finally:
        store.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
