"""The tamper-evident log (projections/chain.py, `accrual verify`) on SQLite
and on PostgreSQL: an untouched store verifies; an event changed, deleted,
inserted or two swapped in place is named at its position; a replay keeps
the checkpoints and blesses nothing; a tamperer who recomputed the
checkpoints is caught by a head taken earlier (`--expect-head`)."""
from __future__ import annotations

import json
import struct
from hashlib import sha256
from uuid import UUID, uuid4

import pytest
from typer.testing import CliRunner

from accrual.cli import app
from projections import chain
from projections.chain import LogChain
from tests.conftest import SAMPLE
from tests.test_conformance import run_plan

MEMBERS = ("79990000001", "79990000002", "79990000003")


def verify(url: str, *args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["verify", "--json", *args], env={"ACCRUAL_DATABASE_URL": url},
                                catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)


def column(db) -> str:
    """The notification id: a column of its own on PostgreSQL, the rowid on SQLite."""
    return "notification_id" if db.is_postgres else "rowid"


def events(db) -> str:
    """The stored events' table (the library names it after the application, "accrual", on PostgreSQL)."""
    return "accrual_events" if db.is_postgres else "stored_events"


def positions(db) -> list[int]:
    return [row[0] for row in db.query(f"SELECT {column(db)} FROM {events(db)} ORDER BY 1")]


def state_at(db, position: int) -> bytes:
    return bytes(db.query(f"SELECT state FROM {events(db)} WHERE {column(db)} = ?", (position,))[0][0])


def checkpoints(db) -> list[tuple]:
    return [(p, e, bytes(h), bytes(t)) for p, e, h, t in db.query("SELECT * FROM log_chain ORDER BY position")]


@pytest.fixture
def small_checkpoints(monkeypatch):
    """A checkpoint kept every 4 events, so that a short log has several."""
    monkeypatch.setattr(chain, "CHECKPOINT_EVERY", 4)


def given_a_followed_log(programme) -> list[int]:
    """Three members who earn and spend, and a tick; the read models (and so
    the chain) followed every batch. Returns the stored positions."""
    for n, msisdn in enumerate(MEMBERS):
        programme.enroll(msisdn, "2026-01-10")
        programme.usage(msisdn, "500.00", "2026-01-12")
        programme.purchase(msisdn, f"r-{n}", [("1", "mts_branded", "1000.00")], "2026-01-13")
        programme.card_purchase(msisdn, "3000.00", "2026-01-14")
    programme.tick("2026-02-16")
    programme.runtime.projector.catch_up()
    return positions(programme.runtime.db)


# -- the chain itself ------------------------------------------------------------------


def test_the_head_is_the_documented_sha256_chain_and_an_untouched_log_verifies(
    programme_on, database_url, small_checkpoints
):
    stored = given_a_followed_log(programme_on)
    db = programme_on.runtime.db

    # An auditor's own implementation of docs/books.md's encoding.
    head = bytes(32)
    rows = db.query(f"SELECT {column(db)}, originator_id, originator_version, topic, state FROM {events(db)} "
                    "ORDER BY 1")
    for position, originator_id, version, topic, state in rows:
        ident, name, state = UUID(str(originator_id)).bytes, topic.encode(), bytes(state)
        head = sha256(head + struct.pack(">QI", position, 16) + ident + struct.pack(">QI", version, len(name))
                      + name + struct.pack(">I", len(state)) + state).digest()

    code, report = verify(database_url)
    assert code == 0, report
    assert report == {"ok": True, "events": len(stored), "position": stored[-1], "head": head.hex(),
                      "chained": stored[-1], "first_break": None, "reason": None, "detail": None, "expected": None}
    # kept every 4 events, and the latest
    assert [e for _, e, _, _ in checkpoints(db)] == [*range(4, len(stored) + 1, 4)] + (
        [len(stored)] if len(stored) % 4 else [])


def test_the_chain_grows_with_each_batch_and_replaces_only_its_latest_checkpoint(
    programme_on, database_url, small_checkpoints
):
    given_a_followed_log(programme_on)
    db = programme_on.runtime.db
    before = checkpoints(db)

    programme_on.usage(MEMBERS[0], "100.00", "2026-02-20")
    programme_on.usage(MEMBERS[1], "100.00", "2026-02-21")

    after = checkpoints(db)
    kept = [c for c in before if c[1] % 4 == 0]
    assert after[:len(kept)] == kept, "a kept checkpoint never changes"
    assert after[-1][0] == positions(db)[-1]
    assert verify(database_url)[0] == 0


# -- tampering ---------------------------------------------------------------------------


def flip_a_byte(db, position: int) -> None:
    state = bytearray(state_at(db, position))
    state[len(state) // 2] ^= 0x01
    with db.transaction() as tx:
        tx.execute(f"UPDATE {events(db)} SET state = ? WHERE {column(db)} = ?", (bytes(state), position))


def delete(db, position: int) -> None:
    with db.transaction() as tx:
        tx.execute(f"DELETE FROM {events(db)} WHERE {column(db)} = ?", (position,))


def insert_before(db, position: int) -> None:
    """A forged event at `position`, the events from there on moved up one."""
    pos = column(db)
    forged = state_at(db, position)
    topic = db.query(f"SELECT topic FROM {events(db)} WHERE {pos} = ?", (position,))[0][0]
    originator = uuid4() if db.is_postgres else uuid4().hex
    with db.transaction() as tx:  # in two steps: the positions are unique at every row
        tx.execute(f"UPDATE {events(db)} SET {pos} = {pos} + 1000000 WHERE {pos} >= ?", (position,))
        tx.execute(f"UPDATE {events(db)} SET {pos} = {pos} - 999999 WHERE {pos} >= ?", (position + 1000000,))
        tx.execute(f"INSERT INTO {events(db)} ({pos}, originator_id, originator_version, topic, state) "
                   "VALUES (?, ?, 1, ?, ?)", (position, originator, topic, forged))


def swap(db, first: int, second: int) -> None:
    a, b = state_at(db, first), state_at(db, second)
    with db.transaction() as tx:
        tx.execute(f"UPDATE {events(db)} SET state = ? WHERE {column(db)} = ?", (b, first))
        tx.execute(f"UPDATE {events(db)} SET state = ? WHERE {column(db)} = ?", (a, second))


@pytest.mark.parametrize("tamper, reason", [
    (lambda db, p, later: flip_a_byte(db, p), "changed"),
    (lambda db, p, later: delete(db, p), "missing"),
    (lambda db, p, later: insert_before(db, p), "changed"),  # the event chained at p is no longer there
    (lambda db, p, later: swap(db, p, later), "changed"),
], ids=["change one byte", "delete one", "insert one", "swap two"])
def test_tampering_in_place_is_named_at_its_position(programme_on, database_url, small_checkpoints, tamper, reason):
    stored = given_a_followed_log(programme_on)
    db, url = programme_on.runtime.db, database_url
    target, later = stored[len(stored) // 2], stored[len(stored) // 2 + 3]
    assert verify(url)[0] == 0

    tamper(db, target, later)

    code, report = verify(url)
    assert code == 1
    assert (report["ok"], report["first_break"], report["reason"]) == (False, target, reason), report


def test_the_last_event_deleted_is_missing_at_its_position(programme_on, database_url, small_checkpoints):
    stored = given_a_followed_log(programme_on)

    delete(programme_on.runtime.db, stored[-1])

    code, report = verify(database_url)
    assert (code, report["first_break"], report["reason"]) == (1, stored[-1], "missing")


@pytest.mark.postgres
def test_gaps_in_the_positions_are_no_break_but_an_event_put_into_one_is(postgres_url, small_checkpoints):
    """PostgreSQL's sequence skips the ids of rolled-back transactions: the
    chain runs over the rows that are stored, whatever their positions."""
    from accrual.runtime import Runtime
    from tests.conftest import settings_for
    from tests.programme import Programme

    with Runtime(settings_for(postgres_url)) as runtime:
        programme = Programme(runtime)
        programme.enroll(MEMBERS[0], "2026-01-10")
        sequence = "pg_get_serial_sequence('accrual_events', 'notification_id')"
        runtime.db.query(f"SELECT setval({sequence}, nextval({sequence}) + 5)")  # ids lost to rollbacks
        programme.enroll(MEMBERS[1], "2026-01-10")
        stored = positions(runtime.db)
        gap = next(p + 1 for p, q in zip(stored, stored[1:], strict=False) if q > p + 1)
        assert verify(postgres_url)[0] == 0

        with runtime.db.transaction() as tx:
            tx.execute("INSERT INTO accrual_events (notification_id, originator_id, originator_version, "
                       "topic, state) SELECT ?, ?, 1, topic, state FROM accrual_events "
                       "WHERE notification_id = ?",
                       (gap, uuid4(), stored[0]))

        code, report = verify(postgres_url)
        assert (code, report["first_break"], report["reason"]) == (1, gap, "inserted")


def test_a_tamperer_who_recomputed_the_checkpoints_is_caught_by_a_head_taken_earlier(programme_on, database_url):
    stored = given_a_followed_log(programme_on)
    db, url = programme_on.runtime.db, database_url
    at = stored[-2]
    code, report = verify(url, "--expect-head", LogChain(db, events(db)).head_at(at).hex(), "--at", str(at))
    assert code == 0 and report["expected"]["ok"], report
    auditors_copy = report["expected"]["head"]

    # Given an event changed and the checkpoints written again over the changed log,
    flip_a_byte(db, stored[3])
    with db.transaction() as tx:
        tx.execute("DELETE FROM log_chain")
        LogChain(db, events(db)).follow(tx, 0, stored[-1], None)
    # the checkpoints agree with the store,
    assert verify(url)[0] == 0
    # but not with the auditor's copy of the head.
    code, report = verify(url, "--expect-head", auditors_copy, "--at", str(at))
    assert code == 1
    assert (report["first_break"], report["reason"]) == (at, "expected_head")
    assert report["expected"]["ok"] is False and report["expected"]["found"] != auditors_copy


def test_verify_refuses_a_malformed_expectation_with_a_reason(sqlite_url):
    for args, reason in [
        (["--expect-head", "abc", "--at", "3"], "invalid_head"),
        (["--expect-head", "zz" * 32, "--at", "3"], "invalid_head"),
        (["--expect-head", "00" * 32], "invalid_arguments"),
        (["--at", "3"], "invalid_arguments"),
    ]:
        code, report = verify(sqlite_url, *args)
        assert (code, report["error"]) == (2, reason), args


# -- the sample, replay and audit ------------------------------------------------------------


def test_the_sample_verifies_and_replay_and_audit_keep_the_checkpoints_as_first_written(database_url):
    from accrual.runtime import Runtime
    from tests.conftest import settings_for

    runner = CliRunner()

    def accrual(*args: str) -> None:
        result = runner.invoke(app, list(args), env={"ACCRUAL_DATABASE_URL": database_url})
        assert result.exit_code == 0, result.output

    run_plan(runner, database_url)
    code, report = verify(database_url)
    assert code == 0 and report["events"] == report["chained"] > 5000, report

    with Runtime(settings_for(database_url)) as runtime:
        db = runtime.db
        first_written = checkpoints(db)
        accrual("replay")
        accrual("audit")
        assert checkpoints(db) == first_written
        assert verify(database_url) == (0, report)

        # A replay of a changed log does not bless the change (here one that
        # reads the same: a space in the event's JSON).
        changed = positions(db)[1234]
        state = state_at(db, changed)
        with db.transaction() as tx:
            tx.execute(f"UPDATE {events(db)} SET state = ? WHERE {column(db)} = ?",
                       (state.replace(b'"timestamp"', b'"timestamp" ', 1), changed))
        accrual("replay")
        assert checkpoints(db) == first_written
        code, broken = verify(database_url)
        assert (code, broken["first_break"], broken["reason"]) == (1, changed, "changed")


# -- the copy outside the database ----------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.postgres
def test_each_published_points_event_carries_the_head_that_verify_computes_at_its_position(
    postgres_url, kafka_bootstrap, kafka_prefix, tmp_path
):
    from tests.kafka_support import (
        WorkerProcess, names_for, produce, read_lines, read_topic, wait_for_lag_zero, worker_env,
    )
    from tests.test_worker import runtime_for, wait_for_publisher

    names = names_for(kafka_prefix)
    files = sorted(SAMPLE.glob("*-ingest.jsonl"))[:4]
    for number, part in enumerate((files[:2], files[2:])):  # a second worker's publisher starts mid-log
        env = worker_env(postgres_url, kafka_bootstrap, kafka_prefix)
        worker = WorkerProcess(env, tmp_path / f"worker{number}.log").start()
        try:
            produce(kafka_bootstrap, kafka_prefix, read_lines(*part))
            wait_for_lag_zero(kafka_bootstrap, names, workers=[worker])
            wait_for_publisher(postgres_url)
        finally:
            worker.kill()

    with runtime_for(postgres_url) as runtime:  # the chain as an auditor recomputes it
        head, heads = chain.GENESIS, {}
        for row in chain.stored_rows(runtime.db.query, True, runtime.app.recorder.events_table_name, 0):
            head = heads[row[0]] = chain.link(head, *row)
    published = sorted(
        (int(headers["notification_id"]), headers["chain_head"].decode())
        for headers in (dict(r.headers) for r in read_topic(kafka_bootstrap, names.points_events))
    )
    assert len(published) > 100
    assert published == [(position, heads[position].hex()) for position, _ in published]
    for position, published_head in (published[0], published[len(published) // 2], published[-1]):
        code, report = verify(postgres_url, "--expect-head", published_head, "--at", str(position))
        assert code == 0 and report["expected"]["ok"], report
