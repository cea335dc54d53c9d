"""The engine against real stores (SQLite and PostgreSQL): transactions,
idempotency across processes, snapshots and the set-aside of defects."""
from __future__ import annotations

from accrual.runtime import Runtime
from engine.account import MemberAccount
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
