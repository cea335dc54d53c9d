"""What an attacker types into the console: control characters, NUL bytes
(which PostgreSQL's text refuses) and free text where a word is expected
are refused as requests, never answered as a store outage."""
from __future__ import annotations

from tests.web.conftest import ALICE, member_with_points, sign_in
from tests.web.console_support import signed_in_staff


def test_a_login_with_a_nul_byte_is_refused_like_a_wrong_one(client):
    answer = client.post("/api/v1/ops/auth/login", json={"login": "olga\x00", "password": "x" * 10, "totp": "123456"})
    assert (answer.status_code, answer.json()["error"]) == (401, "invalid_credentials")
    form = client.post("/ops/login", data={"login": "ol\x00ga", "password": "x", "totp": "1", "csrf": "x"},
                       follow_redirects=False)
    assert form.status_code == 403  # the CSRF check first; nothing reached the store


def test_filters_with_control_characters_are_invalid_requests(client, clock, programme):
    member_with_points(programme, ALICE, 10)
    olga = signed_in_staff(client, clock, "olga", "supervisor")
    for path in ("/api/v1/ops/dead-letters?reason=a%00b", "/api/v1/ops/dead-letters?topic=a%00b",
                 "/api/v1/ops/audit-log?login=ol%00ga", "/api/v1/ops/audit-log?action=x%00",
                 f"/api/v1/ops/members/{ALICE}/history?kind=accrued%00"):
        answer = client.get(path, headers=olga.headers)
        assert (answer.status_code, answer.json()["error"]) == (422, "invalid_request"), path
    assert client.get("/ops/dead-letters?reason=a%00b", follow_redirects=False).status_code == 303  # no page session
    member = sign_in(client, ALICE)
    answer = client.get("/api/v1/me/history?kind=%00%1E", headers=member)
    assert (answer.status_code, answer.json()["error"]) == (422, "invalid_request")


def test_a_reason_with_control_characters_is_refused(client, clock, programme):
    member_with_points(programme, ALICE, 10)
    ivan = signed_in_staff(client, clock, "ivan", "operator")
    answer = client.post("/api/v1/ops/adjustments", headers=ivan.headers, json={
        "msisdn": ALICE, "points": 5, "reason": "Компенсация\x00 за сбой", "idempotency_key": "k1"})
    assert (answer.status_code, answer.json()["error"]) == (422, "invalid_reason")
