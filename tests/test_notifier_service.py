"""`accrual notifier` against the real broker, on its TICKS clock (the
test moves time by writing ticks): quiet hours and preferences, the
records it cannot read, and SIGTERM.

The records are written straight to `loyalty.points-events.v1` in the
contract's shape (tests/notifier_support.py's members); the whole engine
in front of the notifier is tests/test_notifier_sample.py's."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from notifier.events import PointsEvent
from tests.kafka_support import read_topic, setup_topics
from tests.notifier_kafka_support import (
    NotifierProcess,
    member_states,
    outbox,
    produce_records,
    tick,
    wait_until_handled,
)
from tests.notifier_support import ANNA, BORIS, Member, at

pytestmark = [pytest.mark.kafka, pytest.mark.xdist_group("kafka")]


def record(event: PointsEvent) -> tuple[bytes, bytes]:
    """A PointsEvent as the engine's publisher writes it (JSON, key msisdn)."""
    value = asdict(event)
    for name in ("occurred_at", "deadline"):
        value[name] = value[name].isoformat() if value[name] else None
    value["lots"] = [{**change, "lot_date": change["lot_date"].isoformat(),
                      "expires_on": change["expires_on"].isoformat(), "change": "opened" if change["points"] > 0
                      else "taken"} for change in value["lots"]]
    return event.msisdn.encode(), json.dumps(value).encode()


def preferences(msisdn: str, off: list[str], version: int) -> tuple[bytes, bytes]:
    return msisdn.encode(), json.dumps({"msisdn": msisdn, "off": off, "version": version,
                                        "updated_at": "2026-12-01T10:00:00+00:00"}).encode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def metric(port: int, name: str, kind: str) -> float:
    """A counter's value from the notifier's /metrics (0 when not there yet)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f'{name}{{kind="{kind}"}} '):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
def running(kafka_bootstrap, kafka_prefix, sqlite_url, tmp_path):
    names = setup_topics(kafka_bootstrap, kafka_prefix)
    port = free_port()
    notifier = NotifierProcess(sqlite_url, kafka_bootstrap, kafka_prefix, tmp_path / "notifier.log",
                               ACCRUAL_NOTIFIER_METRICS_PORT=str(port)).start()
    notifier.metrics_port = port  # type: ignore[attr-defined]
    try:
        yield names, notifier
    finally:
        notifier.kill()


def test_an_offer_at_night_waits_for_nine_and_a_member_who_turned_transfers_off_gets_none(
    running, kafka_bootstrap, sqlite_url
):
    names, notifier = running
    anna, boris = Member(ANNA), Member(BORIS)

    def handled(*topics: str) -> None:
        wait_until_handled(kafka_bootstrap, names, list(topics), notifiers=[notifier])

    # given the notifier's clock at 23:30 Moscow
    tick(kafka_bootstrap, names, at("2026-12-02 23:30"))
    handled(names.notifier_ticks)
    # when boris is offered 500 points at 23:20 (deadline 23:20 tomorrow)
    offer = boris.offered("tr-night", 500, ANNA, "2026-12-02 23:20", "2026-12-03 23:20")
    produce_records(kafka_bootstrap, names.points_events, [record(offer)])
    handled(names.points_events)
    # then nothing is sent yet: the message waits in boris's state for 09:00
    assert outbox(sqlite_url) == []
    (waiting,) = member_states(kafka_bootstrap, names)[BORIS].waiting
    assert waiting.key == f"{BORIS}:transfer_offered:tr-night"
    # when the clock reaches 08:59, still nothing; at 09:00 it is sent, stamped 09:00 Moscow (06:00 UTC)
    tick(kafka_bootstrap, names, at("2026-12-03 08:59"))
    handled(names.notifier_ticks)
    assert outbox(sqlite_url) == []
    tick(kafka_bootstrap, names, at("2026-12-03 09:00"))
    handled(names.notifier_ticks)
    (sent,) = outbox(sqlite_url)
    assert (sent.key, sent.msisdn) == (f"{BORIS}:transfer_offered:tr-night", BORIS)
    assert sent.text == ("+7 916 000-00-01 переводит вам 500\u00a0баллов. "
                         "Примите перевод в личном кабинете до 3 декабря, 23:20 (мск).")
    assert sent.sent_at.startswith("2026-12-03T06:00:00")
    assert member_states(kafka_bootstrap, names)[BORIS].waiting == ()

    # given boris turns transfers off (Settings → loyalty.member-preferences.v1)
    produce_records(kafka_bootstrap, names.member_preferences, [preferences(BORIS, ["transfers"], 2)])
    handled(names.member_preferences)
    # when anna offers him more at 12:00 and he declines an offer of his own to anna
    tick(kafka_bootstrap, names, at("2026-12-03 12:00"))
    handled(names.notifier_ticks)
    second = boris.offered("tr-noon", 100, ANNA, "2026-12-03 11:55", "2026-12-04 11:55")
    produce_records(kafka_bootstrap, names.points_events, [record(second)])
    handled(names.points_events)
    # then he gets nothing: the notification is counted as suppressed, not sent, not kept
    assert [s.key for s in outbox(sqlite_url)] == [f"{BORIS}:transfer_offered:tr-night"]
    assert member_states(kafka_bootstrap, names)[BORIS].waiting == ()
    # when he turns them back on, the next offer reaches him; anna (who never changed anything) gets hers
    produce_records(kafka_bootstrap, names.member_preferences, [preferences(BORIS, [], 3)])
    handled(names.member_preferences)
    third = boris.offered("tr-later", 200, ANNA, "2026-12-03 12:30", "2026-12-04 12:30")
    to_anna = anna.offered("tr-to-anna", 50, BORIS, "2026-12-03 12:31", "2026-12-04 12:31")
    produce_records(kafka_bootstrap, names.points_events, [record(third), record(to_anna)])
    handled(names.points_events)
    assert sorted(s.key for s in outbox(sqlite_url)) == sorted([
        f"{BORIS}:transfer_offered:tr-night", f"{BORIS}:transfer_offered:tr-later", f"{ANNA}:transfer_offered:tr-to-anna",
    ])
    notifier.check_alive()
    # and the metrics say so: one delayed until 09:00, one turned off, three sent
    port = notifier.metrics_port
    assert metric(port, "accrual_notifier_delayed_total", "transfer_offered") == 1
    assert metric(port, "accrual_notifier_suppressed_total", "transfer_offered") == 1
    assert metric(port, "accrual_notifier_sent_total", "transfer_offered") == 3


def test_a_record_it_cannot_read_is_counted_and_skipped_and_sigterm_stops_it_cleanly(
    running, kafka_bootstrap, sqlite_url
):
    names, notifier = running
    boris = Member(BORIS)
    tick(kafka_bootstrap, names, at("2026-12-03 12:00"))
    # given a record that is not JSON and one without its fields, before a good one on the same key
    good = boris.offered("tr-1", 500, ANNA, "2026-12-03 11:00", "2026-12-04 11:00")
    wrong_key = (ANNA.encode(), record(good)[1])  # a record whose key is not its member's
    produce_records(kafka_bootstrap, names.points_events, [
        (BORIS.encode(), b"\xff not json"), (BORIS.encode(), b'{"msisdn": "79160000002"}'), (BORIS.encode(), b"[1]"),
        wrong_key, record(good)])
    wait_until_handled(kafka_bootstrap, names, [names.points_events, names.notifier_ticks], notifiers=[notifier])
    # then the good one is handled, and the notifier still runs
    assert [s.key for s in outbox(sqlite_url)] == [f"{BORIS}:transfer_offered:tr-1"]
    notifier.check_alive()
    log = notifier.log.read_text(errors="replace")
    assert log.count('"msg": "unreadable points event"') == 4
    # when it gets SIGTERM it stops by itself, with exit code 0
    assert notifier.terminate(60) == 0


def test_a_record_of_an_aborted_transaction_is_never_news(running, kafka_bootstrap, sqlite_url):
    names, notifier = running
    boris = Member(BORIS)
    tick(kafka_bootstrap, names, at("2026-12-03 12:00"))
    # given the publisher's transaction with an offer to boris is aborted (in the log, never committed)
    aborted = boris.offered("tr-aborted", 500, ANNA, "2026-12-03 11:00", "2026-12-04 11:00")
    produce_records(kafka_bootstrap, names.points_events, [record(aborted)], transaction="aborted")
    # when a committed record follows it
    committed = boris.offered("tr-committed", 300, ANNA, "2026-12-03 11:05", "2026-12-04 11:05")
    produce_records(kafka_bootstrap, names.points_events, [record(committed)])
    wait_until_handled(kafka_bootstrap, names, [names.points_events, names.notifier_ticks], notifiers=[notifier])
    # then only the committed one is told: the notifier reads read_committed
    assert [s.key for s in outbox(sqlite_url)] == [f"{BORIS}:transfer_offered:tr-committed"]
    notifier.check_alive()


def test_a_changelog_that_ends_in_a_transaction_marker_is_recovered_and_the_notifier_goes_on(
    kafka_bootstrap, kafka_prefix, sqlite_url, tmp_path
):
    """A group upgraded in place from exactly_once (how the notifier ran
    before) finds changelog partitions that end in a commit marker: the
    highwater faust's recovery waits for is the marker's offset, which is
    never delivered, so the recovery (and the agent behind it) waited for
    ever. The recovery's watch (`SeekFirstRecovery._unstall_changelogs`)
    fetches such a partition again, then takes it as recovered."""
    names = setup_topics(kafka_bootstrap, kafka_prefix)
    boris = Member(BORIS)
    # given a notifier told boris of an offer at 12:00 and was stopped
    first = NotifierProcess(sqlite_url, kafka_bootstrap, kafka_prefix, tmp_path / "first.log").start()
    try:
        tick(kafka_bootstrap, names, at("2026-12-03 12:00"))
        offer = boris.offered("tr-1", 500, ANNA, "2026-12-03 11:00", "2026-12-04 11:00")
        produce_records(kafka_bootstrap, names.points_events, [record(offer)])
        wait_until_handled(kafka_bootstrap, names, [names.points_events, names.notifier_ticks], notifiers=[first])
        assert first.terminate(60) == 0
    finally:
        first.kill()
    # and his state was written once more in a committed transaction, as exactly_once wrote it: his
    # changelog partition ends in the transaction's commit marker
    changelog = f"{names.notifier_group}-members-changelog"
    (state,) = [r for r in read_topic(kafka_bootstrap, changelog) if json.loads(r.key) == BORIS]
    produce_records(kafka_bootstrap, changelog, [(state.key, state.value)], transaction="committed",
                    partition=state.partition)
    # when a notifier of the group starts again and boris is offered more
    second = NotifierProcess(sqlite_url, kafka_bootstrap, kafka_prefix, tmp_path / "second.log").start()
    try:
        more = boris.offered("tr-2", 200, ANNA, "2026-12-03 12:10", "2026-12-04 12:10")
        produce_records(kafka_bootstrap, names.points_events, [record(more)])
        wait_until_handled(kafka_bootstrap, names, [names.points_events], notifiers=[second])
        # then it recovered his state through the marker and told him of the new offer only
        assert [s.key for s in outbox(sqlite_url)] == [f"{BORIS}:transfer_offered:tr-1",
                                                       f"{BORIS}:transfer_offered:tr-2"]
        assert member_states(kafka_bootstrap, names)[BORIS].version == more.account_version
        log = second.log.read_text(errors="replace")
        assert "recovery has stalled; fetching it again" in log
        assert "what is left is not data" in log
        second.check_alive()
    finally:
        second.kill()


class Provider:
    """An SMS provider's HTTP endpoint on this machine: it answers 503 while
    `down`, and otherwise takes a message once per Idempotency-Key (as the
    providers that honour the header do), recording every request."""

    def __init__(self) -> None:
        self.down = True
        self.requests: list[tuple[str | None, dict]] = []
        self.taken: dict[str, dict] = {}
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers.get("Idempotency-Key")
                provider.requests.append((key, body))
                if not provider.down and key is not None:
                    provider.taken.setdefault(key, body)
                self.send_response(503 if provider.down else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/send"


def test_while_the_sms_provider_is_down_the_notification_waits_and_is_taken_once_when_it_is_back(
    kafka_bootstrap, kafka_prefix, sqlite_url, tmp_path
):
    names = setup_topics(kafka_bootstrap, kafka_prefix)
    provider = Provider()
    gateway = {"ACCRUAL_SMS_GATEWAY_URL": provider.url, "ACCRUAL_SMS_GATEWAY_TOKEN": "t"}
    notifier = NotifierProcess(sqlite_url, kafka_bootstrap, kafka_prefix, tmp_path / "notifier.log", **gateway).start()
    boris = Member(BORIS)
    try:
        # given the provider answers 503, and an offer for boris at noon
        tick(kafka_bootstrap, names, at("2026-12-03 12:00"))
        produce_records(kafka_bootstrap, names.points_events,
                        [record(boris.offered("tr-1", 500, ANNA, "2026-12-03 11:00", "2026-12-04 11:00"))])
        deadline = time.monotonic() + 60
        while len(provider.requests) < 2:  # tried, refused, tried again (0.25 to 0.5 s later)
            assert time.monotonic() < deadline, "the notifier did not try the provider twice in 60 s"
            notifier.check_alive()
            time.sleep(0.1)
        # when SIGTERM comes while it waits, it stops at once and cleanly, the record not committed
        assert notifier.terminate(60) == 0
        assert '"msg": "stopped while a notification waited for the gateway"' in notifier.log.read_text()
        # then a new instance handles the record again; once the provider is back it takes the message once
        provider.down = False
        notifier = NotifierProcess(sqlite_url, kafka_bootstrap, kafka_prefix, tmp_path / "notifier-2.log",
                                   **gateway).start()
        wait_until_handled(kafka_bootstrap, names, [names.points_events, names.notifier_ticks], notifiers=[notifier])
        key = f"{BORIS}:transfer_offered:tr-1"
        assert provider.taken == {key: {"to": f"+{BORIS}", "text": (
            "+7 916 000-00-01 переводит вам 500\u00a0баллов. Примите перевод в личном кабинете до 4 декабря, 11:00 (мск).")}}
        assert {k for k, _ in provider.requests} == {key}  # every attempt carried the notification's key
        assert outbox(sqlite_url) == []  # the HTTP gateway, not the development outbox
    finally:
        notifier.kill()
        provider.server.shutdown()
