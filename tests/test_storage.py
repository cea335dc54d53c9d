"""The engine against real stores (SQLite and PostgreSQL): transactions,
idempotency across processes, snapshots, loading accounts in bulk, the
recorder's refusal of a second writer, and the set-aside of defects."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from accrual.runtime import Runtime
from engine.account import MemberAccount
from engine.ids import member_id, mgts_account_id
from engine.messages import APPLIED, InboxRow
from engine.unit_of_work import LATEST
from tests.conftest import settings_for
from tests.programme import Programme

MSISDN = "79990001234"


def test_two_writers_on_one_store_count_every_message_once(database_url):
    with Runtime(settings_for(database_url)) as first, Runtime(settings_for(database_url)) as second:
        a, b = Programme(first), Programme(second)
        a.enroll(MSISDN, "2026-01-01 00:00")
        b.usage(MSISDN, "10.00", "2026-01-02")  # second loads the account...
        a.usage(MSISDN, "15.00", "2026-01-03")  # ...first's cached copy is now stale: conflict, reload, retry
        message = a.message("usage_charged", "2026-01-04", event_id="shared-1", msisdn=MSISDN,
                            service="tv", amount="5.00")
        assert a.send(message).outcomes["applied"] == 1
        assert b.send(message).outcomes["duplicate"] == 1
        # 10 + 15 + 5 = 30 RUB in January: floor(30 / 5) = 6 points
        assert b.balance(MSISDN) == 6
        assert a.balance(MSISDN) == 6


def test_a_message_that_breaks_the_engine_is_set_aside_and_the_rest_applies(programme, monkeypatch):
    programme.enroll(MSISDN, "2026-01-01 00:00")
    programme.enroll("79990004321", "2026-01-01 00:00")
    original = MemberAccount.charge_usage

    def breaks_for_one_member(self, *args, **kwargs):
        if self.msisdn == "79990004321":
            raise RuntimeError("a defect")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MemberAccount, "charge_usage", breaks_for_one_member)
    report = programme.send(
        programme.message("usage_charged", "2026-01-02", msisdn=MSISDN, service="tv", amount="50.00"),
        programme.message("usage_charged", "2026-01-02", msisdn="79990004321", service="tv", amount="50.00"),
        programme.message("usage_charged", "2026-01-03", msisdn=MSISDN, service="tv", amount="50.00"),
    )
    assert report.outcomes["applied"] == 2
    assert report.rejected == {"internal_error": 1}
    assert programme.balance(MSISDN) == 20  # 100 RUB / 5
    assert programme.balance("79990004321") == 0
    assert programme.runtime.reads.rejections_by_reason() == {"internal_error": 1}


def test_a_long_lived_account_reloads_from_its_snapshot(database_url):
    with Runtime(settings_for(database_url)) as runtime:
        programme = Programme(runtime)
        programme.enroll(MSISDN, "2026-01-01 00:00")
        lines = [
            programme.message("usage_charged", f"2026-01-{1 + i % 28:02d}", msisdn=MSISDN,
                              service="mobile", amount="5.00")
            for i in range(450)
        ]
        for start in range(0, len(lines), 150):
            programme.send(*lines[start:start + 150])
        account = runtime.app.member(MSISDN)
        assert account.version > 400
        assert runtime.app.snapshots is not None
        snapshots = list(runtime.app.snapshots.get(account.id, desc=True, limit=1))
        assert snapshots and snapshots[0].originator_version >= 400
    with Runtime(settings_for(database_url)) as fresh:  # a cold cache
        reloaded = fresh.app.member(MSISDN)
        assert reloaded.balance == 450  # 450 charges of 5 RUB
        assert reloaded.version == account.version
        assert reloaded.lots == account.lots


def test_replay_rebuilds_identical_read_models(programme_on):
    programme = programme_on
    programme.enroll(MSISDN, "2025-01-01 00:00")
    programme.usage(MSISDN, "123.45", "2025-01-10")
    programme.card_purchase(MSISDN, "12000.00", "2025-01-12")
    programme.purchase(MSISDN, "R-1", [("l1", "mts_branded", "300.00"), ("l2", "other", "90.00")], "2025-01-13")
    programme.shop_return(MSISDN, "R-1", [("l1", "150.00")], "2025-01-20")
    programme.tick("2025-02-25")
    programme.tick("2026-03-01")
    before = programme.balances()
    assert programme.runtime.audit() == []
    programme.runtime.replay()
    assert programme.balances() == before
    assert programme.runtime.audit() == []


def _usage_lines(programme: Programme, msisdn: str, count: int) -> None:
    lines = [
        programme.message("usage_charged", f"2026-01-{1 + i % 28:02d}", msisdn=msisdn, service="mobile", amount="5.00")
        for i in range(count)
    ]
    for start in range(0, len(lines), 150):
        programme.send(*lines[start:start + 150])


def test_accounts_load_in_bulk_as_the_repository_loads_them_one_by_one(database_url):
    long_lived, short, snapped, mgts = "79990001234", "79990004321", "79990005555", "MGTS00000001"
    with Runtime(settings_for(database_url)) as runtime:
        programme = Programme(runtime)
        for msisdn in (long_lived, short, snapped):
            programme.enroll(msisdn, "2026-01-01 00:00")
        _usage_lines(programme, long_lived, 450)  # snapshots every 200 events: the latest one and the events after
        programme.usage(short, "10.00", "2026-01-02")  # no snapshot
        programme.usage(snapped, "10.00", "2026-01-02")
        programme.link_mgts(mgts, short, "2026-01-02 10:00")
        runtime.app.take_snapshot(member_id(snapped))  # a snapshot and no event after it
    ids = [member_id(long_lived), member_id(short), member_id(snapped), mgts_account_id(mgts), member_id("79990009999")]
    with Runtime(settings_for(database_url)) as fresh:  # nothing in memory
        app = fresh.app
        records = app.recorder.select_snapshots_and_events(ids, snapshots=app.snapshots.recorder, page=2)
        assert set(records) == set(ids[:4])  # the missing id is left out
        snapshot, events = records[member_id(long_lived)]
        latest = max(s.originator_version for s in app.snapshots.get(member_id(long_lived)))
        assert snapshot.originator_version == latest >= 400
        versions = [e.originator_version for e in events]
        assert versions == list(range(latest + 1, latest + 1 + len(versions))) and versions
        assert records[member_id(short)][0] is None
        assert [e.originator_version for e in records[member_id(short)][1]][:2] == [1, 2]
        assert records[member_id(snapped)][1] == []
        for fresh_read in (False, True):
            loaded = app.load_aggregates(ids, fresh=fresh_read)
            assert set(loaded) == set(ids[:4])
            for aggregate_id, aggregate in loaded.items():
                assert vars(aggregate) == vars(app.repository.get(aggregate_id, version=LATEST))
        cached = app.load_aggregates(ids)
        assert all(app.is_cached(i) for i in ids[:4])  # as `repository.get` leaves them
        assert app.load_aggregates(ids)[member_id(long_lived)] is cached[member_id(long_lived)]


def _stored(aggregate_id: UUID, version: int) -> StoredEvent:
    return StoredEvent(aggregate_id, version, "tests:Event", b"{}")


def _row(key: str) -> InboxRow:
    return InboxRow("tests.topic", key, "fingerprint", APPLIED)


def test_the_recorder_refuses_a_second_writer_of_a_version_or_an_inbox_key(runtime_on):
    recorder = runtime_on.app.recorder
    account = uuid4()
    first = recorder.insert_events([_stored(account, 1), _stored(account, 2)], inbox=[_row("k-1")])
    assert list(first) == [first[0], first[0] + 1]
    with pytest.raises(IntegrityError):
        recorder.insert_events([_stored(uuid4(), 1), _stored(account, 2)])
    with pytest.raises(IntegrityError):
        recorder.insert_events([_stored(uuid4(), 1)], inbox=[_row("k-1")])
    assert not recorder.insert_events([], inbox=[_row("k-2")])  # inbox rows without events
    later = recorder.insert_events([_stored(account, 3)])
    assert later[0] > first[1]
    stored = recorder.select_notifications(None, 10)
    assert [(n.originator_id, n.originator_version) for n in stored] == [(account, 1), (account, 2), (account, 3)]
    assert [n.id for n in stored] == [*first, *later]
    assert recorder.select_inbox([("tests.topic", "k-1"), ("tests.topic", "k-2")]) == {
        ("tests.topic", "k-1"): "fingerprint", ("tests.topic", "k-2"): "fingerprint"}


def test_racing_writers_of_one_version_or_one_inbox_key_all_finish_one_wins(runtime_on):
    recorder, writers = runtime_on.app.recorder, 6
    start = threading.Barrier(writers)

    def race(write):
        start.wait()
        try:
            return write()
        except IntegrityError:
            return None

    account = uuid4()
    same_version = [lambda n=n: recorder.insert_events([_stored(account, 1)], inbox=[_row(f"v-{n}")])
                    for n in range(writers)]
    same_key = [lambda: recorder.insert_events([_stored(uuid4(), 1)], inbox=[_row("same")]) for _ in range(writers)]
    for writes in (same_version, same_key):
        with ThreadPoolExecutor(writers) as pool:
            outcomes = [future.result(timeout=60) for future in [pool.submit(race, w) for w in writes]]
        assert sum(outcome is not None for outcome in outcomes) == 1
    assert len(recorder.select_notifications(None, 100)) == 2
