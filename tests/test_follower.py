"""The read models follow the log from a process of their own (a large
`accrual ingest`, the worker): the child writes them, the parent only saves
events, and the result is the read models an inline projector writes."""
from __future__ import annotations

import json

from accrual.follower import Follower
from accrual.intake import inbound_from_line
from accrual.runtime import Runtime
from tests.conftest import settings_for
from tests.programme import RECEIVED_AT, Programme


def messages(programme: Programme, members: int) -> list[bytes]:
    lines = []
    for n in range(members):
        msisdn = f"7999100{n:04d}"
        lines.append(programme.message("member_enrolled", "2026-03-01 10:00", msisdn=msisdn, channel="web"))
        for day in range(1, 6):
            lines.append(programme.message("usage_charged", f"2026-03-{day + 1:02d}", msisdn=msisdn,
                                           service="mobile", amount=f"{5 * (n % 7 + 1)}.00"))
    return [json.dumps(line).encode() for line in lines]


def test_a_follower_process_writes_the_read_models_while_the_parent_saves_events(database_url):
    with Runtime(settings_for(database_url)) as runtime:
        lines = messages(Programme(runtime), 40)
        follower = Follower(runtime.settings).start()
        runtime.app.on_saved = None  # this process writes no read model
        for start in range(0, len(lines), 50):
            runtime.app.process([inbound_from_line(line, RECEIVED_AT) for line in lines[start:start + 50]])
        assert follower.finish(timeout=120)
        # the child reached the end of the log: nothing is left for this process
        assert runtime.projector.position() == runtime.app.recorder.max_notification_id()
        # member n charged 5 x 5(n % 7 + 1) RUB in March: 5(n % 7 + 1) points
        assert runtime.reads.balances() == {f"7999100{n:04d}": 5 * (n % 7 + 1) for n in range(40)}
        assert runtime.audit() == []


def test_apply_with_a_follower_returns_when_the_read_models_show_everything(sqlite_url):
    with Runtime(settings_for(sqlite_url)) as runtime:
        lines = messages(Programme(runtime), 10)
        batches = [[inbound_from_line(line, RECEIVED_AT) for line in lines[i:i + 20]] for i in range(0, len(lines), 20)]
        report = runtime.apply(batches, follower=True)
        assert report.outcomes["applied"] == len(lines)
        assert runtime.reads.balances() == {f"7999100{n:04d}": 5 * (n % 7 + 1) for n in range(10)}


def test_a_long_log_is_rebuilt_by_two_processes_into_the_same_read_models(database_url, monkeypatch):
    """A reader process works out the changes page by page, this process
    writes them; with a map of only 7 account ids the reader has to wait
    for the writer and look ids up in the tables being written."""
    from accrual import rebuild

    monkeypatch.setattr(rebuild, "PARALLEL_MIN_EVENTS", 1)
    with Runtime(settings_for(database_url)) as runtime:
        lines = messages(Programme(runtime), 30)
        runtime.apply([[inbound_from_line(line, RECEIVED_AT) for line in lines]])
        before = runtime.reads.balances()
        history = runtime.reads.history("79991000007")
        runtime.projector.id_cache_max, runtime.projector.rebuild_batch_size = 7, 40
        assert runtime.replay() == runtime.app.recorder.max_notification_id()
        assert runtime.reads.balances() == before == {f"7999100{n:04d}": 5 * (n % 7 + 1) for n in range(30)}
        assert runtime.reads.history("79991000007") == history
        assert runtime.audit() == []
