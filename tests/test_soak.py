"""Soak and crash runs over a generated workload (behind `--soak`; CI runs
them with a few seeds: ACCRUAL_SOAK_SEEDS=1,2 and ACCRUAL_SOAK_EVENTS).

- The same workload on SQLite and on PostgreSQL, in different batch sizes,
  with ticks between, gives the same balances and lots; re-ingesting all of
  it changes nothing; audit finds no difference on either store. After
  every tick the books' closing and the cohorts' outstanding points are the
  sum of the balances, and both stores end with the same books.
- `accrual ingest` killed with SIGKILL at random moments and started again
  until it completes gives exactly what one uninterrupted run gives: nothing
  lost, nothing counted twice.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from accrual.intake import read_batches
from accrual.runtime import Runtime
from bench.workload import generate
from projections.books import Books, change
from projections.cohorts import Cohorts
from tests.conftest import settings_for

pytestmark = pytest.mark.slow

SEEDS = [int(s) for s in os.environ.get("ACCRUAL_SOAK_SEEDS", "1,2").split(",") if s.strip()]
EVENTS = int(os.environ.get("ACCRUAL_SOAK_EVENTS", "20000"))
RECEIVED_AT = datetime(2026, 11, 25, tzinfo=timezone.utc)


def workload(tmp_path: Path, seed: int, events: int = EVENTS) -> tuple[Path, list[dict]]:
    path = tmp_path / f"workload-{seed}.jsonl"
    plan = generate(events=events, members=max(50, events // 10), seed=seed, out=path, months=14)
    return path, plan["ticks"]


def snapshot(runtime: Runtime) -> dict:
    runtime.projector.catch_up()
    balances = runtime.reads.balances()
    lots = {m: runtime.reads.lots(m) for m in balances}
    return {"balances": balances, "lots": lots}


def apply_in_batches(runtime: Runtime, path: Path, ticks: list[dict], batch_size: int) -> None:
    pending = list(ticks)
    lines = [m for batch in read_batches(path, 10_000, RECEIVED_AT) for m in batch]
    position = 0
    while position < len(lines):
        limit = pending[0]["after_line"] if pending else len(lines)
        if position >= limit:
            runtime.tick(date.fromisoformat(pending.pop(0)["as_of"]))
            check_books(runtime)
            continue
        end = min(position + batch_size, limit)
        runtime.apply([lines[position:end]])
        position = end
    for tick in pending:
        runtime.tick(date.fromisoformat(tick["as_of"]))
        check_books(runtime)
    runtime.tick(date(2026, 6, 1))
    check_books(runtime)


def check_books(runtime: Runtime) -> None:
    """Right after a tick that closed its day, the books' last closing and
    the cohorts' outstanding points are the sum of all balances (docs/books.md)."""
    runtime.projector.catch_up()
    total = sum(runtime.reads.balances().values())
    periods = Books(runtime.db).periods()
    assert periods and periods[-1].closing == total, (periods[-1] if periods else None, total)
    assert change(Books(runtime.db).open_period()) == 0
    assert sum(c.outstanding for c in Cohorts(runtime.db).all()) == total


def books(runtime: Runtime) -> dict:
    return {"periods": [p.as_dict() for p in Books(runtime.db).periods()],
            "cohorts": Cohorts(runtime.db).report().as_dict()}


@pytest.mark.postgres
@pytest.mark.parametrize("seed", SEEDS)
def test_sqlite_and_postgres_agree_on_a_long_workload(tmp_path, sqlite_url, postgres_url, seed):
    path, ticks = workload(tmp_path, seed)
    with Runtime(settings_for(sqlite_url)) as lite, Runtime(settings_for(postgres_url)) as pg:
        apply_in_batches(lite, path, ticks, batch_size=500)
        apply_in_batches(pg, path, ticks, batch_size=137)
        expected = snapshot(lite)
        assert sum(expected["balances"].values()) > 0
        assert snapshot(pg) == expected
        assert books(pg) == books(lite)

        again = pg.apply(read_batches(path, 500, RECEIVED_AT))
        assert again.outcomes["applied"] == again.outcomes["held"] == 0
        assert snapshot(pg) == expected
        assert lite.audit() == []
        assert pg.audit() == []


@pytest.mark.parametrize("seed", SEEDS)
def test_an_ingest_killed_at_random_moments_loses_nothing_and_counts_nothing_twice(tmp_path, seed):
    path, _ = workload(tmp_path, seed)
    reference_url = f"sqlite:///{tmp_path / 'reference.sqlite3'}"
    with Runtime(settings_for(reference_url)) as reference:
        started = time.monotonic()
        reference.apply(read_batches(path, 500, RECEIVED_AT))
        duration_s = time.monotonic() - started
        expected = snapshot(reference)

    crashed_url = f"sqlite:///{tmp_path / 'crashed.sqlite3'}"
    env = {**os.environ, "ACCRUAL_DATABASE_URL": crashed_url, "ACCRUAL_BATCH_SIZE": "200"}
    exe = os.path.join(os.path.dirname(sys.executable), "accrual")
    rng = random.Random(seed)
    kills = 0
    for attempt in range(12):
        process = subprocess.Popen([exe, "ingest", "--json", str(path)], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if attempt < 3:
            # somewhere inside the run: start-up is ~1 s, the ingest about as long as the reference
            reach = 0.6 if attempt == 0 else 0.9  # the first kill always lands inside the run
            time.sleep(rng.uniform(0.5, 0.8 + reach * duration_s))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
        out, err = process.communicate(timeout=600)
        if process.returncode == 0:
            break
        assert process.returncode == -signal.SIGKILL, err.decode()
    else:
        pytest.fail("the ingest never completed")
    assert kills >= 1, "the machine was too fast to kill the ingest: raise ACCRUAL_SOAK_EVENTS"
    summary = json.loads(out)
    assert summary["rejected"] == sum(summary["rejected_by_reason"].values())

    with Runtime(settings_for(crashed_url)) as crashed:
        assert snapshot(crashed) == expected
        assert crashed.audit() == []
        with Runtime(settings_for(reference_url)) as reference:
            for as_of in (date(2025, 6, 1), date(2026, 1, 15), date(2026, 6, 1)):
                crashed.tick(as_of)
                reference.tick(as_of)
            assert snapshot(crashed) == snapshot(reference)
