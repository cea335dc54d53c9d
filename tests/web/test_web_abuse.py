"""The personal account as an attacker tries it (issue 10's findings): what
is sent, what must come back, and that nothing changed. Each test failed
before its fix."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

import web.auth
from engine.errors import InvalidMsisdnError
from tests.web.conftest import ALICE, BOB, CAROL, START, last_code, member_with_points, sign_in
from tests.web.test_web_pages import csrf_of, page_sign_in
from web.auth import LOGIN_WAIT_MAX, login_wait
from web.limits import Limit, client_key
from web.store import stamp

pytestmark = pytest.mark.postgres

ARABIC_INDIC = "7٩٠٠٠٠٠٠٠٠١"  # 7 then ten Arabic-Indic digits: str.isdigit() is True
SUPERSCRIPTS = "7²²²²²²²²²²"


def login(client, msisdn, password="wrong-pass1"):
    return client.post("/api/v1/auth/login", json={"msisdn": msisdn, "password": password, "accept_terms": True})


def request_code(client, msisdn, purpose="login", headers=None):
    return client.post("/api/v1/auth/otp/request", json={"msisdn": msisdn, "purpose": purpose}, headers=headers)


def from_address(web_app, host: str) -> TestClient:
    """Another caller of the same app (outside `with`: the app's lifespan,
    which closes its stores at the end, belongs to the `client` fixture)."""
    return TestClient(web_app, base_url="https://testserver", client=(host, 50000))


def sms_count(client, msisdn=None) -> int:
    if msisdn is None:
        return client.app.state.context.store.query("SELECT COUNT(*) FROM web_sms_outbox")[0][0]
    return client.app.state.context.store.query("SELECT COUNT(*) FROM web_sms_outbox WHERE msisdn = ?", (msisdn,))[0][0]


def set_password(client, msisdn, password="Vesna-2026-mart"):
    client.app.state.context.auth.set_password(msisdn, password)
    return password


# -- 1. a number's password sign-in never becomes a permanent 500 ------------------------------------


def test_the_wait_after_failures_is_capped_for_any_count():
    assert [login_wait(n) for n in (0, 2, 3, 4, 13)] == [
        timedelta(0), timedelta(0), timedelta(seconds=1), timedelta(seconds=2), LOGIN_WAIT_MAX,
    ]
    assert login_wait(10**9) == LOGIN_WAIT_MAX  # 2 ** (10**9 - 3) seconds would overflow timedelta


def test_after_sixty_failures_the_right_password_still_signs_in_once_the_wait_is_over(client, clock):
    password = set_password(client, ALICE)
    # given: an attacker from many addresses left 60 failures on the number
    store = client.app.state.context.store
    store.execute("INSERT INTO web_login_failures (msisdn, failures, last_at) VALUES (?, ?, ?)",
                  (ALICE, 60, stamp(clock.now())))
    # when: the wait is running, the member is told to wait (429), not 500
    waiting = login(client, ALICE, password)
    assert waiting.status_code == 429 and int(waiting.headers["Retry-After"]) == 15 * 60
    # then: after 15 minutes the right password signs in, and the count is cleared
    clock.advance(minutes=15, seconds=1)
    assert login(client, ALICE, password).status_code == 200
    assert store.query("SELECT COUNT(*) FROM web_login_failures WHERE msisdn = ?", (ALICE,))[0][0] == 0


# -- 2. one guess per wait, whatever the parallelism; limits per address and for all --------------------


def test_parallel_wrong_passwords_after_the_free_ones_get_one_check_per_wait(client, clock):
    set_password(client, ALICE)
    assert [login(client, ALICE).status_code for _ in range(3)] == [400, 400, 400]
    clock.advance(seconds=2)  # the 1 s wait after the third failure is over
    # when: 12 wrong passwords at once (each argon2 check takes tens of milliseconds)
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda _: login(client, ALICE).status_code, range(12)))
    # then: one was checked, every other one was told to wait
    assert sorted(answers) == [400] + [429] * 11


def test_one_password_sprayed_over_many_numbers_from_one_address_is_slowed(web_app):
    sprayer, neighbour = from_address(web_app, "198.51.100.7"), from_address(web_app, "198.51.100.8")
    numbers = [f"7916200{i:04d}" for i in range(30)]
    answers = [login(sprayer, n, "Qwerty-2026").status_code for n in numbers]
    # 20 tries an address in 10 minutes: the 21st number is not checked at all
    assert answers == [400] * 20 + [429] * 10
    assert login(neighbour, numbers[25], "Qwerty-2026").status_code == 400  # another address is not slowed


def test_password_checks_have_a_ceiling_for_the_whole_service(web_app, monkeypatch):
    monkeypatch.setattr(web.auth, "PASSWORD_TRIES_ALL", Limit(5, timedelta(minutes=1)))
    answers = []
    for i in range(6):
        answers.append(login(from_address(web_app, f"203.0.113.{i + 1}"), f"7916300000{i}").status_code)
    assert answers == [400] * 5 + [429]


# -- 3. nobody else uses up a member's SMS ------------------------------------------------------------------


def test_login_codes_asked_by_a_stranger_do_not_block_the_members_password_restore(client):
    for _ in range(3):
        assert request_code(client, ALICE, "login").status_code == 202
    assert request_code(client, ALICE, "login").status_code == 429
    # the member's own restore still gets its code: the limits are per number and purpose
    assert request_code(client, ALICE, "password").status_code == 202
    assert sms_count(client, ALICE) == 4


def test_a_code_to_confirm_spending_goes_only_to_the_signed_in_member(client):
    assert request_code(client, ALICE, "confirm").status_code == 401
    bob = sign_in(client, BOB)
    assert request_code(client, ALICE, "confirm", headers=bob).status_code == 401  # another member's token
    alice = sign_in(client, ALICE)
    before = sms_count(client, ALICE)
    assert request_code(client, ALICE, "confirm", headers=alice).status_code == 202
    assert sms_count(client, ALICE) == before + 1


def test_refused_requests_do_not_use_up_the_addresss_allowance(client):
    # given: 3 codes sent to ALICE, then 17 refused for her (her number is full)
    answers = [request_code(client, ALICE).status_code for _ in range(20)]
    assert answers == [202] * 3 + [429] * 17
    # then: the address has sent 3 codes, not 20: it can still send to others
    assert [request_code(client, f"7916400{i:04d}").status_code for i in range(17)] == [202] * 17
    assert request_code(client, BOB).status_code == 429  # 20 codes sent from it: the address is full now


def test_an_address_that_keeps_being_refused_is_refused_outright(client, clock):
    assert [request_code(client, f"7916500{i:04d}").status_code for i in range(20)] == [202] * 20
    clock.advance(minutes=5)
    assert all(request_code(client, f"7916600{i:04d}").status_code == 429 for i in range(100))
    # a flood stores no more refusals than the limit needs (60), however long it goes on
    refusals = client.app.state.context.store.query(
        "SELECT COUNT(*) FROM web_rate_hits WHERE bucket = ?", ("refused:testclient",))
    assert refusals == [(60,)]
    clock.advance(minutes=5, seconds=1)  # the 20 sends left the window; the refusals have not
    assert request_code(client, CAROL).status_code == 429
    clock.advance(minutes=5)
    assert request_code(client, CAROL).status_code == 202
    assert sms_count(client, CAROL) == 1


def test_one_address_sends_at_most_fifty_codes_a_day(client, clock):
    sent = 0
    for batch in range(3):
        sent += sum(request_code(client, f"791670{batch}{i:04d}").status_code == 202 for i in range(20))
        clock.advance(minutes=10, seconds=1)
    assert sent == 50  # the third batch: 10 sent, 10 refused
    assert request_code(client, CAROL).status_code == 429
    clock.advance(hours=23, minutes=30)  # a day after the first code
    assert request_code(client, CAROL).status_code == 202


def test_ipv6_clients_are_limited_by_their_64_network(web_app):
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.5") == "192.0.2.5" and client_key("192.0.2.5") == "192.0.2.5"
    answers = []
    for i in range(21):  # a new address of the same /64 for each request
        answers.append(request_code(from_address(web_app, f"2001:db8:1:2::{i + 1:x}"), f"7916800{i:04d}").status_code)
    assert answers == [202] * 20 + [429]
    assert request_code(from_address(web_app, "2001:db8:1:3::1"), CAROL).status_code == 202


# -- 4. only ASCII digits make a number ------------------------------------------------------------------


def test_a_number_of_non_ascii_digits_gets_no_code_no_session_and_no_member(client, gateway_client, programme):
    for number in (ARABIC_INDIC, SUPERSCRIPTS, ALICE + "\n"):
        assert request_code(client, number).status_code == 422
        assert login(client, number).status_code == 422
    form = client.get("/login/sms")
    page = client.post("/login/sms", data={"phone": ARABIC_INDIC, "csrf": csrf_of(form)}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].endswith("msg=bad_phone")
    network = gateway_client.post("/api/v1/auth/network", json={"accept_terms": True}, headers={"X-MSISDN": SUPERSCRIPTS.encode("latin-1")})
    assert network.status_code == 401
    assert sms_count(client) == 0
    app = client.app.state.context.runtime.app
    with pytest.raises(InvalidMsisdnError):
        app.enroll_member(ARABIC_INDIC, "web", START)
    with pytest.raises(InvalidMsisdnError):
        app.debit(SUPERSCRIPTS, 10, purpose="order", idempotency_key="k", reference={}, at=START)
    assert programme.balances() == {}  # nothing reached the event log


# -- 5. a form's points in other digits; a 500 keeps the security headers -----------------------------------


def test_superscript_points_on_the_transfers_page_are_refused_not_a_500(client, programme):
    member_with_points(programme, ALICE, 100)
    member_with_points(programme, BOB, 0)
    page_sign_in(client)
    form = client.get("/transfers")
    answer = client.post("/transfers", data={"recipient": BOB, "points": "²", "csrf": csrf_of(form)},
                         follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].endswith("msg=invalid_points")
    assert programme.balances() == {ALICE: 100, BOB: 0}


def test_an_unexpected_error_answers_500_with_the_security_headers(client, monkeypatch):
    headers = sign_in(client, ALICE)

    def broken(msisdn):
        raise RuntimeError("a fault the code did not foresee")

    monkeypatch.setattr(client.app.state.context.cabinet, "account_query", broken)
    answer = client.get("/api/v1/me", headers=headers)
    assert answer.status_code == 500 and answer.json() == {"error": "internal_error", "detail": "try again later"}
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY" and answer.headers["cache-control"] == "no-store"
    assert "a fault" not in answer.text


# -- 6. sessions end on a password change, when idle, and everywhere on request -----------------------------


def test_a_password_change_ends_the_numbers_other_sessions_but_not_its_own(client):
    phone, laptop = sign_in(client, ALICE), sign_in(client, ALICE)
    request_code(client, ALICE, "password")
    changed = client.put("/api/v1/me/password", headers=phone,
                         json={"code": last_code(client.app, ALICE), "password": "Zima-2026-dekabr"})
    assert changed.status_code == 204
    assert client.get("/api/v1/me", headers=phone).status_code == 200
    assert client.get("/api/v1/me", headers=laptop).status_code == 401


def test_restoring_a_lost_password_ends_every_session_of_the_number(client):
    thief = sign_in(client, ALICE)
    request_code(client, ALICE, "password")
    reset = client.post("/api/v1/auth/password/reset",
                        json={"msisdn": ALICE, "code": last_code(client.app, ALICE), "password": "Zima-2026-dekabr"})
    assert reset.status_code == 204
    assert client.get("/api/v1/me", headers=thief).status_code == 401


def test_a_session_ends_after_an_hour_without_requests_and_lives_while_used(client, clock):
    used, idle = sign_in(client, ALICE), sign_in(client, BOB)
    for _ in range(3):  # 150 minutes in all, never an hour apart
        clock.advance(minutes=50)
        assert client.get("/api/v1/me", headers=used).status_code == 200
    assert client.get("/api/v1/me", headers=idle).status_code == 401
    clock.advance(minutes=60, seconds=1)
    assert client.get("/api/v1/me", headers=used).status_code == 401


def test_signing_out_everywhere_ends_the_api_tokens_and_page_sessions_of_the_number(client, web_app):
    phone, other = sign_in(client, ALICE), sign_in(client, BOB)
    browser = from_address(web_app, "192.0.2.30")
    page_sign_in(browser)
    assert browser.get("/settings", follow_redirects=False).status_code == 200
    assert client.post("/api/v1/auth/logout/all", headers=phone).status_code == 204
    assert browser.get("/settings", follow_redirects=False).headers["location"] == "/login"
    assert client.get("/api/v1/me", headers=phone).status_code == 401
    assert client.get("/api/v1/me", headers=other).status_code == 200  # another number is not touched


def test_the_settings_page_signs_out_on_every_device(client):
    api = sign_in(client, ALICE)
    page_sign_in(client)
    settings = client.get("/settings")
    assert "Выйти на всех устройствах" in settings.text
    out = client.post("/settings/logout-all", data={"csrf": csrf_of(settings)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"].startswith("/login")
    assert client.get("/api/v1/me", headers=api).status_code == 401
    assert client.get("/account", follow_redirects=False).headers["location"] == "/login"


# -- 7. bodies are bounded before they are parsed ----------------------------------------------------------------


def test_a_large_body_is_refused_with_413_before_it_is_parsed(client):
    big = b'{"msisdn": "' + b"7" * 100_000 + b'", "purpose": "login"}'
    answer = client.post("/api/v1/auth/otp/request", content=big, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.json()["error"] == "request_too_large"
    assert answer.headers["x-content-type-options"] == "nosniff"
    form = client.post("/login/sms", content=b"phone=" + b"7" * 100_000,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 413
    assert sms_count(client) == 0


def test_a_large_body_without_a_length_is_cut_off_at_the_limit(client):
    def chunks():
        yield b'{"msisdn": "79160000001", "purpose": "login", "pad": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    answer = client.post("/api/v1/auth/otp/request", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.json()["error"] == "request_too_large"
    assert sms_count(client) == 0


# -- 8. a transfer tells nothing of who is a member ---------------------------------------------------------------


def test_a_transfer_beyond_the_balance_answers_the_same_for_a_member_and_a_stranger(client, programme):
    member_with_points(programme, ALICE, 90)
    member_with_points(programme, BOB, 0)
    alice = sign_in(client, ALICE)

    def offer(to, key):
        return client.post("/api/v1/transfers", headers=alice,
                           json={"recipient": to, "points": 10_000_000, "idempotency_key": key})

    member, stranger = offer(BOB, "t1"), offer(CAROL, "t2")
    assert (member.status_code, member.json()["error"]) == (stranger.status_code, stranger.json()["error"])
    assert member.json()["error"] == "insufficient_points"
    assert programme.balances() == {ALICE: 90, BOB: 0}


def test_transfer_offers_are_limited_per_member(client, programme):
    member_with_points(programme, ALICE, 90)
    alice = sign_in(client, ALICE)
    answers = [client.post("/api/v1/transfers", headers=alice,
                           json={"recipient": f"7916900{i:04d}", "points": 1, "idempotency_key": f"p{i}"}).status_code
               for i in range(21)]
    assert answers == [422] * 20 + [429]  # strangers: refused, but counted
    assert programme.balances() == {ALICE: 90}


# -- 9. transport: Secure and HSTS come from configuration, not from the bind address --------------------------------


def test_cookies_are_secure_and_hsts_is_sent_unless_development_turns_them_off(client):
    answer = page_sign_in(client)
    cookie = [h for h in answer.headers.get_list("set-cookie") if h.startswith("accrual_session=")][0]
    assert "secure" in cookie.lower()
    assert answer.headers["strict-transport-security"] == "max-age=31536000"


@pytest.mark.parametrize("web_env", [{"ACCRUAL_INSECURE_COOKIES": "1"}])
def test_plain_http_development_drops_secure_and_hsts(client, web_env):
    answer = page_sign_in(client)
    cookie = [h for h in answer.headers.get_list("set-cookie") if h.startswith("accrual_session=")][0]
    assert "secure" not in cookie.lower()
    assert "strict-transport-security" not in answer.headers


# -- 10. strict types, no third-party script on our origin, passwords by a list of common ones ------------------------


def test_points_as_a_boolean_or_a_string_are_refused(client, programme):
    member_with_points(programme, ALICE, 90)
    member_with_points(programme, BOB, 0)
    alice = sign_in(client, ALICE)
    for points in (True, "10", 1.0):
        answer = client.post("/api/v1/transfers", headers=alice,
                             json={"recipient": BOB, "points": points, "idempotency_key": f"k{points!r}"})
        assert answer.status_code == 422 and answer.json()["error"] == "invalid_request"
    assert verify_strict(client).status_code == 422
    assert programme.balances() == {ALICE: 90, BOB: 0}


def verify_strict(client):
    request_code(client, CAROL)
    return client.post("/api/v1/auth/otp/verify",
                       json={"msisdn": CAROL, "code": last_code(client.app, CAROL), "accept_terms": "yes"})


def test_no_swagger_page_loads_a_script_from_a_cdn_on_our_origin(client):
    assert client.get("/api/docs").status_code == 404
    assert client.get("/openapi.json").status_code == 200
    page = client.get("/login")
    assert "default-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.parametrize("password", ["Password1", "qwerty123", "iloveyou", "1234567890", "ZAQ12wsx"])
def test_a_common_password_is_refused(client, password):
    headers = sign_in(client, ALICE)
    request_code(client, ALICE, "password")
    answer = client.put("/api/v1/me/password", headers=headers,
                        json={"code": last_code(client.app, ALICE), "password": password})
    assert answer.status_code == 400 and answer.json()["error"] == "weak_password"


@pytest.mark.parametrize("password", ["ёлки зелёные на крыше", "correct horse battery staple", "87243990125564"])
def test_a_long_password_needs_no_mix_of_letters_and_digits(client, password):
    headers = sign_in(client, ALICE)
    request_code(client, ALICE, "password")
    answer = client.put("/api/v1/me/password", headers=headers,
                        json={"code": last_code(client.app, ALICE), "password": password})
    assert answer.status_code == 204
    assert login(client, ALICE, password).status_code == 200


def test_a_password_with_the_members_number_in_it_is_refused(client):
    headers = sign_in(client, ALICE)
    request_code(client, ALICE, "password")
    answer = client.put("/api/v1/me/password", headers=headers,
                        json={"code": last_code(client.app, ALICE), "password": f"my{ALICE[1:]}!"})
    assert answer.status_code == 400 and answer.json()["error"] == "weak_password"

