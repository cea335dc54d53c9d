"""Issue 14: the news of a transfer reaches both members' keys on
`loyalty.points-events.v1`, as events of the account it concerns: an offer
is recorded on the recipient's account (`TransferOfferReceived`, with the
sender, the points offered and the deadline), an acceptance on the sender's
(`TransferAccepted`). They move no points (`points` 0, `lots` []), so
balances, lots, history and books are as before; every record of the topic
is still one event of a member account, in account order.

Anna has 30 points in two Баллы Плюс lots (20 on 2026-03-05, 10 on
2026-01-10), Boris 3 (2026-05-01). Transfers are offered at 15:00 Moscow
and stand for 24 hours."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest

from accrual.runtime import Runtime
from engine.calendar import MOSCOW
from notifier.events import PointsEvent
from schemas import PointsEventMessage
from schemas.export import export_json_schemas
from tests.conftest import settings_for
from tests.kafka_support import names_for, publish_to_kafka, read_topic
from tests.notifier_support import Notifier
from tests.programme import Programme
from tests.test_outbound_lots import fold, publish, read_model_lots
from tests.test_spending_stores import _application

ANNA, BORIS = "79990006001", "79990006002"
OFFERED = datetime(2026, 6, 10, 15, 0, tzinfo=MOSCOW)
DEADLINE = OFFERED + timedelta(hours=24)  # 2026-06-11 15:00 Moscow


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=MOSCOW)


def given_anna_and_boris(p: Programme) -> Programme:
    p.enroll(ANNA, "2026-01-01 00:00")
    p.enroll(BORIS, "2026-01-01 00:00")
    p.ballyplus(ANNA, 20, "2026-03-05 10:00")
    p.ballyplus(ANNA, 10, "2026-01-10 10:00")
    p.ballyplus(BORIS, 3, "2026-05-01 10:00")
    return p


@pytest.fixture
def members(programme_on) -> Programme:
    return given_anna_and_boris(programme_on)


def of(messages: list[PointsEventMessage], event_type: str, msisdn: str) -> list[PointsEventMessage]:
    return [m for m in messages if m.event_type == event_type and m.msisdn == msisdn]


def transfer_fields(m: PointsEventMessage) -> tuple:
    return m.points, m.balance_after, m.lots, m.reason, m.counterpart, m.transfer_points, m.deadline


def assert_the_topic_adds_up(p: Programme, messages: list[PointsEventMessage]) -> None:
    """Each member's records: versions 1..N with N the read model's version,
    points adding up to each `balance_after`, and the lots folding into the
    read model's."""
    p.runtime.projector.catch_up()
    versions: dict[str, list[int]] = {}
    running: dict[str, int] = {}
    for m in messages:
        versions.setdefault(m.msisdn, []).append(m.account_version)
        running[m.msisdn] = running.get(m.msisdn, 0) + m.points
        assert running[m.msisdn] == m.balance_after, m
    for msisdn, seen in versions.items():
        member = p.runtime.reads.member(msisdn)
        assert member is not None
        assert seen == list(range(1, member["version"] + 1)) and member["version"] == p.runtime.app.member(msisdn).version
        assert running[msisdn] == p.balance(msisdn)
    assert fold(messages) == read_model_lots(p.runtime)


# -- the records ----------------------------------------------------------------------------------


def test_an_offer_puts_a_record_on_the_recipients_key_with_the_sender_the_points_and_the_deadline(members):
    boris_history = members.history(BORIS)
    transfer = members.runtime.app.offer_transfer(ANNA, BORIS, 15, idempotency_key="t-1", at=OFFERED)
    messages = publish(members.runtime)
    # Boris's record: 0 points, his balance of 3 unchanged, no lot moved, the offer's 15 points and deadline
    (news,) = of(messages, "TransferOfferReceived", BORIS)
    assert transfer_fields(news) == (0, 3, (), "offered", ANNA, 15, DEADLINE)
    assert (news.source_event_id, news.occurred_at) == (transfer.transfer_id, OFFERED)
    # Anna's own record names Boris; the offer's fields are only on the news
    (out,) = of(messages, "PointsTransferred", ANNA)
    assert transfer_fields(out)[:2] + transfer_fields(out)[3:] == (-15, 15, "out", BORIS, None, None)
    # nothing moved for Boris: balance, lots and history as before (the offer is on his Transfers page)
    assert members.balance(BORIS) == 3
    assert members.lots(BORIS) == [("2026-05-01", "2027-05-01", 3)]
    assert members.history(BORIS) == boris_history
    assert [t["status"] for t in members.runtime.reads.transfers_of(BORIS)] == ["pending"]
    assert_the_topic_adds_up(members, messages)


def test_an_acceptance_puts_a_record_on_the_senders_key(members):
    app = members.runtime.app
    transfer = app.offer_transfer(ANNA, BORIS, 15, idempotency_key="t-1", at=OFFERED)
    anna_history = members.history(ANNA)
    app.accept_transfer(transfer.transfer_id, BORIS, at=at("2026-06-11T14:59"))
    messages = publish(members.runtime)
    # Anna's record: 0 points, her 30 - 15 = 15 unchanged, Boris named, the 15 points sent
    (news,) = of(messages, "TransferAccepted", ANNA)
    assert transfer_fields(news) == (0, 15, (), "accepted", BORIS, 15, None)
    assert (news.source_event_id, news.occurred_at) == (transfer.transfer_id, at("2026-06-11T14:59"))
    # Boris's credit names Anna: 3 + 15 = 18
    (received,) = of(messages, "PointsTransferred", BORIS)
    assert transfer_fields(received)[:2] + transfer_fields(received)[3:] == (15, 18, "in", ANNA, None, None)
    # Anna's balance, lots and history are as the offer left them; accepting again records nothing
    assert members.balance(ANNA) == 15
    assert members.lots(ANNA) == [("2026-03-05", "2027-03-05", 15)]
    assert members.history(ANNA) == anna_history
    assert app.accept_transfer(transfer.transfer_id, BORIS, at=at("2026-06-11T14:59")).duplicate
    assert publish(members.runtime) == []
    assert_the_topic_adds_up(members, messages)


def test_a_declined_and_a_timed_out_transfer_name_the_recipient_on_the_senders_record(members):
    app = members.runtime.app
    declined = app.offer_transfer(ANNA, BORIS, 6, idempotency_key="t-1", at=OFFERED)
    app.decline_transfer(declined.transfer_id, BORIS, at=at("2026-06-10T16:00"))
    timed_out = app.offer_transfer(ANNA, BORIS, 7, idempotency_key="t-2", at=OFFERED)
    members.tick("2026-06-12")  # closes 2026-06-11: the 24 hours of t-2 ran out at 15:00
    messages = publish(members.runtime)
    returned = of(messages, "TransferReturned", ANNA)
    # 30 - 6 + 6 = 30, then 30 - 7 + 7 = 30
    assert [(m.source_event_id, m.reason, m.points, m.balance_after, m.counterpart) for m in returned] == [
        (declined.transfer_id, "declined", 6, 30, BORIS), (timed_out.transfer_id, "timed_out", 7, 30, BORIS)]
    # each offer reached Boris; neither moved his 3 points
    assert [(m.source_event_id, m.balance_after, m.transfer_points) for m in of(
        messages, "TransferOfferReceived", BORIS)] == [(declined.transfer_id, 3, 6), (timed_out.transfer_id, 3, 7)]
    assert of(messages, "TransferAccepted", ANNA) == []
    assert_the_topic_adds_up(members, messages)


def test_the_news_of_transfers_replays_and_audits_clean_and_books_nothing(members):
    app = members.runtime.app
    members.tick("2026-06-10")  # closes the period up to 2026-06-09: the credits are booked in it
    books = members.books()
    accepted = app.offer_transfer(ANNA, BORIS, 5, idempotency_key="t-1", at=OFFERED)
    app.accept_transfer(accepted.transfer_id, BORIS, at=at("2026-06-10T16:00"))
    app.offer_transfer(ANNA, BORIS, 7, idempotency_key="t-2", at=OFFERED)
    # the open period books Anna's 5 out and Boris's 5 in, and Anna's 7 held: -5 + 5 - 7 = -7; the news books nothing
    assert members.moved_since_last_close() == -7
    assert members.books() == books
    assert members.runtime.audit() == []
    tables = ("members", "history", "lots", "transfers")
    before = {t: members.runtime.db.query(f"SELECT * FROM rm_{t} ORDER BY 1, 2") for t in tables}
    members.runtime.replay()
    assert {t: members.runtime.db.query(f"SELECT * FROM rm_{t} ORDER BY 1, 2") for t in tables} == before


# -- concurrency: an offer now writes the recipient's account too ---------------------------------


def _concurrently(url: str, calls: list) -> list:
    """Each call(app) in a thread with an application of its own (another
    process's), all started together."""
    apps = [_application(url) for _ in calls]
    start = threading.Barrier(len(calls))

    def run(pair):
        call, app = pair
        start.wait()
        return call(app)

    try:
        with ThreadPoolExecutor(len(calls)) as pool:
            return list(pool.map(run, zip(calls, apps, strict=True)))
    finally:
        for app in apps:
            app.close()


@pytest.mark.postgres
def test_concurrent_offers_with_one_key_make_one_transfer_and_tell_the_recipient_once(postgres_url):
    with Runtime(settings_for(postgres_url)) as runtime:
        given_anna_and_boris(Programme(runtime))

    def offer(app):
        return app.offer_transfer(ANNA, BORIS, 15, idempotency_key="same", at=OFFERED)

    results = _concurrently(postgres_url, [offer] * 20)
    # one transfer; every caller gets it (at most one is not a duplicate)
    assert sum(not r.duplicate for r in results) <= 1
    assert {(r.transfer_id, r.points, r.status) for r in results} == {(results[0].transfer_id, 15, "pending")}
    with Runtime(settings_for(postgres_url)) as runtime:
        p = Programme(runtime)
        messages = publish(runtime)
        assert [m.source_event_id for m in of(messages, "TransferOfferReceived", BORIS)] == [results[0].transfer_id]
        assert (p.balance(ANNA), p.balance(BORIS)) == (15, 3)  # 30 - 15 held; Boris's 3 untouched
        assert_the_topic_adds_up(p, messages)
        assert runtime.audit() == []


@pytest.mark.postgres
def test_concurrent_offers_of_two_senders_to_one_recipient_all_reach_him_in_his_accounts_order(postgres_url):
    vera = "79990006003"
    with Runtime(settings_for(postgres_url)) as runtime:
        p = given_anna_and_boris(Programme(runtime))
        p.enroll(vera, "2026-01-01 00:00")
        p.ballyplus(vera, 10, "2026-05-01 10:00")

    def offer(sender: str, n: int):
        return lambda app: app.offer_transfer(sender, BORIS, 1, idempotency_key=f"{sender}-{n}", at=OFFERED)

    # Anna and Vera offer Boris 1 point five times each, at once: ten writers of Boris's account
    results = _concurrently(postgres_url, [offer(s, n) for s in (ANNA, vera) for n in range(5)])
    assert not any(r.duplicate for r in results)
    with Runtime(settings_for(postgres_url)) as runtime:
        p = Programme(runtime)
        messages = publish(runtime)
        news = of(messages, "TransferOfferReceived", BORIS)
        assert sorted(m.source_event_id for m in news) == sorted(r.transfer_id for r in results)
        # Boris's versions: AccountOpened 1, MemberEnrolled 2, PointsAccrued 3, then the ten offers 4..13
        assert [m.account_version for m in news] == list(range(4, 14))
        # 30 - 5 = 25 and 10 - 5 = 5 held; Boris still has his 3
        assert (p.balance(ANNA), p.balance(vera), p.balance(BORIS)) == (25, 5, 3)
        assert_the_topic_adds_up(p, messages)


# -- on the topic, and what the notifier makes of it ------------------------------------------------


@pytest.mark.kafka
def test_the_notifier_fed_the_topic_tells_the_recipient_of_the_offer_and_the_sender_of_the_acceptance(
    kafka_bootstrap, kafka_prefix, sqlite_url
):
    names = names_for(kafka_prefix)
    with Runtime(settings_for(sqlite_url)) as runtime:
        p = given_anna_and_boris(Programme(runtime))
        app = runtime.app
        accepted = app.offer_transfer(ANNA, BORIS, 15, idempotency_key="t-1", at=OFFERED)
        app.accept_transfer(accepted.transfer_id, BORIS, at=at("2026-06-11T14:59"))
        declined = app.offer_transfer(ANNA, BORIS, 6, idempotency_key="t-2", at=at("2026-06-11T18:00"))
        app.decline_transfer(declined.transfer_id, BORIS, at=at("2026-06-11T18:30"))

        publish_to_kafka(runtime, names, kafka_bootstrap)
        records = read_topic(kafka_bootstrap, names.points_events)
        assert all(r.key.decode() == json.loads(r.value)["msisdn"] for r in records)
        messages = [PointsEventMessage.model_validate_json(r.value) for r in records]
        assert_the_topic_adds_up(p, sorted(messages, key=lambda m: (m.msisdn, m.account_version)))
    # the notifier reads each member's records in the order of their partition, each when it occurred
    notifiers = {ANNA: Notifier(ANNA), BORIS: Notifier(BORIS)}
    for record in records:
        value = json.loads(record.value)
        notifiers[value["msisdn"]].event(PointsEvent.from_record(value))
    # Boris hears of both offers at once, the deadlines in Moscow time (t-2: 2026-06-12 18:00)
    assert [(n.key, n.text) for n in notifiers[BORIS].sent] == [
        (f"{BORIS}:transfer_offered:{accepted.transfer_id}",
         "+7 999 000-60-01 переводит вам 15\u00a0баллов. Примите перевод в личном кабинете до 11 июня, 15:00 (мск)."),
        (f"{BORIS}:transfer_offered:{declined.transfer_id}",
         "+7 999 000-60-01 переводит вам 6\u00a0баллов. Примите перевод в личном кабинете до 12 июня, 18:00 (мск)."),
    ]
    # Anna hears that Boris accepted the first and declined the second
    assert [(n.key, n.text) for n in notifiers[ANNA].sent] == [
        (f"{ANNA}:transfer_accepted:{accepted.transfer_id}", "Ваш перевод 15\u00a0баллов на номер +7 999 000-60-02 принят."),
        (f"{ANNA}:transfer_declined:{declined.transfer_id}",
         "Перевод на номер +7 999 000-60-02 отклонён: 6\u00a0баллов вернулись на ваш счёт."),
    ]


# -- the contract ------------------------------------------------------------------------------------


def test_the_exported_json_schema_has_the_transfer_fields_nullable(tmp_path):
    export_json_schemas(tmp_path)  # what `accrual schemas export DIR` writes
    schema = json.loads((tmp_path / "points_event.schema.json").read_text(encoding="utf-8"))
    fields = ("counterpart", "transfer_points", "deadline")
    assert set(fields) <= set(schema["required"]), "always written, null when they do not apply"
    kinds = {f: [t.get("type") for t in schema["properties"][f]["anyOf"]] for f in fields}
    assert kinds == {f: ["string" if f != "transfer_points" else "integer", "null"] for f in fields}
    assert schema["properties"]["deadline"]["anyOf"][0]["format"] == "date-time"


def test_a_message_of_an_earlier_release_reads_with_no_transfer_fields():
    earlier = {"msisdn": ANNA, "account_version": 3, "event_type": "TransferReturned", "points": 6,
               "occurred_at": "2026-06-10T16:00:00+03:00", "balance_after": 30, "reason": "declined"}
    message = PointsEventMessage.model_validate(earlier)
    assert (message.counterpart, message.transfer_points, message.deadline) == (None, None, None)
