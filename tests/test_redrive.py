"""Dead letters redriven (issue 13): a message set aside as `internal_error`
applied once the defect is fixed, exactly once however many supervisors press
the button; a message still invalid stays a dead letter with every attempt;
the original redelivered afterwards is a duplicate; the read models replay
to the same rows. On SQLite and PostgreSQL."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime

import pytest
from typer.testing import CliRunner

from accrual.cli import app as cli
from accrual.runtime import Runtime
from engine import handlers
from engine.calendar import MOSCOW
from engine.errors import DeadLetterSettledError, RuleRefusal, UnknownDeadLetterError
from engine.ids import rejection_id
from projections import dead_letters as dl
from tests.conftest import settings_for
from tests.programme import Programme
from tests.test_spending_stores import _application

ANNA, BORIS = "79990013001", "79990013002"
BALLYPLUS, SHOP = "partner.ballyplus.v1", "mts.shop.v1"
REDRIVEN_AT = datetime(2026, 12, 1, 10, 0, tzinfo=MOSCOW)


def break_on(monkeypatch, event_id: str) -> None:
    """A defect: the engine breaks on one message (and on no other)."""
    working = handlers.apply

    def broken(uow, topic, event):
        if event.event_id == event_id:
            raise RuntimeError("a defect")
        return working(uow, topic, event)

    monkeypatch.setattr(handlers, "apply", broken)


def an_internal_error(p: Programme, monkeypatch, event_id: str, points: int, msisdn: str = ANNA) -> str:
    """A Баллы Плюс transfer set aside as internal_error, the defect then
    fixed; its dead letter's id."""
    break_on(monkeypatch, event_id)
    assert p.ballyplus(msisdn, points, "2026-03-05 10:00", event_id=event_id).rejected == {"internal_error": 1}
    monkeypatch.undo()
    return str(rejection_id(BALLYPLUS, event_id))


def read_models(runtime: Runtime) -> dict[str, list]:
    runtime.projector.catch_up()
    order = {"rejections": "rejection_id", "redrives": "rejection_id, attempt", "members": "msisdn",
             "lots": "msisdn, lot_id", "history": "msisdn, version"}
    return {t: runtime.db.query(f"SELECT * FROM rm_{t} ORDER BY {o}") for t, o in order.items()}


def test_an_internal_error_is_applied_once_when_redriven_after_the_fix(programme_on, monkeypatch):
    p, app = programme_on, programme_on.runtime.app
    # given Anna enrolled, and a transfer of 40 partner points the engine broke on
    p.enroll(ANNA, "2026-01-01 00:00")
    dead = an_internal_error(p, monkeypatch, "bp-broken", 40)
    assert p.balance(ANNA) == 0
    # when a supervisor redrives it after the fix
    redrive = app.redrive(dead, by="olga", at=REDRIVEN_AT)
    # then it is applied as on delivery: 40 x 1 = 40 points, in one lot of its date
    assert (redrive.outcome, redrive.attempt, redrive.applied_as, redrive.duplicate) == ("applied", 2, "applied", False)
    assert p.balance(ANNA) == 40
    assert p.lots(ANNA) == [("2026-03-05", "2027-03-05", 40)]  # dated the message, 12 months
    assert [h["source_event_id"] for h in p.history(ANNA) if h["kind"] == "accrued"] == ["bp-broken"]
    # and the dead letter is settled, with both attempts shown
    letter = dl.dead_letter(p.runtime.db, p.runtime.projector.names, dead)
    assert letter is not None and letter.status == "redriven" and letter.reason == "internal_error"
    assert [(a.number, a.by, a.outcome, a.reason) for a in letter.attempts] == [
        (1, None, "rejected", "internal_error"), (2, "olga", "applied", None)]
    # when it is redriven again, it is refused: 40 more points would count it twice
    with pytest.raises(DeadLetterSettledError) as refused:
        app.redrive(dead, by="olga", at=REDRIVEN_AT)
    assert refused.value.reason == "already_redriven"
    # and when Kafka (or a file) delivers the original again, it is a duplicate
    assert p.ballyplus(ANNA, 40, "2026-03-05 10:00", event_id="bp-broken").outcomes == {"duplicate": 1}
    assert p.balance(ANNA) == 40
    # and the read models rebuilt from the log are the live ones, and audit clean
    live = read_models(p.runtime)
    p.runtime.replay()
    assert read_models(p.runtime) == live
    assert p.runtime.audit() == []


def test_an_unknown_dead_letter_is_refused(programme_on):
    app = programme_on.runtime.app
    for unknown in (str(rejection_id(BALLYPLUS, "never")), "not-an-id"):
        with pytest.raises(UnknownDeadLetterError) as refused:
            app.redrive(unknown, by="olga", at=REDRIVEN_AT)
        assert refused.value.reason == "unknown_dead_letter"


def test_twenty_concurrent_redrives_apply_the_message_once(database_url, monkeypatch):
    with Runtime(settings_for(database_url)) as runtime:
        p = Programme(runtime)
        # given Anna enrolled, and a transfer of 25 partner points set aside as internal_error
        p.enroll(ANNA, "2026-01-01 00:00")
        dead = an_internal_error(p, monkeypatch, "bp-race", 25)
    # when 20 supervisors (each in a process of their own) redrive it at once
    callers = 20
    apps = [_application(database_url) for _ in range(callers)]
    start = threading.Barrier(callers)

    def call(app):
        start.wait()
        try:
            return app.redrive(dead, by="olga", at=REDRIVEN_AT).outcome
        except RuleRefusal as refusal:
            return refusal.reason

    try:
        with ThreadPoolExecutor(callers) as pool:
            outcomes = list(pool.map(call, apps))
    finally:
        for app in apps:
            app.close()
    # then one applied it and 19 were refused
    assert sorted(outcomes) == ["already_redriven"] * 19 + ["applied"]
    with Runtime(settings_for(database_url)) as runtime:
        p = Programme(runtime)
        # and the 25 points are counted once: 0 + 25 = 25
        assert p.balance(ANNA) == 25
        letter = dl.dead_letter(runtime.db, runtime.projector.names, dead)
        assert letter is not None and [a.outcome for a in letter.attempts] == ["rejected", "applied"]
        assert runtime.audit() == []


def test_a_message_still_invalid_stays_a_dead_letter_with_every_attempt(programme_on):
    p, app = programme_on, programme_on.runtime.app
    # given a usage charge whose msisdn is malformed (the edge rejects it, keyed by its bytes)
    report = p.usage("7999", "50.00", "2026-03-05 10:00", event_id="u-bad")
    assert report.rejected == {"invalid_msisdn": 1}
    [letter] = dl.dead_letters(p.runtime.db, p.runtime.projector.names, reason="invalid_msisdn").dead_letters
    # when it is redriven, twice
    first = app.redrive(letter.id, by="olga", at=REDRIVEN_AT)
    second = app.redrive(letter.id, by="ivan", at=REDRIVEN_AT)
    # then both are rejected for the same reason, and it stays an open dead letter with three attempts
    assert (first.outcome, first.reason, first.attempt) == ("rejected", "invalid_msisdn", 2)
    assert (second.outcome, second.reason, second.attempt) == ("rejected", "invalid_msisdn", 3)
    p.runtime.projector.catch_up()
    page = dl.dead_letters(p.runtime.db, p.runtime.projector.names, status="open")
    assert page.total == 1
    [again] = page.dead_letters
    assert again.status == "open"
    assert [(a.number, a.by, a.reason) for a in again.attempts] == [
        (1, None, "invalid_msisdn"), (2, "olga", "invalid_msisdn"), (3, "ivan", "invalid_msisdn")]
    assert again.original.text is not None and '"msisdn": "7999"' in again.original.text
    # and nothing was written for it elsewhere; the store replays to the same rows
    assert p.balances() == {}
    live = read_models(p.runtime)
    p.runtime.replay()
    assert read_models(p.runtime) == live


def test_a_return_refused_before_its_purchase_applies_when_redriven_after_it(programme_on):
    p, app = programme_on, programme_on.runtime.app
    # given Anna enrolled, and a return that came before its purchase (unknown_receipt)
    p.enroll(ANNA, "2026-01-01 00:00")
    assert p.shop_return(ANNA, "R-1", [("l1", "100.00")], "2026-03-06 10:00", event_id="ret-1").rejected == {
        "unknown_receipt": 1}
    # and then the purchase: an mts_branded line of 300.00 earns floor(300 / 3) = 100
    p.purchase(ANNA, "R-1", [("l1", "mts_branded", "300.00")], "2026-03-05 10:00")
    assert p.balance(ANNA) == 100
    # when the return of 100.00 of it is redriven, it applies as on a first delivery now
    redrive = app.redrive(str(rejection_id(SHOP, "ret-1")), by="olga", at=REDRIVEN_AT)
    assert redrive.outcome == "applied"
    # then the points of the returned part go back: the line keeps 200.00, floor(200 / 3) = 66; 100 - 34 = 66
    assert p.balance(ANNA) == 66
    assert p.runtime.audit() == []


def test_a_message_a_redrive_held_is_opened_again_when_refused_at_the_enrollment(programme_on, monkeypatch):
    p, app = programme_on, programme_on.runtime.app
    # given a return of Boris, who is not enrolled, that the engine broke on (then fixed)
    break_on(monkeypatch, "ret-2")
    assert p.shop_return(BORIS, "R-9", [("l1", "10.00")], "2026-03-06 10:00", event_id="ret-2").rejected == {
        "internal_error": 1}
    monkeypatch.undo()
    dead = str(rejection_id(SHOP, "ret-2"))
    # when it is redriven, it is held on his account, as a first delivery would be
    redrive = app.redrive(dead, by="olga", at=REDRIVEN_AT)
    assert (redrive.outcome, redrive.applied_as) == ("applied", "held")
    # and when Boris enrolls, the held return is refused (no purchase R-9): the dead letter is open again
    assert p.enroll(BORIS, "2026-03-01 00:00").outcomes == {"applied": 1}
    p.runtime.projector.catch_up()
    letter = dl.dead_letter(p.runtime.db, p.runtime.projector.names, dead)
    assert letter is not None and letter.status == "open"
    assert [(a.number, a.outcome, a.reason) for a in letter.attempts] == [
        (1, "rejected", "internal_error"), (2, "applied", None), (3, "rejected", "unknown_receipt")]


def test_the_counts_are_by_reason_and_moscow_day(programme_on):
    p = programme_on
    # given two malformed messages and one refused by the rules, all received at 00:00 UTC on 2026-11-25,
    # 03:00 the same day in Moscow
    p.usage("7999", "50.00", "2026-03-05 10:00")
    p.usage("7998", "50.00", "2026-03-05 10:00")
    p.enroll(ANNA, "2026-01-01 00:00")
    p.shop_return(ANNA, "R-0", [("l1", "1.00")], "2026-03-06 10:00")  # unknown_receipt
    p.runtime.projector.catch_up()
    counts = dl.counts(p.runtime.db, p.runtime.projector.names, date(2026, 11, 25), date(2026, 11, 25))
    assert counts.by_reason == {"invalid_msisdn": 2, "unknown_receipt": 1}
    assert counts.as_dict()["by_day"] == [{"day": "2026-11-25", "reason": "invalid_msisdn", "count": 2},
                                          {"day": "2026-11-25", "reason": "unknown_receipt", "count": 1}]
    assert dl.counts(p.runtime.db, p.runtime.projector.names, date(2026, 11, 26), None).by_reason == {}


def test_the_command_line_lists_and_redrives(sqlite_url, monkeypatch):
    with Runtime(settings_for(sqlite_url)) as runtime:
        p = Programme(runtime)
        p.enroll(ANNA, "2026-01-01 00:00")
        dead = an_internal_error(p, monkeypatch, "bp-cli", 7)
    env = {"ACCRUAL_DATABASE_URL": sqlite_url}
    listed = CliRunner().invoke(cli, ["dead-letters", "list", "--json"], env=env, catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    assert '"internal_error"' in listed.output and dead in listed.output
    done = CliRunner().invoke(cli, ["dead-letters", "redrive", dead, "--by", "olga", "--json"], env=env,
                              catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert '"applied"' in done.output
    again = CliRunner().invoke(cli, ["dead-letters", "redrive", dead, "--by", "olga"], env=env)
    assert again.exit_code != 0 and "already_redriven" in again.output
    with Runtime(settings_for(sqlite_url)) as runtime:
        assert Programme(runtime).balance(ANNA) == 7
