"""Signing in: codes by SMS, passwords, the network header, the agreement,
and what an attacker cannot learn or guess."""
from __future__ import annotations

import pytest

from tests.web.conftest import ALICE, BOB, last_code, sign_in
from web.auth import CODE_TRIES_MAX

pytestmark = pytest.mark.postgres


def request_code(client, msisdn, purpose="login"):
    return client.post("/api/v1/auth/otp/request", json={"msisdn": msisdn, "purpose": purpose})


def verify(client, msisdn, code, accept=True):
    return client.post("/api/v1/auth/otp/verify", json={"msisdn": msisdn, "code": code, "accept_terms": accept})


def test_a_code_from_the_sms_outbox_signs_in_and_records_the_agreement(client, clock):
    assert request_code(client, ALICE).json() == {"status": "sent"}
    token = verify(client, ALICE, last_code(client.app, ALICE)).json()["token"]
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["msisdn"] == ALICE and me["session_via"] == "code"
    assert me["terms_version"] == "2026-01" and me["terms_accepted_at"].startswith("2026-11-25T09:00")


def test_signing_in_without_accepting_the_agreement_is_refused(client):
    request_code(client, ALICE)
    answer = verify(client, ALICE, last_code(client.app, ALICE), accept=False)
    assert answer.status_code == 400 and answer.json()["error"] == "terms_not_accepted"


def test_a_code_is_six_digits_and_stored_hashed(client):
    request_code(client, ALICE)
    code = last_code(client.app, ALICE)
    assert len(code) == 6 and code.isdigit()
    stored = client.app.state.context.store.query("SELECT code_hash FROM web_otps")
    assert stored and all(code not in row[0] for row in stored)


def test_a_code_works_once(client):
    request_code(client, ALICE)
    code = last_code(client.app, ALICE)
    assert verify(client, ALICE, code).status_code == 200
    assert verify(client, ALICE, code).json()["error"] == "invalid_code"


def test_a_code_expires_after_five_minutes(client, clock):
    request_code(client, ALICE)
    code = last_code(client.app, ALICE)
    clock.advance(minutes=5, seconds=1)
    assert verify(client, ALICE, code).status_code == 400


def test_a_code_within_five_minutes_works(client, clock):
    request_code(client, ALICE)
    clock.advance(minutes=4, seconds=59)
    assert verify(client, ALICE, last_code(client.app, ALICE)).status_code == 200


def test_a_code_sent_for_a_password_does_not_sign_in(client):
    request_code(client, ALICE, purpose="password")
    assert verify(client, ALICE, last_code(client.app, ALICE)).status_code == 400


def test_a_code_of_one_number_does_not_sign_in_another(client):
    request_code(client, ALICE)
    assert verify(client, BOB, last_code(client.app, ALICE)).status_code == 400


def test_five_wrong_tries_spend_the_code(client):
    request_code(client, ALICE)
    code = last_code(client.app, ALICE)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(CODE_TRIES_MAX):
        assert verify(client, ALICE, wrong).status_code == 400
    assert verify(client, ALICE, code).status_code == 400


def test_a_new_code_replaces_the_previous_one(client, clock):
    request_code(client, ALICE)
    first = last_code(client.app, ALICE)
    request_code(client, ALICE)
    second = last_code(client.app, ALICE)
    if first != second:
        assert verify(client, ALICE, first).status_code == 400
    assert verify(client, ALICE, second).status_code == 200


def test_sends_are_limited_per_number(client, clock):
    for _ in range(3):
        assert request_code(client, ALICE).status_code == 202
    limited = request_code(client, ALICE)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert request_code(client, BOB).status_code == 202  # another number is not affected
    clock.advance(minutes=10, seconds=1)
    assert request_code(client, ALICE).status_code == 202


def test_sends_are_limited_per_client_address(client):
    numbers = [f"7916100{i:04d}" for i in range(21)]
    answers = [request_code(client, n).status_code for n in numbers]
    assert answers[:20] == [202] * 20 and answers[20] == 429


def test_the_answers_for_a_known_and_an_unknown_number_are_the_same(client, programme):
    programme.enroll(ALICE, "2026-11-01 10:00")
    sign_in(client, ALICE)
    # ALICE is a member with a session and an accepted agreement; BOB is nothing
    known, unknown = request_code(client, ALICE), request_code(client, BOB)
    assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())
    login = lambda m: client.post("/api/v1/auth/login", json={"msisdn": m, "password": "wrong-pass1", "accept_terms": True})
    known, unknown = login(ALICE), login(BOB)
    assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())
    known, unknown = verify(client, ALICE, "000000"), verify(client, BOB, "000000")
    assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())


def test_a_password_set_with_a_code_signs_in(client):
    headers = sign_in(client, ALICE)
    request_code(client, ALICE, purpose="password")
    code = last_code(client.app, ALICE)
    changed = client.put("/api/v1/me/password", headers=headers, json={"code": code, "password": "Zima-2026!"})
    assert changed.status_code == 204
    stored = client.app.state.context.store.query("SELECT password_hash FROM web_credentials")[0][0]
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    login = client.post("/api/v1/auth/login", json={"msisdn": ALICE, "password": "Zima-2026!", "accept_terms": True})
    assert login.status_code == 200 and login.json()["via"] == "password"


def test_changing_the_password_needs_a_code_for_that_purpose(client):
    headers = sign_in(client, ALICE)
    request_code(client, ALICE, purpose="login")
    code = last_code(client.app, ALICE)
    answer = client.put("/api/v1/me/password", headers=headers, json={"code": code, "password": "Zima-2026!"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_code"


def test_a_lost_password_is_restored_with_a_code(client):
    headers = sign_in(client, ALICE)
    request_code(client, ALICE, purpose="password")
    client.put("/api/v1/me/password", headers=headers, json={"code": last_code(client.app, ALICE), "password": "Old-pass-1"})
    request_code(client, ALICE, purpose="password")
    reset = client.post("/api/v1/auth/password/reset",
                        json={"msisdn": ALICE, "code": last_code(client.app, ALICE), "password": "New-pass-2"})
    assert reset.status_code == 204
    login = lambda p: client.post("/api/v1/auth/login", json={"msisdn": ALICE, "password": p, "accept_terms": True})
    assert login("Old-pass-1").status_code == 400
    assert login("New-pass-2").status_code == 200


def test_failed_passwords_slow_down_the_number(client, clock):
    login = lambda: client.post("/api/v1/auth/login", json={"msisdn": ALICE, "password": "wrong-pass1", "accept_terms": True})
    assert [login().status_code for _ in range(3)] == [400, 400, 400]
    slowed = login()
    assert slowed.status_code == 429 and slowed.headers["Retry-After"] == "1"
    clock.advance(seconds=2)
    assert login().status_code == 400
    assert login().status_code == 429  # now 2 s


def test_a_spoofed_msisdn_header_from_an_untrusted_address_is_ignored(client):
    answer = client.post("/api/v1/auth/network", json={"accept_terms": True}, headers={"X-MSISDN": ALICE})
    assert answer.status_code == 401
    page = client.get("/login", headers={"X-MSISDN": ALICE}, follow_redirects=False)
    assert page.status_code == 200 and "Войти как" not in page.text and "accrual_session" not in page.cookies


def test_the_gateway_header_signs_in_a_session_that_must_confirm(gateway_client):
    answer = gateway_client.post("/api/v1/auth/network", json={"accept_terms": True}, headers={"X-MSISDN": ALICE})
    assert answer.status_code == 200 and answer.json()["via"] == "network"
    me = gateway_client.get("/api/v1/me", headers={"Authorization": f"Bearer {answer.json()['token']}"})
    assert me.json()["msisdn"] == ALICE and me.json()["session_via"] == "network"


@pytest.mark.parametrize("web_env", [{"ACCRUAL_TRUSTED_PROXIES": ""}])
def test_an_empty_list_of_trusted_proxies_turns_the_header_off(gateway_client):
    answer = gateway_client.post("/api/v1/auth/network", json={"accept_terms": True}, headers={"X-MSISDN": ALICE})
    assert answer.status_code == 401


def test_a_token_that_was_never_issued_or_was_logged_out_reads_nothing(client):
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer nope"}).status_code == 401
    headers = sign_in(client, ALICE)
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    assert client.get("/api/v1/me", headers=headers).status_code == 401


def test_tokens_are_stored_hashed_and_expire(client, clock):
    headers = sign_in(client, ALICE)
    token = headers["Authorization"].split()[1]
    stored = [row[0] for row in client.app.state.context.store.query("SELECT token_hash FROM web_sessions")]
    assert token not in stored and len(stored[0]) == 64
    clock.advance(hours=12, seconds=1)
    assert client.get("/api/v1/me", headers=headers).status_code == 401


def test_a_session_in_use_stays_open_and_an_idle_one_ends(client, clock):
    # On PostgreSQL the API's reads run in the thread pool.
    session_lifecycle(client, clock)


def test_a_session_in_use_stays_open_and_an_idle_one_ends_on_sqlite(sqlite_url, clock):
    # On SQLite they run on the event loop, on a read-only connection.
    from fastapi.testclient import TestClient

    from tests.conftest import settings_for
    from web.app import create_app

    app = create_app(settings_for(sqlite_url), clock=clock)
    try:
        assert app.state.context.cabinet.connections.inline
        with TestClient(app, base_url="https://testserver") as sqlite_client:
            session_lifecycle(sqlite_client, clock)
    finally:
        app.state.context.close()


def session_lifecycle(client, clock):
    """API reads look a session up without writing; its last use is written
    at most once a minute, and an hour without a request ends it."""
    headers = sign_in(client, ALICE)
    store = client.app.state.context.store

    def last_seen():
        return store.query("SELECT COALESCE(last_seen_at, created_at) FROM web_sessions")[0][0]

    opened = last_seen()
    clock.advance(seconds=30)
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    assert last_seen() == opened  # within the minute: read without a write
    # a request every 59 minutes keeps the session open for its 12 hours
    for _ in range(3):
        clock.advance(minutes=59)
        assert client.get("/api/v1/me", headers=headers).status_code == 200
        assert last_seen() != opened
        opened = last_seen()
    # an hour and a second without one ends it, and the row goes
    clock.advance(hours=1, seconds=1)
    assert client.get("/api/v1/me/history", headers=headers).status_code == 401
    assert store.query("SELECT COUNT(*) FROM web_sessions")[0][0] == 0


def test_a_known_and_an_unknown_number_cost_one_argon2_check_each(client, monkeypatch):
    """The same work, so the same time, whether the number has a password,
    is known without one, or is unknown."""
    auth = client.app.state.context.auth
    auth.set_password(ALICE, "Vesna-2026!")
    auth.accept_terms(BOB)  # known, no password
    import web.auth

    calls = []
    real = web.auth.PASSWORDS

    class Counting:
        def verify(self, hashed, password):
            calls.append(hashed)
            return real.verify(hashed, password)

    monkeypatch.setattr(web.auth, "PASSWORDS", Counting())
    for msisdn in (ALICE, BOB, "79169999999"):
        assert auth.check_password(msisdn, "wrong-pass1", "192.0.2.1") is False
    assert len(calls) == 3 and all(h.startswith("$argon2id$v=19$m=19456,t=2,p=1$") for h in calls)
