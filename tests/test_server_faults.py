"""The worker through the server faults an operator meets (issue 15, item 5):
PostgreSQL stopped (fast shutdown) and started again, the broker SIGKILLed
and restarted, the broker stopped for longer than a batch. Each runs on a
PostgreSQL and a Kafka of its own (dev/services with a private directory
and free ports), since stopping the shared servers would fail the tests
running beside it. Each checks that the worker stays up, that /readyz goes
not-ready during the fault and ready again after it, and that the result
equals the embedded mode on the same input, every message counted once,
the outbound topics included.

(Terminated sessions, the fault a failover is to a client, run on the
shared server: tests/test_worker_faults.py.)"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.kafka_support import (
    WorkerProcess, close_clients, produce, setup_topics, total_lag, wait_for_lag_zero, worker_env,
)
from tests.test_worker import TICK, check_outbound, cli, embedded_reference, outcome, workload
from tests.test_worker_faults import wait_until_consuming

# One pytest worker runs them all, on one private pair of servers (dev/test
# distributes with --dist loadgroup).
pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.xdist_group("private-services")]

SERVICES = Path(__file__).resolve().parent.parent / "dev" / "services"
FAULT_EVENTS = 30_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateServices:
    """dev/services with a directory and ports of its own."""

    def __init__(self, directory: Path):
        self.env = dict(os.environ)
        self.env.update({
            "ACCRUAL_SERVICES_DIR": str(directory),
            "ACCRUAL_PG_PORT": str(free_port()),
            "ACCRUAL_KAFKA_PORT": str(free_port()),
            "ACCRUAL_KAFKA_CONTROLLER_PORT": str(free_port()),
            "ACCRUAL_KAFKA_HEAP_OPTS": "-Xms128m -Xmx512m",
        })
        self.directory = directory
        self.settings: dict[str, str] = {}

    def run(self, *args: str) -> str:
        done = subprocess.run([str(SERVICES), *args], env=self.env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"dev/services {' '.join(args)}: {done.returncode}\n{done.stderr[-3000:]}"
        return done.stdout

    def up(self, service: str = "all") -> None:
        for line in self.run("up", service).splitlines():
            key, _, value = line.partition("=")
            self.settings[key] = value

    @property
    def admin_url(self) -> str:
        return self.settings["ACCRUAL_DATABASE_URL"]

    @property
    def bootstrap(self) -> str:
        return self.settings["KAFKA_BOOTSTRAP_SERVERS"]

    def kill_broker(self) -> None:
        pid = int((self.directory / "kafka" / "kafka.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


@pytest.fixture(scope="module")
def services():
    # Not pytest's tmp_path: its directories are 0700, and PostgreSQL runs
    # as the `postgres` user when the tests run as root.
    directory = Path(tempfile.mkdtemp(prefix="accrual-faults-"))
    directory.chmod(0o755)
    private = PrivateServices(directory)
    try:
        private.up()
        yield private
    finally:
        if "KAFKA_BOOTSTRAP_SERVERS" in private.settings:
            close_clients(private.bootstrap)
        private.run("down")
        shutil.rmtree(directory, ignore_errors=True)


def new_database(admin_url: str) -> str:
    import uuid

    import psycopg

    name = f"faults_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


class Readiness:
    """Polls the worker's /readyz in a thread and remembers what it saw."""

    def __init__(self, port: int):
        self.port = port
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as answer:
                    self.seen.append(answer.status)
            except urllib.error.HTTPError as error:
                self.seen.append(error.code)
            except OSError:
                pass  # not listening yet
            self._stop.wait(0.5)

    def __enter__(self) -> Readiness:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def went_down_and_up(self) -> bool:
        """Ready, then not ready (the fault), then ready again."""
        text = "".join("R" if s == 200 else "N" for s in self.seen)
        first_ready = text.find("R")
        return first_ready >= 0 and "N" in text[first_ready:] and text.endswith("R")


def wait_ready(readiness: Readiness, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (readiness.seen and readiness.seen[-1] == 200):
        assert time.monotonic() < deadline, f"/readyz never answered 200: {readiness.seen[-20:]}"
        time.sleep(0.2)


def restart_postgres(services: PrivateServices) -> None:
    services.run("down", "postgres")  # pg_ctl stop -m fast: every session ends
    time.sleep(6)  # longer than the worker's probe interval, so that /readyz must see it
    services.run("up", "postgres")


def kill_and_restart_broker(services: PrivateServices) -> None:
    services.kill_broker()
    time.sleep(3)
    services.run("up", "kafka")


def stop_broker_for_a_while(services: PrivateServices) -> None:
    services.run("down", "kafka")
    time.sleep(15)  # longer than a batch, longer than the consumer's session timeout (10 s)
    services.run("up", "kafka")


FAULTS = {
    "postgres fast shutdown and restart": restart_postgres,
    "broker SIGKILL and restart": kill_and_restart_broker,
    "broker stopped for 15 s": stop_broker_for_a_while,
}


# One seed of each fault in the default run; --soak (CI) adds two more.
CASES = [pytest.param(fault, seed, id=f"{fault}, seed {seed}", marks=[pytest.mark.slow] if seed > 1 else [])
         for fault in FAULTS for seed in (1, 2, 3)]


@pytest.mark.parametrize("fault, seed", CASES)
def test_the_worker_rides_out_a_server_fault_and_loses_nothing(fault, seed, services, tmp_path):
    # given: a backlog in the private broker and a worker applying it
    rng = random.Random(f"{fault} {seed}")
    prefix = f"f{list(FAULTS).index(fault)}s{seed}x{os.getpid()}."
    database_url = new_database(services.admin_url)
    names = setup_topics(services.bootstrap, prefix)
    lines = produce(services.bootstrap, prefix, workload(tmp_path, FAULT_EVENTS, 10 * seed + list(FAULTS).index(fault)))
    port = free_port()
    env = worker_env(database_url, services.bootstrap, prefix, ACCRUAL_METRICS_PORT=str(port))
    log = tmp_path / "worker.log"
    worker = WorkerProcess(env, log).start()
    try:
        with Readiness(port) as readiness:
            backlog = total_lag(services.bootstrap, names)[0]
            wait_until_consuming(worker, log, lambda: total_lag(services.bootstrap, names)[0] < backlog)
            wait_ready(readiness)
            # when: the fault strikes at a random moment of the backlog
            time.sleep(rng.uniform(0.2, 1.0))
            FAULTS[fault](services)
            worker.check_alive()
            # then: the worker carries on by itself and applies everything
            wait_for_lag_zero(services.bootstrap, names, timeout=600, workers=[worker])
            wait_ready(readiness)
        worker.check_alive()
        assert readiness.went_down_and_up(), f"/readyz did not go down and up: {readiness.seen}"
        cli(database_url, "tick", "--as-of", TICK)
        got = outcome(database_url)
        assert got == embedded_reference(lines, tmp_path)
        assert got["inbox"][0] == got["inbox"][1]  # every message counted once
        check_outbound(services.bootstrap, prefix, database_url)
        records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        assert not any(r.get("msg") == "worker stopped" for r in records)
    finally:
        worker.kill()


def wait_for_exit(worker: WorkerProcess, timeout: float) -> int:
    assert worker.proc is not None
    return worker.proc.wait(timeout)


@pytest.mark.parametrize("server", ["postgres", "kafka"])
def test_an_outage_longer_than_the_limit_ends_the_worker_with_exit_code_3_and_says_why(server, services, tmp_path):
    # given: an idle worker whose outage limit is 8 s
    prefix = f"lim{server}x{os.getpid()}."
    database_url = new_database(services.admin_url)
    setup_topics(services.bootstrap, prefix)
    port = free_port()
    env = worker_env(database_url, services.bootstrap, prefix, ACCRUAL_METRICS_PORT=str(port),
                     ACCRUAL_STORE_OUTAGE_LIMIT="8")
    log = tmp_path / "worker.log"
    worker = WorkerProcess(env, log).start()
    try:
        with Readiness(port) as readiness:
            wait_ready(readiness)
            # when: the server stays down for longer than the limit
            services.run("down", server)
            try:
                code = wait_for_exit(worker, timeout=120)
            finally:
                services.run("up", server)
        # then: the worker ends with exit code 3 and a line naming the outage
        text = log.read_text()
        assert code == 3, text[-3000:]
        expected = "the store has not answered" if server == "postgres" else "has not answered for"
        assert expected in text and "ACCRUAL_STORE_OUTAGE_LIMIT" in text, text[-3000:]
    finally:
        worker.kill()
