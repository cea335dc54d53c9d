"""What the worker's /healthz and /readyz answer (accrual/health.py), from
the state its loop and consumer keep; and the endpoint over HTTP."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from accrual.health import LOOP_STALE_S, Health, serve
from accrual.metrics import REGISTRY


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def working(clock: Clock) -> Health:
    health = Health(clock=clock, started=True, broker_ok=True, partitions=6)
    health.turned()
    return health


def test_a_worker_that_has_not_started_is_neither_alive_nor_ready():
    health = Health(clock=Clock())
    assert not health.live()[0] and not health.ready()[0]


def test_a_working_worker_is_alive_and_ready():
    health = working(Clock())
    assert health.live()[0]
    ready, checks = health.ready()
    assert ready and checks["partitions"] == 6


def test_a_store_outage_makes_the_worker_not_ready_but_still_alive():
    # an orchestrator must not restart a worker that rides an outage out
    health = working(Clock())
    health.store_ok = False
    assert health.live()[0]
    ready, checks = health.ready()
    assert not ready and checks["store"] is False


def test_no_broker_no_partitions_or_stopping_is_not_ready():
    for change in ({"broker_ok": False}, {"partitions": 0}, {"stopping": True}):
        health = working(Clock())
        for name, value in change.items():
            setattr(health, name, value)
        assert not health.ready()[0], change


def test_a_loop_that_stopped_turning_is_not_alive():
    clock = Clock()
    health = working(clock)
    clock.now += LOOP_STALE_S
    assert not health.live()[0] and not health.ready()[0]


def test_the_endpoint_answers_json_with_200_or_503_and_serves_the_metrics():
    clock = Clock()
    health = working(clock)
    server = serve(0, "127.0.0.1", health, REGISTRY)
    port = server.server_address[1]
    try:
        def get(path):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                    return answer.status, answer.read().decode()
            except urllib.error.HTTPError as error:
                return error.code, error.read().decode()

        assert get("/readyz")[0] == 200
        health.store_ok = False
        status, body = get("/readyz")
        assert status == 503 and json.loads(body)["checks"]["store"] is False
        assert get("/healthz")[0] == 200
        status, body = get("/metrics")
        assert status == 200 and "accrual_messages_total" in body
        assert get("/other")[0] == 404
    finally:
        server.shutdown()
