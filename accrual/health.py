"""The worker's HTTP endpoint (ACCRUAL_METRICS_PORT): `/metrics` for
Prometheus, and for orchestrators `/healthz` (the process is alive: its
loop turns) and `/readyz` (it is doing its job: the store answers, the
broker answers, it holds partitions, it is not stopping).

An orchestrator restarts a process whose `/healthz` fails (a liveness
probe, a systemd watchdog) and stops routing work or alerts while `/readyz`
fails; a worker in a store outage is not ready but alive, and rides the
outage out by itself (accrual/outage.py). Both answer JSON, 200 or 503.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

LOOP_STALE_S = 30.0  # a loop that has not turned for this long is stuck


@dataclass
class Health:
    """What the endpoint answers from. Written by the worker's loop and its
    consumer (one process, one event loop), read by the server's threads."""

    clock: Callable[[], float] = time.monotonic
    loop_at: float = field(default=0.0)
    started: bool = False
    stopping: bool = False
    store_ok: bool = True
    broker_ok: bool = False
    partitions: int = 0

    def turned(self) -> None:
        self.loop_at = self.clock()

    def live(self) -> tuple[bool, dict[str, Any]]:
        since = self.clock() - self.loop_at
        ok = self.started and since < LOOP_STALE_S
        return ok, {"loop_turned_s_ago": round(since, 1) if self.started else None}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        live, checks = self.live()
        checks.update({"store": self.store_ok, "broker": self.broker_ok, "partitions": self.partitions,
                       "stopping": self.stopping})
        return live and self.store_ok and self.broker_ok and self.partitions > 0 and not self.stopping, checks


class StoreProbe:
    """`SELECT 1` on a connection and a thread of its own. Not the batch's:
    while the store is down, the batch's thread waits in the event store's
    pool for a connection (up to its connect timeout) and would hold a probe
    queued behind it, so a restart shorter than that wait went unseen. A
    probe that does not answer within the caller's timeout counts as a
    failure; while its thread is still stuck, the next probe fails too."""

    def __init__(self, database_url: Any):
        self.database_url = database_url
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="store-probe")
        self._database: Any = None

    def check(self) -> None:
        """Raises if the store does not answer (run in `self.thread`)."""
        from projections.db import Database

        if self._database is None:
            self._database = Database(self.database_url, read_only=True)
        self._database.query("SELECT 1")

    def close(self) -> None:
        def close_database() -> None:
            if self._database is not None:
                self._database.close()

        self.thread.submit(close_database)
        self.thread.shutdown(wait=False)


def serve(port: int, host: str, health: Health, registry: Any) -> ThreadingHTTPServer:
    """Starts the endpoint in a daemon thread; returns its server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, checks = health.live() if path == "/healthz" else health.ready()
                body = json.dumps({"status": "ok" if ok else "unavailable", "checks": checks}).encode()
                self._answer(200 if ok else 503, body, "application/json")
            else:
                self._answer(404, b"not found\n", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
            pass  # probes every few seconds would flood the log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="accrual-http", daemon=True).start()
    return server
