"""Issue 14 — the send is idempotent on the notification's key: the
database outbox keeps one row per key (a UNIQUE index, so also when sends
race), the HTTP gateway passes the key on as `Idempotency-Key`; messages
without a key (the one-time codes) are written every time, as before.
On SQLite and PostgreSQL."""
import json
import threading
from datetime import datetime, timezone

import httpx

from accrual.settings import parse_database_url
from notifier import decide
from notifier.member import MemberState
from notifier.preferences import Preferences
from tests.notifier_support import ANNA, BORIS, Member, at
from web.sms import DatabaseOutbox, HttpGateway
from web.store import WebStore

NOW = datetime(2026, 12, 3, 7, 0, tzinfo=timezone.utc)
KEY = f"{ANNA}:expiry_30:2026-12-25"


def store_on(url: str) -> WebStore:
    store = WebStore(parse_database_url(url))
    store.create_tables()
    return store


def rows(store: WebStore) -> list[tuple]:
    return store.query("SELECT msisdn, text, idempotency_key FROM web_sms_outbox ORDER BY seq")


def test_the_same_notification_twice_is_one_row_and_keyless_codes_are_each_written(database_url):
    store = store_on(database_url)
    try:
        outbox = DatabaseOutbox(store)
        outbox.send(ANNA, "В ночь на 25 декабря…", NOW, idempotency_key=KEY)
        outbox.send(ANNA, "В ночь на 25 декабря…", NOW, idempotency_key=KEY)
        outbox.send(ANNA, "Ваш код: 123456", NOW)
        outbox.send(ANNA, "Ваш код: 123456", NOW)
        assert rows(store) == [(ANNA, "В ночь на 25 декабря…", KEY), (ANNA, "Ваш код: 123456", None),
                               (ANNA, "Ваш код: 123456", None)]
        # `accrual sms outbox --json` shows the key
        assert [m["key"] for m in outbox.messages(ANNA)] == [None, None, KEY]
    finally:
        store.close()


def test_ten_processes_sending_the_same_notification_at_once_write_one_row(database_url):
    # ten connections of their own (the store's lock would otherwise take turns), released together
    stores = [store_on(database_url) for _ in range(10)]
    start, errors = threading.Barrier(10), []

    def send(store: WebStore) -> None:
        try:
            start.wait()
            DatabaseOutbox(store).send(BORIS, "+7 916 000-00-01 переводит вам…", NOW,
                                       idempotency_key=f"{BORIS}:transfer_offered:tr-1")
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=send, args=(s,)) for s in stores]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert rows(stores[0]) == [(BORIS, "+7 916 000-00-01 переводит вам…", f"{BORIS}:transfer_offered:tr-1")]
    finally:
        for store in stores:
            store.close()


def test_a_store_of_an_earlier_release_gets_the_key_column_on_start_up(database_url):
    store = WebStore(parse_database_url(database_url))
    try:
        with store.transaction() as tx:  # the outbox as the previous release made it, with a code in it
            tx.execute("CREATE TABLE web_sms_outbox (sms_id TEXT PRIMARY KEY, seq BIGINT NOT NULL, "
                       "msisdn TEXT NOT NULL, text TEXT NOT NULL, created_at TEXT NOT NULL)")
            tx.execute("INSERT INTO web_sms_outbox VALUES ('a1', 1, ?, 'Ваш код: 111111', '2026-12-01')", (ANNA,))
        store.create_tables()
        store.create_tables()  # and again: start-up is idempotent
        outbox = DatabaseOutbox(store)
        outbox.send(ANNA, "x", NOW, idempotency_key=KEY)
        outbox.send(ANNA, "x", NOW, idempotency_key=KEY)
        assert rows(store) == [(ANNA, "Ваш код: 111111", None), (ANNA, "x", KEY)]
    finally:
        store.close()


def test_a_replay_from_the_beginning_sends_nothing_twice(database_url):
    """The core and the outbox together: a notifier that sent a reminder,
    and a second one that replays the member's records with an empty state
    (lost changelogs), both through the same outbox."""
    anna = Member(ANNA)
    anna.credit(1200, "usage", "2025-12-25 12:00", expires_on="2026-12-25")
    anna.credit(300, "shop", "2026-11-24 19:00")
    store = store_on(database_url)
    try:
        outbox = DatabaseOutbox(store)
        for _ in range(2):  # the first run, then the replay
            state = MemberState(ANNA)
            for record in anna.records:
                state = decide.on_event(state, record, Preferences(), at("2026-11-25 09:30")).state
            decision = decide.on_tick(state, Preferences(), at("2026-11-25 10:00"))
            for n in decision.send:
                outbox.send(n.msisdn, n.text, n.not_before, idempotency_key=n.key)
        assert [key for _, _, key in rows(store)] == [f"{ANNA}:credits:2026-11-24", f"{ANNA}:expiry_30:2026-12-25"]
    finally:
        store.close()


def test_the_http_gateway_sends_the_key_as_an_idempotency_key_header():
    seen = []

    def provider(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers.get("idempotency-key"), json.loads(request.content)))
        return httpx.Response(202)

    gateway = HttpGateway("https://sms.example/send", "t0ken", transport=httpx.MockTransport(provider))
    gateway.send(ANNA, "hello", NOW, idempotency_key=KEY)
    gateway.send(ANNA, "code", NOW)
    assert seen == [(KEY, {"to": f"+{ANNA}", "text": "hello"}), (None, {"to": f"+{ANNA}", "text": "code"})]
