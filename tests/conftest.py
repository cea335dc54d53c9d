"""Fixtures: a fresh store per test, on SQLite and on PostgreSQL.

PostgreSQL is the real server that `dev/services up postgres` starts (the
fixture starts it if it is not running); each test gets a database of its
own, dropped afterwards."""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from accrual.runtime import Runtime
from accrual.settings import Settings, parse_database_url

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = Path(__file__).resolve().parent / "data" / "sample"


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true", help="run the long soak tests as well")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="long soak run: pass --soak (CI runs it with a few seeds)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The URL of a PostgreSQL role that may create databases."""
    return os.environ.get("ACCRUAL_TEST_POSTGRES_URL") or _services_up("postgres", "ACCRUAL_DATABASE_URL")


def _services_up(service: str, setting: str) -> str:
    """Starts a service with dev/services (under a lock, so that parallel
    test processes start one server) and returns the setting it prints."""
    import fcntl

    with open(ROOT / ".services.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        started = subprocess.run(
            [str(ROOT / "dev" / "services"), "up", service], capture_output=True, text=True, timeout=900
        )
    if started.returncode != 0:
        pytest.fail(f"dev/services up {service} failed:\n{started.stderr}", pytrace=False)
    for line in started.stdout.splitlines():
        if line.startswith(setting + "="):
            return line.split("=", 1)[1]
    pytest.fail(f"dev/services printed no {setting}:\n{started.stdout}", pytrace=False)


@pytest.fixture
def postgres_url(postgres_admin_url):
    """A fresh, empty PostgreSQL database for one test."""
    import psycopg

    admin = parse_database_url(postgres_admin_url)
    name = f"accrual_test_{uuid.uuid4().hex[:12]}"
    connect = dict(host=admin.host, port=admin.port, user=admin.user, password=admin.password, autocommit=True)
    with psycopg.connect(dbname=admin.dbname, **connect) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://{admin.user}:{admin.password}@{admin.host}:{admin.port}/{name}"
    _drop_database(name, admin.dbname, connect)


def _drop_database(name: str, admin_db: str, connect: dict) -> None:
    """Drops a test database. FORCE cannot end a backend of the server's own
    (an autovacuum worker, seen once): wait and try again; a database left
    behind after that is only disk, so it is reported, not failed on."""
    import time
    import warnings

    import psycopg

    for attempt in range(10):
        try:
            with psycopg.connect(dbname=admin_db, **connect) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except psycopg.errors.InsufficientPrivilege:
            time.sleep(0.5 * (attempt + 1))
    warnings.warn(f"test database {name} could not be dropped (a server process kept it open)", stacklevel=2)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'accrual.sqlite3'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request) -> str:
    """Each storage-facing test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


def settings_for(url: str, **overrides: str) -> Settings:
    env = {"ACCRUAL_DATABASE_URL": url, **overrides}
    return Settings.from_env(env)


@pytest.fixture
def runtime(sqlite_url):
    """The engine on a fresh SQLite file: for rule tests."""
    with Runtime(settings_for(sqlite_url)) as rt:
        yield rt


@pytest.fixture
def runtime_on(database_url):
    """The engine on a fresh store of each kind: for storage-facing tests."""
    with Runtime(settings_for(database_url)) as rt:
        yield rt


@pytest.fixture
def programme(runtime):
    from tests.programme import Programme

    return Programme(runtime)


@pytest.fixture
def programme_on(runtime_on):
    from tests.programme import Programme

    return Programme(runtime_on)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The broker that `dev/services up kafka` starts (dev/test starts it
    before the suite; otherwise the first test that needs it does, under a
    lock so that parallel test processes start one broker)."""
    return os.environ.get("ACCRUAL_TEST_KAFKA_BOOTSTRAP") or _services_up("kafka", "KAFKA_BOOTSTRAP_SERVERS")


@pytest.fixture
def kafka_prefix(kafka_bootstrap) -> str:
    """Topic and consumer-group names of one test (a prefix on streams.yaml's)."""
    from tests.kafka_support import setup_topics

    prefix = f"t{uuid.uuid4().hex[:10]}."
    setup_topics(kafka_bootstrap, prefix)
    return prefix
