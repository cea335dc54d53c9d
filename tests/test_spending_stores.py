"""Rule 10 against the real stores (SQLite and PostgreSQL): enrollment from
the personal account, concurrent requests with one idempotency key from many
processes, and read models that replay and audit clean after every kind of
spending."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from accrual.runtime import Runtime
from accrual.settings import Settings
from accrual.storage import eventsourcing_env
from engine.application import AccrualApplication
from engine.calendar import MOSCOW
from engine.errors import InsufficientPoints
from engine.rules import load_rules
from tests.conftest import settings_for
from tests.programme import Programme

ANNA, BORIS = "79990004001", "79990004002"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=MOSCOW)


def test_enroll_member_releases_held_events_like_an_enrollment_message(programme_on):
    p = programme_on
    # given a charge held before the member enrolled, and one from before the enrollment time
    p.usage(ANNA, "50.00", "2026-02-01 10:00")
    p.usage(ANNA, "25.00", "2026-01-10 10:00")
    assert p.runtime.reads.held() == {ANNA: 2}
    # when the member enrolls in the personal account on 2026-01-15
    assert p.runtime.app.enroll_member(ANNA, "web", at("2026-01-15T09:00")) == "applied"
    # then the held charges are applied as if they arrived then: 50 RUB earns 10, the earlier one is not eligible
    assert p.balance(ANNA) == 10
    assert [line["kind"] for line in p.history(ANNA)] == ["enrolled", "accrued", "not_eligible"]
    assert p.runtime.reads.held() == {}
    assert p.runtime.reads.member(ANNA)["channel"] == "web"
    # enrolling again, from the web or by a message, changes nothing
    assert p.runtime.app.enroll_member(ANNA, "sms", at("2026-01-16T09:00")) == "duplicate"
    assert p.enroll(ANNA, "2026-01-17 00:00").rejected == {"already_enrolled": 1}
    assert p.balance(ANNA) == 10
    # a member enrolled by a message is a duplicate for the web too
    p.enroll(BORIS, "2026-01-01 00:00")
    assert p.runtime.app.enroll_member(BORIS, "web", at("2026-01-16T09:00")) == "duplicate"


def test_everything_rule_10_does_replays_and_audits_clean(programme_on):
    p, app = programme_on, programme_on.runtime.app
    app.enroll_member(ANNA, "web", at("2026-01-01T00:00"))
    app.enroll_member(BORIS, "shop", at("2026-01-01T00:00"))
    p.ballyplus(ANNA, 40, "2026-03-05 10:00")
    p.ballyplus(ANNA, 10, "2026-01-10 10:00")
    order = app.debit(ANNA, 12, purpose="order", idempotency_key="o-1", reference={"item_id": "i"}, at=at("2026-04-01T10:00"))
    app.debit(ANNA, 3, purpose="pos", idempotency_key="p-1", reference={"store_id": "S"}, at=at("2026-04-01T11:00"))
    app.cancel_debit(ANNA, order.debit_id, at=at("2026-04-02T10:00"))
    accepted = app.offer_transfer(ANNA, BORIS, 5, idempotency_key="t-1", at=at("2026-04-03T10:00"))
    app.accept_transfer(accepted.transfer_id, BORIS, at=at("2026-04-03T11:00"))
    declined = app.offer_transfer(ANNA, BORIS, 6, idempotency_key="t-2", at=at("2026-04-03T10:00"))
    app.decline_transfer(declined.transfer_id, BORIS, at=at("2026-04-03T12:00"))
    app.offer_transfer(ANNA, BORIS, 7, idempotency_key="t-3", at=at("2026-04-03T10:00"))
    p.tick("2026-04-05")  # returns t-3
    app.debit(BORIS, 2, purpose="order", idempotency_key="o-2", reference={}, at=at("2026-04-06T10:00"))
    # 50 - 12 - 3 + 12 - 5 - 6 + 6 - 7 + 7 = 42; Boris 5 - 2 = 3
    assert p.balances() == {ANNA: 42, BORIS: 3}
    assert sorted(t["status"] for t in p.runtime.reads.transfers_of(BORIS)) == ["accepted", "declined", "returned"]
    # the lots add up to the balances, in the read models as in the aggregates
    for msisdn in (ANNA, BORIS):
        assert sum(lot[2] for lot in p.lots(msisdn)) == p.balance(msisdn)
        assert sum(line["points"] for line in p.history(msisdn)) == p.balance(msisdn)
    assert p.runtime.audit() == []
    tables = ("members", "history", "lots", "transfers", "debits")
    before = {t: p.runtime.db.query(f"SELECT * FROM rm_{t} ORDER BY 1, 2") for t in tables}
    p.runtime.replay()
    assert {t: p.runtime.db.query(f"SELECT * FROM rm_{t} ORDER BY 1, 2") for t in tables} == before


def _application(url: str) -> AccrualApplication:
    """One more 'process': its own application, with a small connection pool."""
    settings: Settings = settings_for(url)
    env = eventsourcing_env(settings.database, settings.cache_size)
    if settings.database.is_postgres:
        env.update(POSTGRES_POOL_SIZE="1", POSTGRES_MAX_OVERFLOW="2")
    return AccrualApplication(env=env, rules=load_rules())


@pytest.mark.parametrize("callers", [50])
def test_concurrent_requests_with_one_key_make_one_debit(postgres_url, callers):
    with Runtime(settings_for(postgres_url)) as runtime:
        p = Programme(runtime)
        p.enroll(ANNA, "2026-01-01 00:00")
        p.ballyplus(ANNA, 100, "2026-03-05 10:00")
    apps = [_application(postgres_url) for _ in range(callers)]
    start = threading.Barrier(callers)

    def call(app: AccrualApplication):
        start.wait()
        return app.debit(ANNA, 30, purpose="order", idempotency_key="same", reference={"item_id": "x"},
                         at=at("2026-04-01T10:00"))

    try:
        with ThreadPoolExecutor(callers) as pool:
            results = list(pool.map(call, apps))
    finally:
        for app in apps:
            app.close()
    # one debit; every caller has its answer, the same but for who was first (at most one is not a
    # duplicate: a caller whose commit was reported as a store error asks again and gets a duplicate)
    assert sum(not r.duplicate for r in results) <= 1
    assert {(r.debit_id, r.points, r.status, r.balance_after) for r in results} == {(results[0].debit_id, 30, "debited", 70)}
    with Runtime(settings_for(postgres_url)) as runtime:
        p = Programme(runtime)
        assert p.balance(ANNA) == 70
        assert len(runtime.reads.debits_of(ANNA)) == 1
        assert runtime.audit() == []


def test_concurrent_debits_never_take_the_balance_below_zero(database_url):
    with Runtime(settings_for(database_url)) as runtime:
        p = Programme(runtime)
        p.enroll(ANNA, "2026-01-01 00:00")
        p.ballyplus(ANNA, 10, "2026-03-05 10:00")
    callers = 16
    apps = [_application(database_url) for _ in range(callers)]
    start = threading.Barrier(callers)

    def call(n: int):
        start.wait()
        try:
            return apps[n].debit(ANNA, 1, purpose="pos", idempotency_key=f"k-{n}", reference={},
                                 at=at("2026-04-01T10:00")).balance_after
        except InsufficientPoints:
            return None

    try:
        with ThreadPoolExecutor(callers) as pool:
            outcomes = list(pool.map(call, range(callers)))
    finally:
        for app in apps:
            app.close()
    # ten debits of one point succeed, each leaving a different balance; six are refused
    assert sorted(o for o in outcomes if o is not None) == list(range(10))
    assert outcomes.count(None) == callers - 10
    with Runtime(settings_for(database_url)) as runtime:
        assert Programme(runtime).balance(ANNA) == 0


def test_a_command_brings_its_cached_account_up_to_date_with_another_process(database_url):
    # given Anna has 10 points, and web process A has her account cached from a debit of 3 (10 - 3 = 7)
    with Runtime(settings_for(database_url)) as runtime:
        p = Programme(runtime)
        p.enroll(ANNA, "2026-01-01 00:00")
        p.ballyplus(ANNA, 10, "2026-03-05 10:00")
    first, second = _application(database_url), _application(database_url)
    try:
        assert first.debit(ANNA, 3, purpose="pos", idempotency_key="a1", reference={},
                           at=at("2026-04-01T10:00")).balance_after == 7
        assert first.is_cached(first.member(ANNA).id)
        # when process B debits 2 (7 - 2 = 5) and then A debits 1
        assert second.debit(ANNA, 2, purpose="pos", idempotency_key="b1", reference={},
                            at=at("2026-04-01T10:01")).balance_after == 5
        after = first.debit(ANNA, 1, purpose="pos", idempotency_key="a2", reference={}, at=at("2026-04-01T10:02"))
        # then A's command saw B's debit: 5 - 1 = 4, and A's cache holds the stored state
        assert after.balance_after == 4
        cached = first.latest(first.member(ANNA).id)
        assert cached.balance == 4 and cached.version == second.member(ANNA).version
    finally:
        first.close()
        second.close()


def test_a_tick_whose_cached_account_was_spent_from_elsewhere_runs_again_on_the_stored_state(database_url):
    # given the worker (first) has Anna's account cached, and the personal account (second) spends from it
    with Runtime(settings_for(database_url)) as first, Runtime(settings_for(database_url)) as second:
        worker = Programme(first)
        worker.enroll(ANNA, "2026-01-01 00:00")
        worker.ballyplus(ANNA, 10, "2026-01-10 10:00")
        worker.ballyplus(ANNA, 20, "2026-03-05 10:00")
        second.app.debit(ANNA, 4, purpose="pos", idempotency_key="d", reference={}, at=at("2026-04-01T10:00"))
        # when the worker ticks past the first lot's expiry with its stale copy
        report = worker.tick("2027-01-10")
        # then the conflict is retried on the stored account: the 6 points left of that lot expire
        assert report.expired_points == 6
        assert worker.balance(ANNA) == 20
        assert first.audit() == []


def test_the_command_line_shows_spending_in_history_and_the_tick(sqlite_url, monkeypatch):
    import json

    from typer.testing import CliRunner

    from accrual import cli as cli_module
    from accrual.cli import app as cli

    monkeypatch.setattr(cli_module.out, "width", 200)

    with Runtime(settings_for(sqlite_url)) as runtime:
        p, app = Programme(runtime), runtime.app
        p.enroll(ANNA, "2026-01-01 00:00")
        p.enroll(BORIS, "2026-01-01 00:00")
        p.ballyplus(ANNA, 50, "2026-03-05 10:00")
        app.debit(ANNA, 5, purpose="order", idempotency_key="o", reference={"item_id": "sku-17", "title": "Mug"},
                  at=at("2026-04-01T10:00"))
        app.debit(ANNA, 4, purpose="pos", idempotency_key="p", reference={"store_id": "S-042", "receipt": "R-9"},
                  at=at("2026-04-01T11:00"))
        app.offer_transfer(ANNA, BORIS, 7, idempotency_key="t", at=at("2026-04-03T10:00"))
    env = {"ACCRUAL_DATABASE_URL": sqlite_url}
    runner = CliRunner()
    tick = runner.invoke(cli, ["tick", "--as-of", "2026-04-05", "--json"], env=env)
    assert json.loads(tick.output)["returned_transfers"] == 1
    shown = runner.invoke(cli, ["history", ANNA], env=env).output
    for text in ("redeemed", "order sku-17 Mug", "store S-042 receipt R-9", "transfer_out", f"to {BORIS}",
                 "transfer_returned", "timed_out"):
        assert text in shown
    assert runner.invoke(cli, ["audit"], env=env).exit_code == 0


def test_a_command_tells_the_log_position_it_reached(programme_on):
    """The personal account can wait for the read models to reach what a
    command saved, instead of catching them up itself."""
    from datetime import datetime, timezone

    runtime = programme_on.runtime
    programme_on.enroll("79990000077", "2026-03-01 10:00")
    programme_on.ballyplus("79990000077", 10, "2026-03-02")
    runtime.app.debit("79990000077", 5, purpose="order", idempotency_key="k-position", reference={},
                      at=datetime(2026, 3, 3, tzinfo=timezone.utc))
    reached = runtime.app.reached()
    assert reached == runtime.app.recorder.max_notification_id()
    runtime.projector.catch_up()
    assert runtime.projector.position() >= reached
    assert runtime.reads.member("79990000077")["balance"] == 5  # 10 Баллы Плюс points, 5 spent
