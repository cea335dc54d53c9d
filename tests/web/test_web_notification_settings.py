"""A member's SMS choices (issue 14): three switches in Settings and the API,
all on by default; each change is a new version, published to the compacted
topic `loyalty.member-preferences.v1` that the notifier reads."""
from __future__ import annotations

import asyncio
import json
import time

from fastapi.testclient import TestClient

from notifier.preferences import CREDITS, EXPIRY, Preferences
from tests.kafka_support import names_for, read_topic
from tests.web.conftest import ALICE, BOB, sign_in
from tests.web.console_support import csrf_of
from web.preferences import PreferencesPublisher, choose, preferences_of


def test_everything_is_on_until_the_member_turns_something_off(client):
    member = sign_in(client, ALICE)
    assert client.get("/api/v1/me/notifications", headers=member).json() == {
        "credits": True, "transfers": True, "expiry": True, "version": 0}
    answer = client.put("/api/v1/me/notifications", headers=member,
                        json={"credits": False, "transfers": True, "expiry": True})
    assert answer.json() == {"credits": False, "transfers": True, "expiry": True, "version": 1}
    # the same choice again is no new version; another choice is
    again = client.put("/api/v1/me/notifications", headers=member,
                       json={"credits": False, "transfers": True, "expiry": True})
    assert again.json()["version"] == 1
    other = client.put("/api/v1/me/notifications", headers=member,
                       json={"credits": True, "transfers": True, "expiry": False})
    assert (other.json()["credits"], other.json()["expiry"], other.json()["version"]) == (True, False, 2)


def test_the_api_takes_exactly_the_three_switches(client):
    member = sign_in(client, ALICE)
    for body in ({"credits": "no", "transfers": True, "expiry": True}, {"credits": True},
                 {"credits": True, "transfers": True, "expiry": True, "sms": False}):
        assert client.put("/api/v1/me/notifications", headers=member, json=body).status_code == 422


def test_a_signed_in_member_saves_the_switches_on_the_settings_page(client, programme):
    from tests.web.test_web_pages import page_sign_in  # the pages' own sign-in helper

    page_sign_in(client, ALICE)
    settings = client.get("/settings")
    assert "Уведомления по SMS" in settings.text and settings.text.count("checked") >= 3
    saved = client.post("/settings/notifications", data={"csrf": csrf_of(settings.text), "transfers": "on",
                                                         "expiry": "on"}, follow_redirects=False)
    assert saved.status_code == 303
    assert preferences_of(client.app.state.context.store, ALICE).off == {CREDITS}


def test_the_choices_reach_the_topic_once_per_version(web_app, clock, kafka_bootstrap, kafka_prefix):
    store = web_app.state.context.store
    topic = names_for(kafka_prefix).member_preferences
    publisher = PreferencesPublisher(store, kafka_bootstrap, topic)
    choose(store, ALICE, {CREDITS}, clock.now())
    choose(store, BOB, set(), clock.now())  # everything on, chosen explicitly
    assert asyncio.run(publisher.publish_once()) == 2
    assert asyncio.run(publisher.publish_once()) == 0  # nothing new
    choose(store, ALICE, {CREDITS, EXPIRY}, clock.now())
    assert asyncio.run(publisher.publish_once()) == 1
    records = read_topic(kafka_bootstrap, topic)
    latest = {r.key.decode(): json.loads(r.value) for r in records}  # compaction keeps the last per key
    assert len(records) == 3
    assert Preferences.from_record(latest[ALICE]) == Preferences(frozenset({CREDITS, EXPIRY}))
    assert (latest[ALICE]["version"], Preferences.from_record(latest[BOB])) == (2, Preferences())


def test_the_served_app_publishes_by_itself(postgres_url, clock, kafka_bootstrap, kafka_prefix, monkeypatch):
    from tests.conftest import settings_for
    from web.app import create_app

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("ACCRUAL_TOPIC_PREFIX", kafka_prefix)
    app = create_app(settings_for(postgres_url), clock=clock)
    with TestClient(app, base_url="https://testserver") as served:
        member = sign_in(served, ALICE)
        served.put("/api/v1/me/notifications", headers=member, json={"credits": True, "transfers": False,
                                                                      "expiry": True})
        topic = names_for(kafka_prefix).member_preferences
        deadline, records = time.monotonic() + 30, []
        while not records and time.monotonic() < deadline:  # the publisher's thread sends within a second or so
            records = read_topic(kafka_bootstrap, topic, timeout=10)
            time.sleep(0 if records else 0.5)
    assert [json.loads(r.value)["off"] for r in records] == [["transfers"]]
