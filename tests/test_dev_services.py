"""dev/services starts the PostgreSQL and Kafka that the rest of the suite uses.

These tests run the script for real (no Docker): `up` must print only
KEY=value settings on stdout, the printed URL must let the `accrual` role in
(and create databases), and the printed Kafka address must carry a message
from a producer to a consumer.  Services are left running afterwards: other
tests use them.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "dev" / "services"
SETTING_LINE = re.compile(r"^[A-Z][A-Z0-9_]*=\S+$")


def run_services(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                 timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run dev/services from a directory other than the repository's."""
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd or Path(tempfile.gettempdir()),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def services_up(service: str, env: dict[str, str] | None = None) -> dict[str, str]:
    proc = run_services("up", service, env=env)
    assert proc.returncode == 0, (
        f"dev/services up {service} exited {proc.returncode}\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    lines = proc.stdout.splitlines()
    assert lines, f"dev/services up {service} printed no settings; stderr:\n{proc.stderr}"
    for line in lines:
        assert SETTING_LINE.match(line), f"not a KEY=value line on stdout: {line!r}"
    return dict(line.split("=", 1) for line in lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def database_url() -> str:
    settings = services_up("postgres")
    assert set(settings) == {"ACCRUAL_DATABASE_URL"}
    return settings["ACCRUAL_DATABASE_URL"]


@pytest.mark.postgres
def test_up_postgres_prints_the_database_url(database_url: str) -> None:
    port = os.environ.get("ACCRUAL_PG_PORT", "54329")
    assert database_url == f"postgresql://accrual:accrual@127.0.0.1:{port}/accrual"


@pytest.mark.postgres
def test_accrual_role_connects_and_can_create_a_database(database_url: str) -> None:
    scratch = f"accrual_scratch_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            "accrual",
            "accrual",
        )
        # The crash tests rely on durable commits.
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        if os.environ.get("ACCRUAL_PG_FSYNC", "on") == "on":
            assert conn.execute("SHOW fsync").fetchone() == ("on",)
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    try:
        scratch_url = database_url.rsplit("/", 1)[0] + "/" + scratch
        with psycopg.connect(scratch_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (1)")
            assert conn.execute("SELECT x FROM t").fetchone() == (1,)
    finally:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(scratch)))
            gone = conn.execute(
                "SELECT count(*) FROM pg_database WHERE datname = %s", (scratch,)
            ).fetchone()
            assert gone == (0,)


@pytest.mark.postgres
def test_up_again_keeps_the_running_server(database_url: str) -> None:
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert services_up("postgres") == {"ACCRUAL_DATABASE_URL": database_url}
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        assert conn.execute("SELECT pg_postmaster_start_time()").fetchone() == started
    status = run_services("status", "postgres")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.startswith("postgres: running")


@pytest.mark.postgres
def test_fresh_services_dir_full_cycle_and_stale_pid_file() -> None:
    """A fresh clone (no services dir), down, and a reboot's stale postmaster.pid."""
    # Not pytest's tmp_path: under /tmp/pytest-of-root (mode 700) the
    # `postgres` user that the server runs as (when we are root) cannot reach it.
    base = Path(tempfile.mkdtemp(prefix="accrual-services-test-"))
    base.chmod(0o755)
    services_dir = base / "services"  # does not exist yet, as in a fresh clone
    port = free_port()
    env = {**os.environ, "ACCRUAL_SERVICES_DIR": str(services_dir), "ACCRUAL_PG_PORT": str(port)}
    url = f"postgresql://accrual:accrual@127.0.0.1:{port}/accrual"
    try:
        assert services_up("postgres", env=env) == {"ACCRUAL_DATABASE_URL": url}
        with psycopg.connect(url, connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)

        down = run_services("down", "postgres", env=env)
        assert down.returncode == 0, down.stderr
        status = run_services("status", "postgres", env=env)
        assert status.returncode == 3 and status.stdout.startswith("postgres: stopped")

        # After a reboot postmaster.pid survives, and its pid may now belong
        # to a live process that is not our server: pid 1 is always alive.
        pid_file = services_dir / "postgres" / "data" / "postmaster.pid"
        pid_file.write_text(f"1\n{services_dir}/postgres/data\n0\n{port}\n")
        if os.geteuid() == 0:
            shutil.chown(pid_file, "postgres", "postgres")
        assert services_up("postgres", env=env) == {"ACCRUAL_DATABASE_URL": url}
        with psycopg.connect(url, connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        run_services("down", "all", env=env)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.kafka
def test_kafka_carries_a_message() -> None:
    settings = services_up("kafka")
    assert set(settings) == {"KAFKA_BOOTSTRAP_SERVERS"}
    bootstrap = settings["KAFKA_BOOTSTRAP_SERVERS"]
    assert bootstrap == f"127.0.0.1:{os.environ.get('ACCRUAL_KAFKA_PORT', '19092')}"
    status = run_services("status", "kafka")
    assert status.returncode == 0 and status.stdout.startswith("kafka: running"), status.stdout

    asyncio.run(asyncio.wait_for(_produce_and_consume(bootstrap), timeout=120))


async def _produce_and_consume(bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"accrual-dev-services-{uuid.uuid4().hex[:12]}"
    payload = f"hello {uuid.uuid4()}".encode()

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            sent = await producer.send_and_wait(topic, payload, key=b"k")
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=f"accrual-dev-services-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            msg = await asyncio.wait_for(consumer.getone(), timeout=60)
            await consumer.commit()
        finally:
            await consumer.stop()
        assert (msg.topic, msg.partition, msg.offset) == (topic, sent.partition, sent.offset)
        assert (msg.key, msg.value) == (b"k", payload)
    finally:
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()
