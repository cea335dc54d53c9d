"""The stored events: every member-account event states its effect on the
points, and the fast transcoder writes the library's own bytes and reads
them as the library does."""
from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder

from accrual.intake import read_batches
from accrual.runtime import Runtime
from engine.account import MemberAccount
from engine.effects import NO_EFFECT, credit, debit, give_back
from engine.lots import Allocation, Lot, Portion
from engine.transcoding import OrjsonTranscoder, register_transcodings
from tests.conftest import SAMPLE, settings_for
from tests.programme import RECEIVED_AT

OLD_STORE = Path(__file__).parent / "data" / "old_store" / "accrual.sqlite3"


def member_account_events() -> list[type]:
    """The events a member account records (`Event` and the library's
    `Created` are only their bases)."""
    return [
        value for value in vars(MemberAccount).values()
        if isinstance(value, type) and issubclass(value, MemberAccount.Event)
        and value not in (MemberAccount.Event, MemberAccount.Created)
    ]


def test_every_member_account_event_states_its_effect():
    unstated = MemberAccount.Event.__dict__["effect"]
    events = member_account_events()
    assert len(events) == 17
    missing = [cls.__name__ for cls in events if cls.effect is unstated]
    assert missing == [], "these events do not say what they do to the points"


def test_an_event_that_does_not_state_its_effect_cannot_be_applied():
    class Silent(MemberAccount.Event):
        pass

    account = MemberAccount("79990000001")
    with pytest.raises(NotImplementedError, match="does not state its effect"):
        Silent(originator_id=account.id, originator_version=2, timestamp=RECEIVED_AT).apply(account)


def test_an_effect_is_the_sum_of_its_lot_changes():
    # a clawback of 7 points from lots 1 (5) and 2 (2), 3 more uncollected
    lots = [Lot(1, date(2026, 1, 5), date(2027, 1, 5), 5), Lot(2, date(2026, 2, 1), date(2027, 2, 1), 4)]
    effect = debit((Allocation(1, 5), Allocation(2, 2)), uncollected=3)
    assert (effect.points, effect.uncollected) == (-7, 3)
    assert effect.apply_to(lots) == [Lot(2, date(2026, 2, 1), date(2027, 2, 1), 2)]
    # a cancelled debit gives 5 back to lot 1, which had emptied: it comes back with its dates
    back = give_back((Portion(1, 5, date(2026, 1, 5), date(2027, 1, 5)),))
    assert back.points == 5
    assert back.apply_to(effect.apply_to(lots)) == [
        Lot(2, date(2026, 2, 1), date(2027, 2, 1), 2), Lot(1, date(2026, 1, 5), date(2027, 1, 5), 5)]
    assert credit((Lot(3, date(2026, 3, 1), date(2027, 3, 1), 8),), "usage").points == 8
    assert NO_EFFECT.apply_to(lots) is lots


def test_each_event_of_the_sample_states_the_points_it_records(tmp_path):
    """An event's own `points` field (where it has one) and its effect agree:
    credits add, debits take, a clawback takes what the balance covered."""
    with Runtime(settings_for(f"sqlite:///{tmp_path / 'a.sqlite3'}")) as runtime:
        for path in sorted(SAMPLE.glob("*.jsonl")):
            runtime.apply(read_batches(path, 500, RECEIVED_AT))
        runtime.tick(date(2026, 12, 1))
        kinds = set()
        for notification in runtime.app.recorder.select_notifications(start=1, limit=10**6):
            event = runtime.app.mapper.to_domain_event(notification)
            if not isinstance(event, MemberAccount.Event):
                continue
            kinds.add(type(event).__name__)
            effect = event.effect
            taken = sum(a.points for a in effect.taken)
            added = sum(lot.remaining for lot in effect.opened) + sum(p.points for p in effect.returned)
            assert effect.points == added - taken
            if isinstance(event, (MemberAccount.PointsClawedBack, MemberAccount.PointsExpired)):
                assert effect.points == -event.points
            if isinstance(event, MemberAccount.PointsAccrued):
                assert effect.points == event.points > 0
        assert {"PointsAccrued", "PointsClawedBack", "PointsExpired", "UsageCounted"} <= kinds


def library_transcoder() -> JSONTranscoder:
    transcoder = JSONTranscoder()
    Application.register_transcodings(None, transcoder)  # the library's own: UUID, Decimal, datetime
    register_transcodings(transcoder)
    return transcoder


def test_the_orjson_transcoder_writes_the_library_bytes_for_every_stored_event(tmp_path):
    with Runtime(settings_for(f"sqlite:///{tmp_path / 'a.sqlite3'}")) as runtime:
        for path in sorted(SAMPLE.glob("*.jsonl")):
            runtime.apply(read_batches(path, 500, RECEIVED_AT))
        runtime.tick(date(2026, 12, 1))
        notifications = runtime.app.recorder.select_notifications(start=1, limit=10**6)
        assert len(notifications) > 5_000
        ours, theirs = runtime.app.mapper.transcoder, library_transcoder()
        assert isinstance(ours, OrjsonTranscoder)
        for notification in notifications:
            state = theirs.decode(notification.state)
            assert ours.decode(notification.state) == state
            assert ours.encode(state) == theirs.encode(state) == notification.state, notification.topic


def test_old_events_read_by_the_orjson_transcoder_encode_as_the_library_would(tmp_path):
    shutil.copy(OLD_STORE, tmp_path / "old.sqlite3")
    with Runtime(settings_for(f"sqlite:///{tmp_path / 'old.sqlite3'}")) as runtime:
        ours, theirs = runtime.app.mapper.transcoder, library_transcoder()
        for notification in runtime.app.recorder.select_notifications(start=1, limit=10**6):
            event = runtime.app.mapper.to_domain_event(notification)  # version 2, upcast
            stored = runtime.app.mapper.to_stored_event(event)
            assert stored.state == theirs.encode(theirs.decode(stored.state))
            assert ours.encode(theirs.decode(stored.state)) == stored.state
            assert ours.decode(notification.state) == theirs.decode(notification.state)
