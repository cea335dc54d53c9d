"""Staff sign-in: password and TOTP code (RFC 6238), the first password
change, sessions that end after 30 idle minutes, lockout, and tokens that
do not cross between the member API and the console."""
from __future__ import annotations

from tests.web.conftest import ALICE, member_with_points, sign_in
from tests.web.console_support import NEW_PASSWORD, add_staff, code_now, signed_in_staff
from web import totp

LOGIN = "/api/v1/ops/auth/login"


def _login(client, credentials, code, password=None):
    return client.post(LOGIN, json={"login": credentials.login, "password": password or credentials.password,
                                    "totp": code})


# -- TOTP ------------------------------------------------------------------------------------------


def test_the_totp_code_is_the_rfc_6238_code():
    # RFC 6238 appendix B, SHA-1: the secret "12345678901234567890", T = 59 s
    # is step 1 (59 // 30), whose 8-digit code 94287082 ends in 287082.
    secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # base32 of the secret
    assert totp.code_at(secret, 1) == "287082"
    assert totp.code_at(secret, 1111111109 // 30) == "081804"


def test_a_wrong_code_is_refused(client, clock):
    credentials = add_staff(client, "olga", "supervisor")
    right = code_now(credentials, clock)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    answer = _login(client, credentials, wrong)
    assert (answer.status_code, answer.json()["error"]) == (401, "invalid_credentials")


def test_a_code_is_good_once(client, clock):
    credentials = add_staff(client, "olga", "supervisor")
    code = code_now(credentials, clock)
    assert _login(client, credentials, code).status_code == 200
    # the same code again, still within its 30 seconds: a replay
    assert _login(client, credentials, code).status_code == 401


def test_a_code_of_the_previous_window_is_accepted_and_not_twice(client, clock):
    credentials = add_staff(client, "olga", "supervisor")
    previous = code_now(credentials, clock, steps_ahead=-1)  # a phone 30 s behind
    assert _login(client, credentials, previous).status_code == 200
    assert _login(client, credentials, previous).status_code == 401


def test_a_code_of_the_next_window_is_accepted_and_not_twice(client, clock):
    credentials = add_staff(client, "olga", "supervisor")
    upcoming = code_now(credentials, clock, steps_ahead=1)  # a phone 30 s ahead
    assert _login(client, credentials, upcoming).status_code == 200
    assert _login(client, credentials, upcoming).status_code == 401
    # nor the current step's code: it is older than the one used
    assert _login(client, credentials, code_now(credentials, clock)).status_code == 401


def test_a_code_two_windows_away_is_refused(client, clock):
    credentials = add_staff(client, "olga", "supervisor")
    assert _login(client, credentials, code_now(credentials, clock, steps_ahead=2)).status_code == 401
    assert _login(client, credentials, code_now(credentials, clock, steps_ahead=-2)).status_code == 401


def test_the_right_code_with_a_wrong_password_is_refused_alike(client, clock):
    credentials = add_staff(client, "olga", "supervisor")
    answer = _login(client, credentials, code_now(credentials, clock), password="not the password")
    assert (answer.status_code, answer.json()["error"]) == (401, "invalid_credentials")


# -- the first sign-in -------------------------------------------------------------------------------


def test_the_initial_password_must_be_changed_before_anything_else(client, clock):
    credentials = add_staff(client, "olga", "supervisor")
    answer = _login(client, credentials, code_now(credentials, clock))
    assert answer.json()["must_change_password"] is True
    headers = {"Authorization": f"Bearer {answer.json()['token']}"}
    refused = client.get("/api/v1/ops/adjustments", headers=headers)
    assert (refused.status_code, refused.json()["error"]) == (403, "password_change_required")
    assert client.put("/api/v1/ops/me/password", headers=headers, json={
        "current_password": credentials.password, "new_password": NEW_PASSWORD}).status_code == 204
    assert client.get("/api/v1/ops/adjustments", headers=headers).status_code == 200
    # and the next sign-in (a later TOTP step) is a normal one
    clock.advance(seconds=30)
    again = _login(client, credentials, code_now(credentials, clock), password=NEW_PASSWORD)
    assert (again.status_code, again.json()["must_change_password"]) == (200, False)


def test_a_weak_new_password_is_refused(client, clock):
    credentials = add_staff(client, "olga", "supervisor")
    headers = {"Authorization": f"Bearer {_login(client, credentials, code_now(credentials, clock)).json()['token']}"}
    answer = client.put("/api/v1/ops/me/password", headers=headers,
                        json={"current_password": credentials.password, "new_password": "password"})
    assert (answer.status_code, answer.json()["error"]) == (400, "weak_password")


# -- sessions ------------------------------------------------------------------------------------------


def test_a_session_ends_after_30_idle_minutes(client, clock):
    olga = signed_in_staff(client, clock, "olga", "supervisor")
    clock.advance(minutes=29)
    assert client.get("/api/v1/ops/me", headers=olga.headers).status_code == 200
    clock.advance(minutes=29)  # 29 minutes after the last request: still alive
    assert client.get("/api/v1/ops/me", headers=olga.headers).status_code == 200
    clock.advance(minutes=30)
    assert client.get("/api/v1/ops/me", headers=olga.headers).status_code == 401


def test_a_disabled_account_is_signed_out_and_cannot_sign_in(client, clock):
    olga = signed_in_staff(client, clock, "olga", "supervisor")
    client.app.state.context.staff.disable("olga")
    assert client.get("/api/v1/ops/me", headers=olga.headers).status_code == 401
    clock.advance(seconds=30)
    assert _login(client, olga.credentials, code_now(olga.credentials, clock), password=olga.password).status_code == 401


def test_failed_sign_ins_make_the_login_wait(client, clock):
    credentials = add_staff(client, "olga", "supervisor")
    for _ in range(3):  # the free failures
        assert _login(client, credentials, "000000", password="wrong password").status_code == 401
    # the third failure made the login wait 1 s: now even the right credentials wait
    answer = _login(client, credentials, code_now(credentials, clock))
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) >= 1
    clock.advance(seconds=2)
    assert _login(client, credentials, code_now(credentials, clock)).status_code == 200


def test_a_member_token_is_refused_by_the_console_and_a_staff_token_by_the_member_api(client, clock, programme):
    member_with_points(programme, ALICE, 100)
    member = sign_in(client, ALICE)
    olga = signed_in_staff(client, clock, "olga", "supervisor")
    assert client.get("/api/v1/ops/me", headers=member).status_code == 401
    assert client.get(f"/api/v1/ops/members/{ALICE}", headers=member).status_code == 401
    assert client.get("/api/v1/me", headers=olga.headers).status_code == 401


def test_sign_ins_and_refusals_are_in_the_audit_log(client, clock):
    olga = signed_in_staff(client, clock, "olga", "supervisor")
    clock.advance(seconds=30)
    _login(client, olga.credentials, "000000", password="wrong password")
    entries = client.get("/api/v1/ops/audit-log", headers=olga.headers).json()["items"]
    actions = [(e["login"], e["action"]) for e in entries]
    assert ("olga", "sign_in") in actions and ("olga", "password_changed") in actions
    assert ("olga", "sign_in_refused") in actions
    assert all(e["address"] for e in entries)
