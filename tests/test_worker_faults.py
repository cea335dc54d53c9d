"""`accrual worker` rides out faults of the servers it depends on (issue 15),
on the real PostgreSQL and Kafka of dev/services: the worker stays up, and
the result equals the embedded mode on the same input, every message
counted once, the outbound topics included.

Terminating the worker's sessions (`pg_terminate_backend`) is what a
PostgreSQL restart or failover does to a client, without stopping the
server the other tests share: the consumer's, the read models', the
publisher's and the leader's lock session all end at once."""
from __future__ import annotations

import random
import time

import psycopg
import pytest

from accrual.settings import parse_database_url
from tests.kafka_support import WorkerProcess, names_for, produce, total_lag, wait_for_lag_zero, worker_env
from tests.test_worker import TICK, check_outbound, cli, embedded_reference, outcome, workload

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

FAULT_EVENTS = 20_000
FAULTS = 3


def terminate_sessions(database_url: str) -> int:
    """Ends every session of the test's database but this one (the worker's
    connections: its pools, its read models, its leader and the lock)."""
    url = parse_database_url(database_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.user, password=url.password,
                         dbname=url.dbname, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return sum(1 for (ended,) in rows if ended)


def wait_until_consuming(worker: WorkerProcess, log, consuming, timeout: float = 120) -> None:
    """Until the worker has started applying the backlog (a fault before
    that would hit a process still starting, and test less)."""
    deadline = time.monotonic() + timeout
    while not ('"partitions assigned"' in log.read_text() and consuming()):
        worker.check_alive()
        assert time.monotonic() < deadline, f"the worker did not start consuming in {timeout} s"
        time.sleep(0.2)


@pytest.mark.parametrize("seed, first_fault", [(1, "while starting"), (2, "while consuming")])
def test_the_worker_stays_up_when_its_database_sessions_are_terminated(
    seed, first_fault, postgres_url, kafka_bootstrap, kafka_prefix, tmp_path
):
    # given: a backlog in Kafka and a worker applying it
    names = names_for(kafka_prefix)
    rng = random.Random(seed)
    lines = produce(kafka_bootstrap, kafka_prefix, workload(tmp_path, FAULT_EVENTS, seed))
    worker = WorkerProcess(worker_env(postgres_url, kafka_bootstrap, kafka_prefix), tmp_path / "worker.log").start()
    log = tmp_path / "worker.log"
    try:
        backlog = total_lag(kafka_bootstrap, names)[0]
        ended = []
        if first_fault == "while starting":  # its processes are opening the store and creating tables
            time.sleep(rng.uniform(0.5, 2.0))
            ended.append(terminate_sessions(postgres_url))
        wait_until_consuming(worker, log, lambda: total_lag(kafka_bootstrap, names)[0] < backlog)
        # when: at random moments, every database session of the worker ends
        for _ in range(FAULTS):
            time.sleep(rng.uniform(0.5, 3.0))
            if total_lag(kafka_bootstrap, names)[0] == 0:
                break
            ended.append(terminate_sessions(postgres_url))
            worker.check_alive()
        assert ended and max(ended) >= 3, f"sessions ended: {ended}: the faults hit nothing\n{log.read_text()[-3000:]}"
        # then: the worker carries on by itself and applies everything
        wait_for_lag_zero(kafka_bootstrap, names, timeout=600, workers=[worker])
        worker.check_alive()
        cli(postgres_url, "tick", "--as-of", TICK)
        got = outcome(postgres_url)
        assert got == embedded_reference(lines, tmp_path)
        assert got["inbox"][0] == got["inbox"][1]  # every message counted once
        check_outbound(kafka_bootstrap, kafka_prefix, postgres_url)  # every record once, the balances included
        text = log.read_text()
        assert "store error" in text and '"worker stopped"' not in text
    finally:
        worker.kill()
