"""Fixtures of the personal account's tests: the web app over a fresh
PostgreSQL database, a clock the test moves, and helpers that sign in with
the code from the SMS outbox."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone

import httpx

import pytest
from fastapi.testclient import TestClient

from tests.conftest import settings_for
from tests.programme import Programme
from web.app import create_app
from web.clock import FixedClock
from web.sms import DatabaseOutbox

START = datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc)  # 12:00 in Moscow
ALICE, BOB, CAROL = "79160000001", "79160000002", "79160000003"
GATEWAY = ("10.20.30.40", 40000)  # the operator's network gateway in these tests


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def web_env() -> dict[str, str]:
    """Extra settings of a test (overridden by tests that need others)."""
    return {"ACCRUAL_TRUSTED_PROXIES": "10.20.30.0/24"}


@pytest.fixture
def web_app(postgres_url, clock, web_env):
    app = create_app(settings_for(postgres_url, **web_env), clock=clock)
    yield app
    app.state.context.close()


@pytest.fixture
def client(web_app) -> TestClient:
    """A client over https (so that Secure cookies come back)."""
    with TestClient(web_app, base_url="https://testserver") as c:
        yield c


@pytest.fixture
def gateway_client(web_app) -> TestClient:
    """A client whose requests come from the trusted gateway's address."""
    with TestClient(web_app, base_url="https://testserver", client=GATEWAY) as c:
        yield c


@pytest.fixture
def programme(web_app) -> Programme:
    """The streams' side: enroll members and credit them through the engine."""
    return Programme(web_app.state.context.runtime)


def last_code(app, msisdn: str) -> str:
    messages = DatabaseOutbox(app.state.context.store).messages(msisdn, limit=1)
    assert messages, f"no SMS to {msisdn}"
    return re.search(r"\b(\d{6})\b", messages[0]["text"]).group(1)


def sign_in(client: TestClient, msisdn: str) -> dict[str, str]:
    """Bearer headers of a session opened with a login code."""
    assert client.post("/api/v1/auth/otp/request", json={"msisdn": msisdn, "purpose": "login"}).status_code == 202
    code = last_code(client.app, msisdn)
    answer = client.post("/api/v1/auth/otp/verify", json={"msisdn": msisdn, "code": code, "accept_terms": True})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def member_with_points(programme: Programme, msisdn: str, points: int) -> None:
    """An enrolled member with `points` from Баллы Плюс (lot dated today)."""
    programme.enroll(msisdn, "2026-11-01 10:00", channel="shop")
    if points:
        programme.ballyplus(msisdn, points, "2026-11-20 10:00")


@contextmanager
def serving(env: dict[str, str], *args: str, timeout: float = 30):
    """`accrual serve` (with `args`, e.g. --workers 2) on a free port of
    127.0.0.1 in a process of its own; yields (its base URL, the process)
    once /readyz answers 200, and stops it afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # A session of its own, so that the server's worker processes can be
    # stopped with it (an orphaned worker would hold the stderr pipe open).
    server = subprocess.Popen([sys.executable, "-m", "accrual.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                               *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                _kill_group(server)
                _, stderr = server.communicate(timeout=10)
                pytest.fail(f"accrual serve {' '.join(args)} did not answer: {stderr[-2000:]}")
            time.sleep(0.1)
        yield base, server
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        finally:
            _kill_group(server)  # whatever of it is left


def _kill_group(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
