"""Issue 13 — the loyalty team's adjustments, applied: a credit opens a lot
dated that day; a debit takes the first-to-expire lots and never takes the
balance below zero; the same adjustment id is applied once however many
callers send it; the history, the books (`adjusted`, signed), the cohorts,
replay, audit and verify all say the same; the points-events topic carries
`PointsAdjusted` without the staff's own text.

Lots are made with Баллы Плюс transfers (1 partner point = 1 point, lot date
= the event's Moscow date, expiry 12 months later), so every number is by
hand."""
from __future__ import annotations

import csv
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from typer.testing import CliRunner

from accrual.cli import app as cli
from accrual.runtime import Runtime
from accrual.storage import eventsourcing_env
from engine.adjustments import ADJUSTMENTS_TOPIC, Adjusted
from engine.application import AccrualApplication
from engine.calendar import MOSCOW
from engine.errors import IdempotencyConflict, InsufficientPoints, NotEnrolled, RuleRefusal
from engine.rules import load_rules
from projections.books import Books
from projections.cohorts import Cohorts
from tests.conftest import settings_for
from tests.programme import Programme

ANNA, BORIS = "79990013001", "79990013002"
WHY = "Начисление за акцию не пришло"  # a reason of 10..500 characters


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=MOSCOW)


def adjust(programme, points, adjustment_id="adj-1", msisdn=ANNA, reason=WHY, requested_by="olga",
           approved_by: str | None = "ivan", when="2026-04-01T12:00", app=None) -> Adjusted:
    return (app or programme.runtime.app).adjust(
        msisdn, points, adjustment_id=adjustment_id, reason=reason, requested_by=requested_by,
        approved_by=approved_by, at=at(when))


def events_stored(programme) -> int:
    return programme.runtime.app.recorder.max_notification_id() or 0


def given_anna(p: Programme) -> Programme:
    """Anna: 10 points expiring 2027-01-10 (lot 2, credited second) and 20
    expiring 2027-03-05 (lot 1, credited first)."""
    p.enroll(ANNA, "2026-01-01 00:00")
    p.ballyplus(ANNA, 20, "2026-03-05 10:00")
    p.ballyplus(ANNA, 10, "2026-01-10 10:00")
    return p


@pytest.fixture
def anna(programme):
    return given_anna(programme)


# -- the domain, through the application ------------------------------------------------------


def test_a_credit_opens_a_lot_dated_that_moscow_day_that_expires_twelve_months_later(anna):
    # when 25 points are credited at 23:30 UTC on 1 April: 02:30 on 2 April in Moscow
    result = adjust(anna, 25, when="2026-04-02T02:30")
    # then a lot of 25 dated 2026-04-02 expiring 2027-04-02 joins the other two: 30 + 25 = 55
    assert result == Adjusted("adj-1", ANNA, 25, 55, False)
    assert anna.balance(ANNA) == 55
    assert anna.lots(ANNA) == [("2026-01-10", "2027-01-10", 10), ("2026-03-05", "2027-03-05", 20),
                               ("2026-04-02", "2027-04-02", 25)]
    account = anna.runtime.app.member(ANNA)
    assert [(lot.lot_id, lot.remaining) for lot in account.lots][-1] == (3, 25)


def test_a_debit_takes_the_lots_that_expire_first(anna):
    # when 15 points are taken
    result = adjust(anna, -15)
    # then 10 come from lot 2 (expiring 2027-01-10) and 5 from lot 1 (2027-03-05): 30 - 15 = 15
    assert (result.points, result.balance_after) == (-15, 15)
    assert anna.lots(ANNA) == [("2026-03-05", "2027-03-05", 15)]
    line = anna.history(ANNA)[-1]
    assert [lot[:2] for lot in line["detail"]["lots"]] == [[2, 10], [1, 5]]


def test_a_debit_beyond_the_balance_is_refused_and_changes_nothing(anna):
    before = (anna.balance(ANNA), anna.lots(ANNA), anna.history(ANNA), events_stored(anna))
    # when 31 of Anna's 30 points are to be taken
    with pytest.raises(InsufficientPoints) as refused:
        adjust(anna, -31, adjustment_id="big")
    # then nothing is stored: no event, no inbox row, so the same id can be applied later
    assert refused.value.reason == "insufficient_points"
    assert (anna.balance(ANNA), anna.lots(ANNA), anna.history(ANNA), events_stored(anna)) == before
    assert anna.runtime.app.recorder.select_inbox([(ADJUSTMENTS_TOPIC, "big")]) == {}
    assert anna.runtime.app.adjustment(ANNA, "big") is None
    # a debit of the whole balance is allowed: 30 - 30 = 0
    assert adjust(anna, -30, adjustment_id="big").balance_after == 0


def test_the_same_adjustment_twice_is_applied_once_and_answered_the_same(anna):
    first = adjust(anna, 7)
    again = adjust(anna, 7, when="2026-04-01T12:05")  # a retry, a little later: the same request
    # 30 + 7 = 37, once
    assert again == Adjusted("adj-1", ANNA, 7, 37, True) and first.duplicate is False
    assert anna.balance(ANNA) == 37
    assert anna.runtime.app.adjustment(ANNA, "adj-1") == 37
    assert [line["kind"] for line in anna.history(ANNA)].count("adjusted") == 1


def test_the_same_id_for_another_request_is_refused_as_idempotency_conflict(anna, programme):
    programme.enroll(BORIS, "2026-01-01 00:00")
    adjust(anna, 7)
    for other in (dict(points=8), dict(msisdn=BORIS), dict(reason=WHY + "!"), dict(approved_by="petr"),
                  dict(requested_by="petr")):
        with pytest.raises(IdempotencyConflict) as refused:
            adjust(anna, **{"points": 7, **other})
        assert refused.value.reason == "idempotency_conflict"
    assert (anna.balance(ANNA), anna.balance(BORIS)) == (37, 0)


@pytest.mark.parametrize("points", [0, True, 2.5, "5", 10_000_001, -10_000_001])
def test_an_adjustment_is_a_whole_number_of_points_up_to_ten_million_either_way(anna, points):
    with pytest.raises(RuleRefusal) as refused:
        adjust(anna, points)
    assert refused.value.reason == "invalid_points"
    assert anna.balance(ANNA) == 30


@pytest.mark.parametrize("request_, reason", [
    (dict(reason="too short"), "invalid_adjustment"),  # 9 characters
    (dict(reason="          x"), "invalid_adjustment"),  # blanks do not count
    (dict(reason="x" * 501), "invalid_adjustment"),
    (dict(requested_by=""), "invalid_adjustment"),
    (dict(approved_by=""), "invalid_adjustment"),
    (dict(adjustment_id=""), "invalid_adjustment"),
    (dict(approved_by="olga"), "self_approval"),  # the requester cannot be the second pair of eyes
    (dict(msisdn="89990013001"), "invalid_msisdn"),
])
def test_a_malformed_request_is_refused_with_a_reason(anna, request_, reason):
    with pytest.raises(RuleRefusal) as refused:
        adjust(anna, 5, **request_)
    assert refused.value.reason == reason
    assert anna.balance(ANNA) == 30


def test_reasons_of_ten_and_five_hundred_characters_and_no_approver_are_accepted(anna):
    assert adjust(anna, 1, adjustment_id="a", reason="x" * 10, approved_by=None).balance_after == 31
    assert adjust(anna, 1, adjustment_id="b", reason="x" * 500).balance_after == 32


def test_only_an_enrolled_member_is_adjusted(programme):
    # a member whose events are held (not enrolled yet), and an unknown number
    programme.ballyplus(BORIS, 50, "2026-03-01 10:00")
    for msisdn in (BORIS, "79990013999"):
        with pytest.raises(NotEnrolled) as refused:
            adjust(programme, 5, adjustment_id=msisdn, msisdn=msisdn)
        assert refused.value.reason == "not_enrolled"


# -- the read models ------------------------------------------------------------------------------


def test_the_history_line_names_the_adjustment_its_staff_and_its_lots(anna):
    adjust(anna, 25, adjustment_id="adj-c", when="2026-04-02T10:00")
    adjust(anna, -12, adjustment_id="adj-d", approved_by=None, when="2026-04-03T10:00")
    credit, debit = anna.history(ANNA)[-2:]
    assert {k: credit[k] for k in ("kind", "points", "rule", "reason", "source_event_id", "lot_id", "lot_date",
                                   "expires_on")} == {
        "kind": "adjusted", "points": 25, "rule": "adjustment", "reason": "adjustment", "source_event_id": "adj-c",
        "lot_id": 3, "lot_date": "2026-04-02", "expires_on": "2027-04-02"}
    assert credit["detail"] == {"adjustment_id": "adj-c", "reason": WHY, "requested_by": "olga",
                                "approved_by": "ivan", "lots": [[3, 25, "2026-04-02", "2027-04-02"]]}
    # the debit of 12: all 10 of lot 2 (expiring 2027-01-10), 2 of lot 1 (2027-03-05)
    assert (debit["kind"], debit["points"], debit["rule"], debit["reason"], debit["source_event_id"]) == (
        "adjusted", -12, None, "adjustment", "adj-d")
    assert debit["detail"]["approved_by"] is None
    assert debit["detail"]["lots"] == [[2, 10, "2026-01-10", "2027-01-10"], [1, 2, "2026-03-05", "2027-03-05"]]
    # the history adds up to the balance: 30 + 25 - 12 = 43
    assert sum(line["points"] for line in anna.history(ANNA)) == anna.balance(ANNA) == 43


def test_the_books_carry_adjustments_signed_and_replay_audit_and_verify_agree(programme_on, database_url):
    p = given_anna(programme_on)
    p.enroll(BORIS, "2026-01-01 00:00")
    p.tick("2026-03-06")  # closes the first period: 20 + 10 issued
    adjust(p, 25, adjustment_id="c-1", when="2026-03-10T10:00")
    adjust(p, -12, adjustment_id="d-1", when="2026-03-11T10:00")
    adjust(p, 4, adjustment_id="c-2", msisdn=BORIS, when="2026-03-12T10:00")
    p.tick("2026-03-13")
    first, second = (period.as_dict() for period in p.books())
    assert (first["opening"], first["adjusted"], first["closing"]) == (0, 0, 30)
    # 30 + 25 - 12 + 4 = 47: the adjustments net +17, nothing else moved
    assert (second["opening"], second["issued"]["ballyplus"], second["adjusted"], second["closing"]) == (30, 0, 17, 47)
    assert p.balances() == {ANNA: 43, BORIS: 4} == p.balances_at_tick("2026-03-13")
    # the cohorts: January's lot gave 10 to the debit, March's gave 2 and got 25 + 4
    cohorts = {c.month: c for c in cohorts_of(p)}
    assert (cohorts["2026-01"].adjusted, cohorts["2026-03"].adjusted) == (-10, 25 + 4 - 2)
    assert (cohorts["2026-01"].issued, cohorts["2026-03"].issued) == (10, 20)  # adjustments are not issued
    assert sum(c.outstanding for c in cohorts.values()) == 47
    live = {"books": [row.as_dict() for row in p.books()], "history": p.history(ANNA), "balances": p.balances(),
            "lots": p.lots(ANNA), "cohorts": [(c.month, c.flows) for c in cohorts_of(p)]}
    # replay rebuilds the same read models; audit finds no difference; verify finds the log intact
    assert p.runtime.audit() == []
    p.runtime.replay()
    assert {"books": [row.as_dict() for row in p.books()], "history": p.history(ANNA), "balances": p.balances(),
            "lots": p.lots(ANNA), "cohorts": [(c.month, c.flows) for c in cohorts_of(p)]} == live
    verified = CliRunner().invoke(cli, ["verify", "--json"], env={"ACCRUAL_DATABASE_URL": database_url},
                                  catch_exceptions=False)
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.stdout)
    assert report["events"] == report["chained"] == events_stored(p)


def cohorts_of(p: Programme) -> list:
    p.runtime.projector.catch_up()
    return Cohorts(p.runtime.db).all()


def test_the_export_lists_each_adjustment(programme, sqlite_url):
    p = given_anna(programme)
    adjust(p, -12, adjustment_id="d-1", when="2026-03-11T10:00")
    p.tick("2026-03-13")
    rows = list(csv.DictReader(io.StringIO(accrual(sqlite_url, "export", "history", "--csv", "-"))))
    adjusted = [r for r in rows if r["kind"] == "adjusted"]
    assert [(r["measure"], r["points"], r["reason"], r["source_event_id"]) for r in adjusted] == [
        ("adjusted", "-12", "adjustment", "d-1")]


def test_books_and_cohorts_of_a_store_without_them_are_filled_with_its_adjustments(programme_on):
    """A store whose read models predate the books (and the cohorts) gets
    them from its history on start: the adjustments are booked as the
    projector books them."""
    p = given_anna(programme_on)
    adjust(p, 25, adjustment_id="c-1")
    adjust(p, -12, adjustment_id="d-1")
    p.runtime.projector.catch_up()
    books, cohorts = Books(p.runtime.db).open_period(), cohorts_of(p)
    # 25 - 12 = 13 adjusted, net
    assert books["adjusted"] == {"": 13}
    with p.runtime.db.transaction() as tx:
        tx.execute("DELETE FROM rm_books")
        tx.execute("DELETE FROM rm_cohorts")
    p.runtime.projector.create_tables()
    assert Books(p.runtime.db).open_period() == books
    assert cohorts_of(p) == cohorts


def accrual(url: str, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"ACCRUAL_DATABASE_URL": url},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_liability_report_shows_the_adjusted_column(programme, sqlite_url, tmp_path):
    p = given_anna(programme)
    p.tick("2026-03-06")
    adjust(p, -12, adjustment_id="d-1", when="2026-03-11T10:00")
    p.tick("2026-03-13")
    rows = json.loads(accrual(sqlite_url, "report", "liability", "--json"))
    # 30 - 12 = 18
    assert [(r["adjusted"], r["closing"]) for r in rows] == [(0, 30), (-12, 18)]
    table = list(csv.DictReader(io.StringIO(accrual(sqlite_url, "report", "liability", "--csv"))))
    assert [(r["adjusted"], r["closing"]) for r in table] == [("0", "30"), ("-12", "18")]
    text = accrual(sqlite_url, "report", "liability")
    assert "adjusted" in text and "-12" in text and "18" in text
    accrual(sqlite_url, "report", "liability", "--chart", str(tmp_path / "liability.png"))
    assert (tmp_path / "liability.png").read_bytes().startswith(b"\x89PNG")
    breakage = list(csv.DictReader(io.StringIO(accrual(sqlite_url, "report", "breakage", "--csv"))))
    # January's lot of 10 gave all 10 to the debit; March's gave 2: 20 - 2 = 18 outstanding
    assert [(r["cohort"], r["adjusted"], r["outstanding"]) for r in breakage] == [
        ("2026-01", "-10", "0"), ("2026-03", "-2", "18")]


def test_the_member_s_history_on_the_command_line_names_the_staff(anna, sqlite_url):
    adjust(anna, 5)
    text = accrual(sqlite_url, "history", ANNA)
    assert "adjusted" in text and "olga" in text


# -- many callers at once, on SQLite and PostgreSQL ---------------------------------------------


def _application(url: str) -> AccrualApplication:
    """One more 'process': its own application, with a small connection pool."""
    settings = settings_for(url)
    env = eventsourcing_env(settings.database, settings.cache_size)
    if settings.database.is_postgres:
        env.update(POSTGRES_POOL_SIZE="1", POSTGRES_MAX_OVERFLOW="2")
    return AccrualApplication(env=env, rules=load_rules())


def _at_once(url: str, callers: int, call) -> list:
    apps = [_application(url) for _ in range(callers)]
    start = threading.Barrier(callers)

    def one(n: int):
        start.wait()
        return call(apps[n], n)

    try:
        with ThreadPoolExecutor(callers) as pool:
            return list(pool.map(one, range(callers)))
    finally:
        for app in apps:
            app.close()


def test_twenty_debits_at_once_never_take_the_balance_below_zero(database_url):
    with Runtime(settings_for(database_url)) as runtime:
        given_anna(Programme(runtime))

    def call(app: AccrualApplication, n: int) -> int | None:
        try:
            return adjust(None, -4, adjustment_id=f"d-{n}", app=app).balance_after
        except InsufficientPoints:
            return None

    outcomes = _at_once(database_url, 20, call)
    # 30 points cover 7 debits of 4 (28), leaving 2; the other 13 are refused
    assert sorted(o for o in outcomes if o is not None) == [2, 6, 10, 14, 18, 22, 26]
    assert outcomes.count(None) == 13
    with Runtime(settings_for(database_url)) as runtime:
        p = Programme(runtime)
        assert p.balance(ANNA) == 2 and p.lots(ANNA) == [("2026-03-05", "2027-03-05", 2)]
        assert runtime.audit() == []


def test_twenty_calls_with_one_id_apply_it_once_and_answer_the_same(database_url):
    with Runtime(settings_for(database_url)) as runtime:
        given_anna(Programme(runtime))
    results = _at_once(database_url, 20, lambda app, n: adjust(None, -4, adjustment_id="same", app=app))
    # one debit, 30 - 4 = 26; every caller has that answer (at most one of them first)
    assert sum(not r.duplicate for r in results) <= 1
    assert {(r.adjustment_id, r.points, r.balance_after) for r in results} == {("same", -4, 26)}
    with Runtime(settings_for(database_url)) as runtime:
        p = Programme(runtime)
        assert p.balance(ANNA) == 26
        assert [line["kind"] for line in p.history(ANNA)].count("adjusted") == 1
        assert runtime.audit() == []


# -- outbound: the points-events topic ----------------------------------------------------------


@pytest.mark.kafka
def test_the_adjustment_is_published_as_points_adjusted_without_the_staff_s_text(
    kafka_bootstrap, kafka_prefix, sqlite_url
):
    from tests.kafka_support import names_for, publish_to_kafka, read_topic

    names = names_for(kafka_prefix)
    with Runtime(settings_for(sqlite_url)) as runtime:
        p = given_anna(Programme(runtime))
        adjust(p, 25, adjustment_id="c-1", when="2026-04-02T10:00")
        adjust(p, -12, adjustment_id="d-1", when="2026-04-03T10:00")

        publish_to_kafka(runtime, names, kafka_bootstrap)
    published = [json.loads(r.value) for r in read_topic(kafka_bootstrap, names.points_events)]
    adjusted = [m for m in published if m["event_type"] == "PointsAdjusted"]
    # 30 + 25 = 55, then 55 - 12 = 43
    assert [{k: m[k] for k in ("msisdn", "points", "rule", "reason", "source_event_id", "lot_date", "expires_on",
                               "balance_after")} for m in adjusted] == [
        {"msisdn": ANNA, "points": 25, "rule": "adjustment", "reason": "adjustment", "source_event_id": "c-1",
         "lot_date": "2026-04-02", "expires_on": "2027-04-02", "balance_after": 55},
        {"msisdn": ANNA, "points": -12, "rule": None, "reason": "adjustment", "source_event_id": "d-1",
         "lot_date": None, "expires_on": None, "balance_after": 43},
    ]
    assert not any(WHY in json.dumps(m, ensure_ascii=False) for m in published)
    assert not any("olga" in json.dumps(m) for m in published)
