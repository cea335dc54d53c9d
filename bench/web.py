"""The personal account under load: `accrual serve` on a fresh store and a
bounded load generator on 127.0.0.1 (issue 11's figures).

    python -m bench.web [--store sqlite|postgres|both] [--scenario me,history,orders,me-during-ingest]
                        [--concurrency 10] [--seconds 20] [--workers 1] [--members 8]
                        [--history-lines 42] [--no-record]

What it does, per store:
1. a fresh store with `--members` enrolled members, each with 1,000,000
   points from Баллы Плюс and 40 usage charges (a history of 42 lines), by
   `accrual ingest`; `--history-lines N` (more than 42) adds Баллы Плюс
   transfers of one point, spread over 2026 with the offsets producers use
   (+03:00, Z, +05:00), until each member has N lines (a member of years);
2. `accrual serve --workers W` on a free port, and an API session per
   member (the SMS code flow: POST /api/v1/auth/otp/request, the code from
   the outbox, POST /api/v1/auth/otp/verify);
3. each scenario: `--concurrency` keep-alive HTTP/1.1 connections, each
   sending its next request when the last answer arrived, for `--seconds`
   after a 2 s warm-up (a connection is replaced after 100 requests),
   requests spread over the members' sessions:
   - me: GET /api/v1/me
   - history: GET /api/v1/me/history (the first page, 20 lines)
   - orders: POST /api/v1/orders, a gift of 100 points, a new idempotency
     key each time
   - me-during-ingest: GET /api/v1/me while `accrual ingest` of the bench
     workload (100,000 lines, bench/workload.py) writes into the same store;
     measured while the ingest runs.
The load client is one Python process on the same two cores as the server
(and the ingest): a raw asyncio client (about 40 µs of CPU a request), so
that it takes as little from the server as a client in Python can. Reported:
requests/s, latency p50/p90/p99/max, the answers' status codes, and the
server's CPU time per request (its processes' user+system time from /proc).
Each run is appended to bench/results/web.jsonl (`--no-record`: print only).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import cache_dir, machine, new_store, workload  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "web.jsonl"
SCENARIOS = ("me", "history", "orders", "me-during-ingest")
WARM_UP_S = 2.0
REQUESTS_PER_CONNECTION = 100
BASE_HISTORY_LINES = 42  # of each member: enrolled, the Баллы Плюс transfer, 40 usage accruals
TARGETS = {"me": (1000, 50), "history": (1000, 50), "orders": (300, None), "me-during-ingest": (None, 100)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accrual(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "accrual.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"accrual {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def members_feed(path: Path, members: int, history_lines: int = BASE_HISTORY_LINES) -> list[str]:
    """Enrolled members with a long history and points enough for any run."""
    numbers = [f"7916{n:07d}" for n in range(1, members + 1)]
    lines = []
    for i, msisdn in enumerate(numbers):
        lines.append({"topic": "loyalty.members.v1", "event_id": f"bench-enr-{i}", "type": "member_enrolled",
                      "occurred_at": "2026-01-01T10:00:00+03:00", "msisdn": msisdn, "channel": "shop"})
        lines.append({"topic": "partner.ballyplus.v1", "event_id": f"bench-bp-{i}", "type": "ballyplus_transfer",
                      "occurred_at": "2026-11-01T10:00:00+03:00", "msisdn": msisdn, "partner_points": 1_000_000})
        for k in range(40):
            lines.append({"topic": "mts.usage.v1", "event_id": f"bench-use-{i}-{k}", "type": "usage_charged",
                          "occurred_at": f"2026-{1 + k % 10:02d}-{1 + k // 10:02d}T12:00:00+03:00",
                          "msisdn": msisdn, "service": "mobile", "amount": "100.00"})
        lines.extend(long_history(i, msisdn, history_lines - BASE_HISTORY_LINES))
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return numbers


def long_history(i: int, msisdn: str, count: int) -> list[dict]:
    """`count` Баллы Плюс transfers of one point each (a history line each),
    spread evenly from 2 January to 31 October 2026, each written with one
    of three offsets."""
    start = datetime(2026, 1, 2, tzinfo=timezone.utc)
    step = timedelta(days=302) / max(1, count)
    offsets = [timezone(timedelta(hours=3)), timezone.utc, timezone(timedelta(hours=5))]
    return [
        {"topic": "partner.ballyplus.v1", "event_id": f"bench-long-{i}-{k}", "type": "ballyplus_transfer",
         "occurred_at": (start + step * k).astimezone(offsets[k % 3]).isoformat(),
         "msisdn": msisdn, "partner_points": 1}
        for k in range(max(0, count))
    ]


class Server:
    """`accrual serve` in a process of its own (and its workers)."""

    def __init__(self, env: dict[str, str], workers: int):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "accrual.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   "--workers", str(workers)]
        self.proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)

    def wait_ready(self, timeout: float = 60) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"accrual serve ended: {self.proc.stderr.read()[-2000:] if self.proc.stderr else ''}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit("accrual serve did not become ready")

    def cpu_seconds(self) -> float:
        """User+system CPU of the server process and its children so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in [self.proc.pid, *_children(self.proc.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            for child in (task / "children").read_text().split():
                found.append(int(child))
                found.extend(_children(int(child)))
        except OSError:
            pass
    return found


def sign_in(base: str, env: dict[str, str], msisdns: list[str]) -> list[str]:
    """An API session per member, opened with the SMS code as a client would."""
    import httpx

    tokens = []
    for msisdn in msisdns:
        asked = httpx.post(f"{base}/api/v1/auth/otp/request", json={"msisdn": msisdn, "purpose": "login"})
        assert asked.status_code == 202, asked.text
        outbox = json.loads(accrual(env, "sms", "outbox", "--json", "--msisdn", msisdn))
        code = re.search(r"\b(\d{6})\b", outbox[0]["text"]).group(1)
        answer = httpx.post(f"{base}/api/v1/auth/otp/verify", json={"msisdn": msisdn, "code": code, "accept_terms": True})
        assert answer.status_code == 200, answer.text
        tokens.append(answer.json()["token"])
    return tokens


# -- the load client ------------------------------------------------------------------------------


def request_bytes(method: str, path: str, token: str, body: bytes = b"") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Accept: application/json\r\n")
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def read_answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if match is None:
        raise RuntimeError(f"an answer without Content-Length: {head[:200]!r}")
    await reader.readexactly(int(match.group(1)))
    return status


class Load:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.measuring = False
        self.stop = False

    async def connection(self, port: int, next_request) -> None:
        """One client: keep-alive requests, a new connection every
        `REQUESTS_PER_CONNECTION` (as browsers and apps come and go; with
        several server processes it is the kernel that spreads connections
        over them, so a few long-lived ones could all land on one)."""
        while not self.stop:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                for _ in range(REQUESTS_PER_CONNECTION):
                    if self.stop:
                        break
                    request = next_request()
                    began = time.perf_counter()
                    writer.write(request)
                    status = await read_answer(reader)
                    if self.measuring:
                        self.latencies.append(time.perf_counter() - began)
                        self.statuses[status] += 1
            finally:
                writer.close()


async def run_load(port: int, concurrency: int, seconds: float, next_request, server: Server,
                   until: asyncio.Future | None = None) -> dict:
    load = Load()
    tasks = [asyncio.create_task(load.connection(port, next_request)) for _ in range(concurrency)]
    await asyncio.sleep(WARM_UP_S)
    load.measuring = True
    cpu_before, began = server.cpu_seconds(), time.perf_counter()
    if until is not None:
        await until
    else:
        await asyncio.sleep(seconds)
    load.measuring = False
    elapsed, cpu = time.perf_counter() - began, server.cpu_seconds() - cpu_before
    load.stop = True
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = sorted(load.latencies)
    n = len(latencies)

    def pct(p: float) -> float:
        return round(latencies[min(n - 1, int(p * n))] * 1000, 1) if n else 0.0

    return {"requests": n, "seconds": round(elapsed, 2), "per_second": round(n / elapsed) if elapsed else 0,
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0) if n else 0.0,
            "statuses": dict(load.statuses), "server_cpu_ms_per_request": round(cpu * 1000 / n, 2) if n else None}


def scenario_requests(name: str, tokens: list[str]):
    counter = iter(range(10**12))
    if name in ("me", "me-during-ingest"):
        ready = [request_bytes("GET", "/api/v1/me", t) for t in tokens]
    elif name == "history":
        ready = [request_bytes("GET", "/api/v1/me/history?per_page=20", t) for t in tokens]
    else:
        ready = []
    if ready:
        return lambda: ready[next(counter) % len(ready)]
    run = time.time_ns()

    def order() -> bytes:
        n = next(counter)
        body = json.dumps({"item_id": "gudok-month", "idempotency_key": f"bench-{run}-{n}"}).encode()
        return request_bytes("POST", "/api/v1/orders", tokens[n % len(tokens)], body)

    return order


async def during_ingest(env: dict[str, str], path: Path) -> dict:
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "accrual.cli", "ingest", str(path), env=env,
                                                cwd=str(ROOT), stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the concurrent ingest failed: {err.decode()[-2000:]}")
    return {"ingest_seconds": round(time.perf_counter() - began, 1)}


async def measure(name: str, server: Server, tokens: list[str], args: argparse.Namespace, env: dict[str, str]) -> dict:
    requests = scenario_requests(name, tokens)
    if name != "me-during-ingest":
        return await run_load(server.port, args.concurrency, args.seconds, requests, server)
    path, _ = workload(100_000, 10_000, 1)
    ingest = asyncio.ensure_future(during_ingest(env, path))
    result = await run_load(server.port, args.concurrency, args.seconds, requests, server, until=ingest)
    return {**result, **ingest.result()}


def one_store(kind: str, args: argparse.Namespace) -> list[dict]:
    store = new_store(kind)
    env = {**os.environ, "ACCRUAL_DATABASE_URL": store.url}
    results = []
    server = None
    try:
        feed = Path(cache_dir()) / f"web-members-{args.members}-h{args.history_lines}.jsonl"
        msisdns = members_feed(feed, args.members, args.history_lines)
        accrual(env, "ingest", str(feed))
        server = Server(env, args.workers)
        server.wait_ready()
        tokens = sign_in(server.base, env, msisdns)
        for name in args.scenarios:
            print(f"[{kind}] {name}: {args.concurrency} connections, {args.workers} server process(es) ...", flush=True)
            figures = asyncio.run(measure(name, server, tokens, args, env))
            print("  " + ", ".join(f"{k} {v}" for k, v in figures.items()), flush=True)
            results.append({"store": kind, "scenario": name, **figures})
    finally:
        if server is not None:
            server.stop()
        store.drop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.web", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--scenario", default="me,history,orders,me-during-ingest")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=1, help="accrual serve --workers")
    parser.add_argument("--members", type=int, default=8, help="members with a session (at most 20: the SMS "
                        "limit of one client address)")
    parser.add_argument("--history-lines", type=int, default=BASE_HISTORY_LINES,
                        help=f"history lines of each member (more than {BASE_HISTORY_LINES}: a long history)")
    parser.add_argument("--note", default="")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}; known: {', '.join(SCENARIOS)}")
    if not 1 <= args.members <= 20:
        parser.error("--members is 1 to 20")
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    results = [r for kind in stores for r in one_store(kind, args)]
    print("\n| store | scenario | req/s | p50 ms | p99 ms | max ms | server CPU ms/req | statuses | target |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        rate, p99 = TARGETS[r["scenario"]]
        target = " ".join(x for x in (f"≥ {rate}/s" if rate else "", f"p99 ≤ {p99} ms" if p99 else "") if x)
        print(f"| {r['store']} | {r['scenario']} | {r['per_second']:,} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} "
              f"| {r['server_cpu_ms_per_request']} | {r['statuses']} | {target} |")
    if not args.no_record:
        entry = {"bench": "web", "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **machine(),
                 "workers": args.workers, "concurrency": args.concurrency, "note": args.note, "results": results}
        if args.history_lines != BASE_HISTORY_LINES:
            entry["history_lines"] = args.history_lines
        with RESULTS.open("a") as out:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
