"""`accrual worker` rides out faults of the servers it depends on (issue 15),
on the real PostgreSQL and Kafka of dev/services: the worker stays up, and
the result equals the embedded mode on the same input, every message
counted once, the outbound topics included.

Terminating the worker's sessions (`pg_terminate_backend`) is what a
PostgreSQL restart or failover does to a client, without stopping the
server the other tests share: the consumer's, the read models', the
publisher's and the leader's lock session all end at once."""
from __future__ import annotations

import json
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
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND usename = current_user AND backend_type = 'client backend'"  # not the server's own (autovacuum)
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
    # Batches of 250 (not 2,000): the backlog then lasts long enough for the
    # faults to meet it on a fast machine (at 7,000 msg/s, 20,000 messages in
    # batches of 2,000 were gone before the first fault).
    env = worker_env(postgres_url, kafka_bootstrap, kafka_prefix, ACCRUAL_BATCH_SIZE="250")
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
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
            time.sleep(rng.uniform(0.3, 1.5))
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


def terminate_lock_session(database_url: str) -> int:
    """Ends only the session that holds the leadership lock."""
    from accrual.leadership import LOCK_APPLICATION_NAME

    url = parse_database_url(database_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.user, password=url.password,
                         dbname=url.dbname, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s", (LOCK_APPLICATION_NAME,)
        ).fetchall()
    return sum(1 for (ended,) in rows if ended)


def wait_for(condition, failure: str, workers: list[WorkerProcess], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure
        for worker in workers:
            worker.check_alive()
        time.sleep(0.2)


def test_a_leader_whose_lock_session_ends_stands_down_and_the_topics_get_every_record_once_in_order(
    postgres_url, kafka_bootstrap, kafka_prefix, tmp_path
):
    # given: two workers sharing a backlog; one of them leads (publishes)
    names = names_for(kafka_prefix)
    produce(kafka_bootstrap, kafka_prefix, workload(tmp_path, FAULT_EVENTS, 5))
    # The daily tick on: once the backlog is applied, the leader of the day
    # closes today (by the real clock), and no day may be closed twice.
    env = worker_env(postgres_url, kafka_bootstrap, kafka_prefix, ACCRUAL_AUTO_TICK="on", ACCRUAL_TICK_AFTER="0")
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    workers = [WorkerProcess(env, log).start() for log in logs]
    try:
        def terms() -> int:  # terms of leadership begun so far, in both workers
            return sum(log.read_text().count("leadership taken") for log in logs if log.exists())

        wait_for(lambda: terms() >= 1, "no worker took the leadership", workers)
        # when: twice, while the backlog is being applied and published, the
        # leader's lock session ends
        rng, ended = random.Random(5), []
        for _ in range(2):
            time.sleep(rng.uniform(1.0, 3.0))
            before = terms()
            ended.append(terminate_lock_session(postgres_url))
            # then: a new term of leadership begins (in either worker)
            wait_for(lambda before=before: terms() > before, "nobody took the leadership again", workers)
        assert sum(ended) >= 2, f"lock sessions ended: {ended}"
        wait_for_lag_zero(kafka_bootstrap, names, timeout=600, workers=workers)

        def ticks() -> list[dict]:
            return [json.loads(line) for log in logs for line in log.read_text().splitlines()
                    if '"msg": "daily tick"' in line]

        wait_for(lambda: ticks(), "the daily tick did not run", workers)
        # then: the outbound topics hold every member-account event once, in
        # account order (the tick's expiries included), and the balances of
        # the compacted topic; and the day was closed once
        check_outbound(kafka_bootstrap, kafka_prefix, postgres_url)
        time.sleep(6)  # a second leader's tick check would have come by now
        days = [t["as_of"] for t in ticks()]
        assert len(days) == len(set(days)) == 1, days
        text = "".join(log.read_text() for log in logs)
        assert text.count("leadership lost") + text.count("standing down") >= 2
        for worker in workers:
            worker.check_alive()
    finally:
        for worker in workers:
            worker.kill()


def test_a_newer_publisher_fences_the_old_ones_chunk_in_flight(kafka_bootstrap, kafka_prefix, tmp_path):
    """Zombie fencing: the old leader's producer, started before the new
    leader's with the same transactional id, can no longer publish."""
    import asyncio

    from aiokafka.errors import ProducerFenced

    from accrual.publisher import Outgoing, Publisher, new_producer
    from accrual.runtime import Runtime
    from accrual.settings import Settings
    from tests.kafka_support import read_topic

    names = names_for(kafka_prefix)
    settings = Settings.from_env({"ACCRUAL_DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}"})

    def chunk(first_id: int) -> list[Outgoing]:
        return [Outgoing(names.dead_letter, 0, b"k", f'{{"n": {i}}}'.encode(), i) for i in (first_id, first_id + 1)]

    async def run() -> None:
        with Runtime(settings) as runtime:
            publisher = Publisher(runtime.app, runtime.db, names)
            old = new_producer(kafka_bootstrap, f"{names.group}.publisher")
            await old.start()
            new = None
            try:
                assert await publisher.send(old, chunk(1)) == 2
                new = new_producer(kafka_bootstrap, f"{names.group}.publisher")
                await new.start()  # the new leader's producer: fences the old one
                with pytest.raises(ProducerFenced):
                    await publisher.send(old, chunk(3))
                assert await publisher.send(new, chunk(3)) == 2
                # and recovery finds the last committed record behind the
                # transactions' end markers (which take offsets of their own)
                await publisher.recover(kafka_bootstrap)
                assert publisher.published[(names.dead_letter, 0)] == 4
            finally:
                for producer in (old, new):
                    if producer is not None:
                        try:
                            await producer.stop()
                        except Exception:
                            pass

    asyncio.run(run())
    # a subscriber (read_committed) sees each record once: the fenced chunk is not there
    assert [r.value for r in read_topic(kafka_bootstrap, names.dead_letter)] == [
        b'{"n": 1}', b'{"n": 2}', b'{"n": 3}', b'{"n": 4}']
