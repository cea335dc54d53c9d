"""End to end through Kafka: produce → `accrual worker` → PostgreSQL (events,
inbox; offsets committed) → read models (the worker's follower process).

    python -m bench.e2e throughput --events 100000 --workers 1
    python -m bench.e2e latency --rate 2000 --seconds 30
    python -m bench.e2e profile --events 30000 --out worker.prof

Needs the services of `dev/services up` (it starts them if they are not
running) and makes a fresh database and a fresh topic prefix per run.

- throughput: the whole workload is produced first, then the workers start;
  the rate is the messages consumed between the first progress and the
  moment every balance is visible (zero lag, and the read models at the end
  of the event log). Also reported: the rate to zero lag alone, how long
  the publisher needed to catch up with the log, and the workers' own
  figures (batch time, the share of it spent in the event-table insert and
  commit).
- latency: one worker, a steady produce rate of the workload, and beside it
  a probe: every 50 ms a usage charge of 10 RUB (2 points) for a member of
  its own, whose history row is watched in the read models; produce →
  visible is measured per probe (p50, p99, max). The worker's own histogram
  (`accrual_visible_seconds`, producer timestamp → commit of the events)
  is reported too.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.kafka_support import (  # noqa: E402
    WorkerProcess, produce, read_lines, setup_topics, total_lag, worker_env,
)


def services() -> dict[str, str]:
    out = subprocess.run([str(ROOT / "dev" / "services"), "up"], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def fresh_database(admin_url: str) -> str:
    import psycopg

    name = f"accrual_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> str:
    import urllib.request

    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def histogram(text: str, name: str) -> tuple[list[tuple[float, float]], float, float]:
    buckets = [(float("inf") if m.group(1) == "+Inf" else float(m.group(1)), float(m.group(2)))
               for m in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M)]
    total = float(re.search(rf"^{name}_sum (\S+)$", text, re.M).group(1))
    count = float(re.search(rf"^{name}_count (\S+)$", text, re.M).group(1))
    return buckets, total, count


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    count = buckets[-1][1]
    rank = q * count
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / max(cumulative - lower_count, 1e-9)
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, cumulative
    return lower_bound


def machine() -> str:
    cores = os.cpu_count()
    return f"{platform.node()} ({cores} cores, Python {platform.python_version()})"


def setup(events: int, seed: int):
    """Services up, a fresh database and topic prefix, a workload file."""
    from bench.workload import generate

    env_services = services()
    bootstrap = env_services["KAFKA_BOOTSTRAP_SERVERS"]
    url = fresh_database(env_services["ACCRUAL_DATABASE_URL"])
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    names = setup_topics(bootstrap, prefix)
    work = Path(tempfile.mkdtemp(prefix="accrual-e2e-"))
    generate(events=events, members=max(events // 10, 10), seed=seed, out=work / "w.jsonl")
    return bootstrap, url, prefix, names, work


def throughput(args: argparse.Namespace) -> dict:
    bootstrap, url, prefix, names, work = setup(args.events, args.seed)
    started = time.perf_counter()
    lines = produce(bootstrap, prefix, read_lines(work / "w.jsonl"))
    produce_seconds = time.perf_counter() - started
    ports = [free_port() for _ in range(args.workers)]
    workers = [
        WorkerProcess(worker_env(url, bootstrap, prefix, ACCRUAL_METRICS_PORT=str(port)), work / f"w{i}.log").start()
        for i, port in enumerate(ports)
    ]
    try:
        total = len(lines)
        first = None
        samples = []
        while True:
            lag, _ = total_lag(bootstrap, names)
            now = time.perf_counter()
            if first is None and lag < total:
                first = (now, lag)
            samples.append((now, lag))
            if lag == 0:
                break
            for w in workers:
                w.check_alive()
            time.sleep(0.25)
        zero_lag = time.perf_counter()
        log_end = _log_end(url)
        while _read_models_at(url) < log_end:
            time.sleep(0.05)
        end = time.perf_counter()
        consumed = first[1]
        seconds = end - first[0]
        while _published(url) < log_end:
            time.sleep(0.25)
        publisher_done = time.perf_counter() - end
        texts = [scrape(p) for p in ports]
    finally:
        for w in workers:
            w.kill()
    batch = [histogram(t, "accrual_batch_seconds") for t in texts]
    store = [histogram(t, "accrual_store_commit_seconds") for t in texts]
    batch_time = sum(b[1] for b in batch)
    store_time = sum(s[1] for s in store)
    return {
        "bench": "e2e-throughput", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
        "workers": args.workers, "messages": total, "consumed_in_window": consumed,
        "seconds": round(seconds, 2), "messages_per_second": round(consumed / seconds),
        "messages_per_second_to_zero_lag": round(consumed / (zero_lag - first[0])),
        "read_models_behind_zero_lag_seconds": round(end - zero_lag, 2),
        "produce_messages_per_second": round(total / produce_seconds),
        "log_position": log_end, "publisher_lag_seconds_after_zero_lag": round(publisher_done, 2),
        "batches": int(sum(b[2] for b in batch)),
        "batch_seconds_total": round(batch_time, 2),
        "insert_commit_seconds_total": round(store_time, 2),
        "insert_commit_share_of_batch_time": round(store_time / batch_time, 3) if batch_time else None,
    }


PROBE = "79990009999"


def latency(args: argparse.Namespace) -> dict:
    import threading

    bootstrap, url, prefix, names, work = setup(args.rate * args.seconds, args.seed)
    lines = read_lines(work / "w.jsonl")
    port = free_port()
    produce(bootstrap, prefix, [json.dumps({
        "topic": "loyalty.members.v1", "event_id": "probe-enrolled", "type": "member_enrolled",
        "occurred_at": "2026-01-01T00:00:00+03:00", "msisdn": PROBE, "channel": "web"}).encode()])
    worker = WorkerProcess(worker_env(url, bootstrap, prefix, ACCRUAL_METRICS_PORT=str(port)), work / "w.log").start()
    sent_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    watching = threading.Event()
    watching.set()
    watcher = threading.Thread(target=_watch, args=(url, seen_at, watching), daemon=True)
    try:
        time.sleep(8)  # joined the group
        watcher.start()
        sent = asyncio.run(_paced(bootstrap, prefix, lines, args.rate, sent_at))
        deadline = time.monotonic() + 300
        while total_lag(bootstrap, names)[0] and time.monotonic() < deadline:
            time.sleep(0.25)
        while len(seen_at) < len(sent_at) and time.monotonic() < deadline:
            time.sleep(0.1)
        watching.clear()
        text = scrape(port)
    finally:
        worker.kill()
    visible = sorted(seen_at[k] - sent_at[k] for k in sent_at if k in seen_at)
    buckets, total, count = histogram(text, "accrual_visible_seconds")
    _, batch_seconds, batches = histogram(text, "accrual_batch_seconds")
    _, batch_messages, _ = histogram(text, "accrual_batch_messages")
    _, store_seconds, _ = histogram(text, "accrual_store_commit_seconds")
    return {
        "bench": "e2e-latency", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
        "rate_asked": args.rate, "rate_sent": round(sent[0] / sent[1]), "messages": int(count),
        "probes": len(sent_at), "probes_seen": len(visible),
        "visible_p50_ms": round(_at(visible, 0.5) * 1000), "visible_p99_ms": round(_at(visible, 0.99) * 1000),
        "visible_max_ms": round(visible[-1] * 1000) if visible else None,
        "commit_p50_ms": round(quantile(buckets, 0.5) * 1000), "commit_p99_ms": round(quantile(buckets, 0.99) * 1000),
        "batches": int(batches), "mean_batch_messages": round(batch_messages / batches) if batches else None,
        "mean_batch_ms": round(batch_seconds / batches * 1000, 1) if batches else None,
        "mean_insert_commit_ms": round(store_seconds / batches * 1000, 1) if batches else None,
    }


def _at(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _watch(url: str, seen_at: dict[str, float], watching) -> None:
    """Polls the probe member's history in the read models (every 10 ms)."""
    import psycopg

    version = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while watching.is_set():
            rows = conn.execute(
                "SELECT version, source_event_id FROM rm_history WHERE msisdn = %s AND version > %s",
                (PROBE, version),
            ).fetchall()
            now = time.perf_counter()
            for row_version, source in rows:
                version = max(version, row_version)
                if source and source not in seen_at:
                    seen_at[source] = now
            time.sleep(0.01)


async def _paced(bootstrap: str, prefix: str, lines: list[bytes], rate: int,
                 sent_at: dict[str, float]) -> tuple[int, float]:
    from aiokafka import AIOKafkaProducer

    from tests.kafka_support import routable

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    started = time.perf_counter()
    sent = 0
    probing = True

    async def probe() -> None:
        number = 0
        while probing:
            number += 1
            key = f"probe-{number}"
            value = json.dumps({"event_id": key, "type": "usage_charged", "occurred_at": "2026-11-02T12:00:00+03:00",
                                "msisdn": PROBE, "service": "mobile", "amount": "10.00"}).encode()
            sent_at[key] = time.perf_counter()
            await producer.send(prefix + "mts.usage.v1", value, key=PROBE.encode())
            await asyncio.sleep(0.05)

    prober = asyncio.create_task(probe())
    try:
        for raw in lines:
            route = routable(raw)
            if route is None:
                continue
            due = started + sent / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(prefix + route[0], raw, key=route[1])
            sent += 1
        probing = False
        await prober
        await producer.flush()
    finally:
        await producer.stop()
    return sent, time.perf_counter() - started


def profile(args: argparse.Namespace) -> dict:
    """One worker under cProfile over a pre-produced workload; stopped with
    SIGTERM at zero lag (a clean stop writes the profile)."""
    import pstats
    import signal as signals

    bootstrap, url, prefix, names, work = setup(args.events, args.seed)
    produce(bootstrap, prefix, read_lines(work / "w.jsonl"))
    out = Path(args.out).resolve()
    env = worker_env(url, bootstrap, prefix)
    log = open(work / "w.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "accrual.cli", "worker"],
                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    started = time.perf_counter()
    while total_lag(bootstrap, names)[0]:
        if proc.poll() is not None:
            raise SystemExit(f"the worker exited with {proc.returncode}; see {work / 'w.log'}")
        time.sleep(0.5)
    seconds = time.perf_counter() - started
    proc.send_signal(signals.SIGTERM)
    proc.wait(120)
    stats = pstats.Stats(str(out))
    stats.sort_stats("cumulative").print_stats(40)
    return {"bench": "e2e-profile", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "messages": args.events, "seconds_to_zero_lag_under_cprofile": round(seconds, 1), "profile": str(out)}


def _log_end(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT COALESCE(MAX(notification_id), 0) FROM accrual_events").fetchone()[0]


def _read_models_at(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT position FROM rm_tracking WHERE name = 'read_models'").fetchone()[0]


def _published(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT position FROM outbound_position WHERE name = 'kafka'").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--events", type=int, default=100_000)
    t.add_argument("--workers", type=int, default=1)
    t.add_argument("--seed", type=int, default=1)
    lat = sub.add_parser("latency")
    lat.add_argument("--rate", type=int, default=2000)
    lat.add_argument("--seconds", type=int, default=30)
    lat.add_argument("--seed", type=int, default=1)
    prof = sub.add_parser("profile")
    prof.add_argument("--events", type=int, default=30_000)
    prof.add_argument("--seed", type=int, default=1)
    prof.add_argument("--out", default="worker.prof")
    args = parser.parse_args()
    result = {"throughput": throughput, "latency": latency, "profile": profile}[args.bench](args)
    print(json.dumps(result, indent=2))
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    with open(results / "e2e.jsonl", "a") as handle:
        handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
