"""The daily close in bulk: how many accounts a tick settles per second when
none of them is in memory (a worker that just started, or `accrual tick`).

    python -m bench.tick [--store sqlite|postgres|both] [--members 20000] [--mgts 5000] [--repeat 1]

On a fresh store, an untimed setup enrolls --members card members on
2025-01-01, each with card spend in January 2025, and links --mgts MGTS
accounts to the first of them, each billed for January. Then three ticks,
each in a fresh process (so every account is read from the store):

- 2025-02-15: the MGTS periods (one MGTS account and its member each);
- 2025-02-25: the card months, one per member;
- 2026-02-25: expiry: every member's card lot (and the MGTS lots) expires.

Each tick is timed as `Runtime.tick` runs it, the read models' catch-up
included; the figure is accounts settled (or expired) per second, with the
share of the time spent loading accounts (`AccrualApplication.load_aggregates`).
Target: 5,000 accounts/s on both stores.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from typing import Any

from bench.run import ROOT, _peak_kib, _settings, new_store

RESULT_TAG = "TICK-RESULT "
TARGET = 5_000
TICKS = (("mgts", "2025-02-15"), ("cards", "2025-02-25"), ("expiry", "2026-02-25"))


# -- the children ---------------------------------------------------------------------


def _messages(members: int, mgts: int, seed: int) -> list[dict[str, Any]]:
    """Enrollments, then January's card spend, then MGTS links and bills."""
    from schemas import TYPE_TOPIC

    rng = random.Random(seed)
    msisdns = [f"79{n:09d}" for n in rng.sample(range(10**9), members)]
    out: list[dict[str, Any]] = []

    def add(kind: str, at: str, **fields: Any) -> None:
        out.append({"topic": TYPE_TOPIC[kind], "event_id": f"{kind}-{len(out)}", "type": kind, "occurred_at": at,
                    **fields})

    for msisdn in msisdns:
        add("member_enrolled", "2025-01-01T00:00:00+03:00", msisdn=msisdn, channel="web")
    for n, msisdn in enumerate(msisdns):
        add("card_purchase", f"2025-01-{2 + n % 27:02d}T12:00:00+03:00", msisdn=msisdn, card_id=f"card-{n}",
            amount=f"{rng.randint(300, 25_000)}.00")
    for n, msisdn in enumerate(msisdns[:mgts]):
        account = f"MGTS{n:08d}"
        add("mgts_account_linked", "2025-01-02T10:00:00+03:00", mgts_account=account, msisdn=msisdn)
        add("mgts_bill", "2025-02-03T10:00:00+03:00", mgts_account=account, period="2025-01",
            amount=f"{rng.randint(150, 2_500)}.00")
    return out


def _child_setup(spec: dict[str, Any]) -> dict[str, Any]:
    from accrual.intake import inbound_from_line
    from accrual.runtime import Runtime

    received_at = datetime.now(timezone.utc)
    lines = [json.dumps(m).encode() for m in _messages(spec["members"], spec["mgts"], spec["seed"])]
    with Runtime(_settings(spec["url"])) as runtime:
        size = runtime.settings.batch_size
        batches = ([inbound_from_line(line, received_at) for line in lines[i:i + size]]
                   for i in range(0, len(lines), size))
        began = time.perf_counter()
        report = runtime.apply(batches)
        return {"seconds": time.perf_counter() - began, "lines": len(lines), "outcomes": dict(report.outcomes)}


def _child_tick(spec: dict[str, Any]) -> dict[str, Any]:
    from accrual.runtime import Runtime

    as_of = date.fromisoformat(spec["as_of"])
    with Runtime(_settings(spec["url"])) as runtime:
        app = runtime.app
        expiring = len(runtime.agenda.members_with_expiring_lots(as_of)) if spec["name"] == "expiry" else 0
        loading = [0.0]
        load = app.load_aggregates

        def timed_load(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return load(*args, **kwargs)
            finally:
                loading[0] += time.perf_counter() - began

        app.load_aggregates = timed_load
        began = time.perf_counter()
        report = runtime.tick(as_of)
        seconds = time.perf_counter() - began
        return {
            "seconds": seconds,
            "load_seconds": loading[0],
            "accounts": expiring or report.settled,
            "settled": report.settled,
            "expired_points": report.expired_points,
            "peak_rss_kib": _peak_kib(),
        }


CHILDREN = {"setup": _child_setup, "tick": _child_tick}


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "bench.tick", "--child", json.dumps(spec)], cwd=ROOT,
                          capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise SystemExit(f"bench.tick child {spec['op']} failed ({done.returncode}):\n{done.stderr[-3000:]}")


# -- the parent -------------------------------------------------------------------------


def run_store(kind: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """One setup and the three ticks per repeat; accounts/s of each tick."""
    rates: dict[str, list[float]] = {name: [] for name, _ in TICKS}
    for n in range(args.repeat):
        store = new_store(kind)
        try:
            setup = run_child({"op": "setup", "url": store.url, "members": args.members, "mgts": args.mgts,
                               "seed": args.seed})
            print(f"[{kind}] {n + 1}/{args.repeat} setup: {setup['lines']:,} messages in {setup['seconds']:.1f}s",
                  file=sys.stderr, flush=True)
            for name, as_of in TICKS:
                r = run_child({"op": "tick", "name": name, "as_of": as_of, "url": store.url})
                rate = r["accounts"] / r["seconds"]
                rates[name].append(rate)
                print(f"  tick {as_of} ({name}): {r['accounts']:,} accounts in {r['seconds']:.2f}s = {rate:,.0f}/s; "
                      f"loading {r['load_seconds']:.2f}s ({r['load_seconds'] / r['seconds']:.0%}); "
                      f"expired {r['expired_points']:,} points; peak RSS {r['peak_rss_kib'] // 1024} MiB",
                      file=sys.stderr, flush=True)
        finally:
            store.drop()
    return rates


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        spec = json.loads(argv[1])
        sys.stdout.write(RESULT_TAG + json.dumps(CHILDREN[spec["op"]](spec)) + "\n")
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.tick", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--members", type=int, default=20_000, help="card members (each one card month)")
    parser.add_argument("--mgts", type=int, default=5_000, help="MGTS accounts, linked to the first members")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="setups, each followed by the three ticks")
    args = parser.parse_args(argv)
    rows = []
    for kind in ["sqlite", "postgres"] if args.store == "both" else [args.store]:
        for name, values in run_store(kind, args).items():
            rows.append((kind, name, max(values), statistics.median(values), len(values)))
    print(f"| store | tick | accounts/s best | median | runs | target ≥ {TARGET:,} |")
    print("|---|---|---|---|---|---|")
    for kind, name, best, median, runs in rows:
        print(f"| {kind} | {name} | {best:,.0f} | {median:,.0f} | {runs} | {'yes' if best >= TARGET else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
