"""Upgrades lose nothing: a store written by the release before events carried
their effect (commit a20a9d5, `tests/data/old_store/`) opens with this code
and gives the same balances, lots, history, debits, transfers and audit.

Its events and snapshots are of version 1 (lots, allocations, card months and
MGTS periods as positional lists): the `upcast_v1_v2` methods read them. Its
read models were written by the old projector, so a clean audit also says
the new projector writes the very same rows from the upcast events.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from itertools import product
from pathlib import Path

import pytest
from typer.testing import CliRunner

from accrual.cli import app as cli
from accrual.runtime import Runtime
from engine.ids import mgts_account_id
from projections import upgrade
from projections.books import Books
from projections.tables import occurred_utc
from tests.conftest import settings_for
from tests.programme import Programme
from tests.test_history_page import former_page

OLD_STORE = Path(__file__).parent / "data" / "old_store"
EXPECTED = OLD_STORE / "expected"


def expected(name: str):
    return json.loads((EXPECTED / f"{name}.json").read_text())


@pytest.fixture
def old_store(tmp_path) -> str:
    """A copy of the old store (opening a store writes to it)."""
    shutil.copy(OLD_STORE / "accrual.sqlite3", tmp_path / "accrual.sqlite3")
    return f"sqlite:///{tmp_path / 'accrual.sqlite3'}"


def accrual(url: str, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"ACCRUAL_DATABASE_URL": url}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def without_clock(balance: dict) -> dict:
    """`expiring` counts from the wall clock's date: not part of the store."""
    return {k: v for k, v in balance.items() if k != "expiring"}


def test_the_old_store_fixture_holds_events_and_snapshots_of_version_1(old_store):
    path = old_store.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        topics = {topic for (topic,) in conn.execute("SELECT DISTINCT topic FROM stored_events")}
        snapshots = {t for (t,) in conn.execute("SELECT json_extract(state, '$.topic') FROM stored_snapshots")}
        versions = {v for (v,) in conn.execute("SELECT DISTINCT json_extract(state, '$.class_version') FROM stored_events")}
    assert "engine.account:MemberAccount.PointsRedeemed" in topics and len(topics) == 25
    assert snapshots == {"engine.account:MemberAccount", "engine.mgts:MgtsAccount"}
    assert versions == {None}  # version 1 writes no class_version


def test_an_old_store_gives_the_same_answers_and_a_clean_audit(old_store):
    assert json.loads(accrual(old_store, "audit", "--json")) == expected("audit")
    assert json.loads(accrual(old_store, "balances", "--json")) == expected("balances")
    assert json.loads(accrual(old_store, "rejections", "--json")) == expected("rejections")
    assert json.loads(accrual(old_store, "held", "--json")) == expected("held")
    for msisdn, answer in expected("history").items():
        assert json.loads(accrual(old_store, "history", msisdn, "--json")) == answer, msisdn
    for msisdn, answer in expected("balance").items():
        assert without_clock(json.loads(accrual(old_store, "balance", msisdn, "--json"))) == without_clock(answer)


def test_an_old_store_gets_its_history_s_moments_in_utc_and_pages_it_as_before(old_store):
    """`rm_history.occurred_utc` came after this store's release: start-up
    adds it and fills it with the projector's own function, and the pages
    of the personal account's history (now read in SQL) are what sorting
    the old history in Python gave: the released held events, older than
    the enrollment that follows them in the log, included."""
    kinds = [None, ["accrued"], ["enrolled", "not_eligible", "redeemed"]]
    days = [None, date(2025, 8, 18), date(2026, 1, 1), date(2026, 9, 30)]
    with Runtime(settings_for(old_store)) as runtime:
        rows = runtime.db.query("SELECT occurred_at, occurred_utc FROM rm_history")
        assert len(rows) == 392 and all(utc == occurred_utc(at) for at, utc in rows)
        for msisdn, history in expected("history").items():
            for wanted, since, until, (limit, offset) in product(kinds, days, days, [(20, 0), (20, 20), (7, 35)]):
                answer = runtime.reads.history_page(msisdn, kinds=wanted, since=since, until=until, limit=limit,
                                                    offset=offset)
                assert answer == former_page(history, wanted, since, until, limit, offset), (msisdn, since, until)
    assert json.loads(accrual(old_store, "audit", "--json")) == {"differences": []}


@pytest.mark.parametrize("left", ["by the release before", "half-way through its upgrade"])
def test_a_history_without_its_moments_in_utc_is_filled_when_two_processes_start_at_once(
    database_url, left, monkeypatch
):
    """A store's history as the release before left it (no `occurred_utc`,
    no index), or as an upgrade stopped half-way left it (some rows without
    it, no index): two processes starting at once fill it, in batches, and
    the read models are the ones a rebuild writes."""
    monkeypatch.setattr(upgrade, "FILL_BATCH_SIZE", 4)
    with Runtime(settings_for(database_url)) as runtime:
        programme = Programme(runtime)
        for n, msisdn in enumerate(("79990002001", "79990002002", "79990002003")):
            programme.enroll(msisdn, "2026-03-01 10:00")
            for day in range(1, 6):
                programme.ballyplus(msisdn, n + day, f"2026-03-{day + 1:02d}T0{day}:00:00+0{n}:00")
        runtime.projector.catch_up()
        written = runtime.db.query("SELECT msisdn, version, occurred_utc FROM rm_history ORDER BY msisdn, version")
        with runtime.db.transaction() as tx:
            tx.execute("DROP INDEX rm_history_by_moment")
            if left == "by the release before":
                tx.execute("ALTER TABLE rm_history DROP COLUMN occurred_utc")
            else:
                tx.execute("UPDATE rm_history SET occurred_utc = NULL WHERE version IN (2, 4) OR msisdn > '79990002001'")
    with ThreadPoolExecutor(2) as pool:
        runtimes = list(pool.map(lambda _: Runtime(settings_for(database_url)), range(2)))
    try:
        db = runtimes[0].db
        assert len(written) == 18 and db.query(
            "SELECT msisdn, version, occurred_utc FROM rm_history ORDER BY msisdn, version") == written
        indexes = "SELECT indexname FROM pg_indexes" if db.is_postgres else "SELECT name FROM sqlite_master"
        assert ("rm_history_by_moment",) in db.query(indexes)
        assert runtimes[1].audit() == []
    finally:
        for opened in runtimes:
            opened.close()


def test_a_replay_of_an_old_store_rebuilds_the_same_read_models(old_store):
    accrual(old_store, "replay")
    assert json.loads(accrual(old_store, "balances", "--json")) == expected("balances")
    for msisdn, answer in expected("history").items():
        assert json.loads(accrual(old_store, "history", msisdn, "--json")) == answer, msisdn


def test_old_events_and_snapshots_load_into_the_same_account_state(old_store):
    with Runtime(settings_for(old_store)) as runtime:
        for msisdn, old in expected("accounts").items():
            account = runtime.app.member(msisdn)
            assert (account.balance, account.uncollected, account.next_lot_id, account.version) == (
                old["balance"], old["uncollected"], old["next_lot_id"], old["version"]), msisdn
            lots = [[lot.lot_id, lot.lot_date.isoformat(), lot.expires_on.isoformat(), lot.remaining]
                    for lot in account.lots]
            assert lots == old["lots"], msisdn
            assert {m: [str(c.net), c.settled] for m, c in account.card_months.items()} == old["card_months"]
            assert {m: str(total) for m, total in account.usage_months.items()} == old["usage_months"]
            debits = {
                debit_id: {"purpose": d.purpose, "points": d.points, "status": d.status,
                           "balance_after": d.balance_after, "reference": d.reference,
                           "allocations": [[p.lot_id, p.points, p.lot_date.isoformat(), p.expires_on.isoformat()]
                                           for p in d.portions],
                           "created_at": d.created_at.isoformat()}
                for debit_id, d in account.debits.items()
            }
            assert debits == old["debits"], msisdn
        for number, old in expected("mgts_accounts").items():
            account = runtime.app.repository.get(mgts_account_id(number))
            assert account.msisdn == old["msisdn"]
            assert [[str(link.linked_at), link.msisdn] for link in account.links] == old["links"]
            periods = {p: [str(v.total), v.earned, None if v.settled_total is None else str(v.settled_total)]
                       for p, v in account.periods.items()}
            assert periods == old["periods"], number
        for debit_id, old in expected("debits").items():
            status = runtime.app.debit_status(old["msisdn"], debit_id)
            assert {k: v for k, v in vars(status).items()} == old["status"]
        for transfer_id, old in expected("transfers").items():
            transfer = runtime.app.transfer(transfer_id)
            answer = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in vars(transfer).items()}
            assert answer == old["status"]


def test_an_old_store_takes_new_work_on_top_of_its_old_events(old_store):
    """The old order debit of the member with a version-1 snapshot is
    cancelled, and the day is closed, which returns the old transfer still
    pending (its window ended at noon on 2 October): the new events follow
    the old ones, and the audit stays clean."""
    debit_id, old = next((i, d) for i, d in expected("debits").items() if d["status"]["status"] == "debited")
    pending = next(i for i, t in expected("transfers").items() if t["status"]["status"] == "pending")
    at = datetime.fromisoformat("2026-10-02T12:00:00+03:00")
    with Runtime(settings_for(old_store)) as runtime:
        before = runtime.app.member(old["msisdn"]).balance
        cancelled = runtime.app.cancel_debit(old["msisdn"], debit_id, at=at)
        assert cancelled.status == "cancelled" and cancelled.balance_after >= before
        closed = runtime.tick(date(2026, 10, 3))
        assert closed.returned_transfers == 1 and runtime.app.transfer(pending).status == "returned"
        runtime.projector.catch_up()
        account = runtime.app.member(old["msisdn"])
        assert account.balance == sum(lot.remaining for lot in account.lots)
        assert runtime.reads.member(old["msisdn"])["balance"] == account.balance
        # The books: the old release's ticks left no mark, so its first tick
        # here closes one period holding the whole old history (filled from
        # the old read models' history on start), closing at all balances.
        (period,) = Books(runtime.db).periods()
        assert (period.period_end, period.opening) == (date(2026, 10, 3), 0)
        assert period.closing == sum(runtime.reads.balances().values()) > 0
    assert json.loads(accrual(old_store, "audit", "--json")) == {"differences": []}


@pytest.mark.postgres
def test_the_old_log_opens_on_postgresql(old_store, postgres_url):
    """The same stored events and snapshots, moved into PostgreSQL as they
    are, give the same balances and history after the read models are built."""
    with Runtime(settings_for(postgres_url)):
        pass  # creates the tables
    import psycopg

    from accrual.settings import parse_database_url

    url = parse_database_url(postgres_url)
    source = sqlite3.connect(old_store.removeprefix("sqlite:///"))
    with psycopg.connect(host=url.host, port=url.port, user=url.user, password=url.password, dbname=url.dbname) as pg:
        for table, into, order in (("stored_events", "accrual_events", "rowid"),
                                   ("stored_snapshots", "accrual_snapshots", "originator_id, originator_version")):
            rows = source.execute(f"SELECT originator_id, originator_version, topic, state FROM {table} ORDER BY {order}")
            with pg.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO {into} (originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s)",
                    [(str(_uuid(i)), v, t, s) for i, v, t, s in rows],
                )
        with pg.cursor() as cursor:
            cursor.executemany("INSERT INTO inbox VALUES (%s, %s, %s, %s)", source.execute("SELECT * FROM inbox"))
    source.close()
    assert json.loads(accrual(postgres_url, "balances", "--json")) == expected("balances")
    for msisdn, answer in expected("history").items():
        assert json.loads(accrual(postgres_url, "history", msisdn, "--json")) == answer, msisdn
    assert json.loads(accrual(postgres_url, "audit", "--json")) == {"differences": []}


def _uuid(hex_id: str):
    from uuid import UUID

    return UUID(hex_id)
