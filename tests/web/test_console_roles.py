"""The role table: every console route, for every role, does what the role
may and refuses what it may not (docs/console.md, Roles). A route that is
not in this table fails `test_every_console_route_is_in_the_table`."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Route

from tests.web.conftest import ALICE, member_with_points
from tests.web.console_support import add_staff, code_now, csrf_of, page_signed_in_staff, signed_in_staff

O, S, A = "operator", "supervisor", "auditor"
UNKNOWN = "00000000-0000-0000-0000-000000000000"
ADJUSTMENT = {"msisdn": ALICE, "points": 10, "reason": "Проверка ролей консоли", "idempotency_key": "roles-1"}

# (method, route, concrete path, JSON body, the roles that may)
API = [
    ("GET", "/api/v1/ops/members", "/api/v1/ops/members?prefix=7916", None, {O, S, A}),
    ("GET", "/api/v1/ops/members/{msisdn}", f"/api/v1/ops/members/{ALICE}", None, {O, S, A}),
    ("GET", "/api/v1/ops/members/{msisdn}/history", f"/api/v1/ops/members/{ALICE}/history", None, {O, S, A}),
    ("POST", "/api/v1/ops/adjustments", "/api/v1/ops/adjustments", ADJUSTMENT, {O, S}),
    ("GET", "/api/v1/ops/adjustments", "/api/v1/ops/adjustments", None, {O, S, A}),
    ("GET", "/api/v1/ops/adjustments/{adjustment_id}", f"/api/v1/ops/adjustments/{UNKNOWN}", None, {O, S, A}),
    ("POST", "/api/v1/ops/adjustments/{adjustment_id}/approve", f"/api/v1/ops/adjustments/{UNKNOWN}/approve", None,
     {S}),
    ("POST", "/api/v1/ops/adjustments/{adjustment_id}/reject", f"/api/v1/ops/adjustments/{UNKNOWN}/reject", None, {S}),
    ("GET", "/api/v1/ops/dead-letters", "/api/v1/ops/dead-letters", None, {S, A}),
    ("GET", "/api/v1/ops/dead-letters/{rejection_id}", f"/api/v1/ops/dead-letters/{UNKNOWN}", None, {S, A}),
    ("POST", "/api/v1/ops/dead-letters/{rejection_id}/redrive", f"/api/v1/ops/dead-letters/{UNKNOWN}/redrive", None,
     {S}),
    ("GET", "/api/v1/ops/dashboard", "/api/v1/ops/dashboard", None, {S, A}),
    ("GET", "/api/v1/ops/audit-log", "/api/v1/ops/audit-log", None, {S, A}),
]
# Open to every signed-in staff member, whatever the role (their own session).
API_OWN = [
    ("POST", "/api/v1/ops/auth/login"), ("POST", "/api/v1/ops/auth/logout"), ("PUT", "/api/v1/ops/me/password"),
    ("GET", "/api/v1/ops/me"),
]
PAGES = [
    ("GET", "/ops/members", "/ops/members?prefix=7916", {O, S, A}),
    ("GET", "/ops/members/{msisdn}", f"/ops/members/{ALICE}", {O, S, A}),
    ("POST", "/ops/adjustments", "/ops/adjustments", {O, S}),
    ("GET", "/ops/adjustments", "/ops/adjustments", {O, S, A}),
    ("POST", "/ops/adjustments/{adjustment_id}/{decision}", f"/ops/adjustments/{UNKNOWN}/approve", {S}),
    ("GET", "/ops/dead-letters", "/ops/dead-letters", {S, A}),
    ("GET", "/ops/dead-letters/{rejection_id}", f"/ops/dead-letters/{UNKNOWN}", {S, A}),
    ("POST", "/ops/dead-letters/{rejection_id}/redrive", f"/ops/dead-letters/{UNKNOWN}/redrive", {S}),
    ("GET", "/ops/dashboard", "/ops/dashboard", {S, A}),
    ("GET", "/ops/audit", "/ops/audit", {S, A}),
]
PAGES_OWN = [("GET", "/ops"), ("GET", "/ops/login"), ("POST", "/ops/login"), ("POST", "/ops/logout"),
             ("GET", "/ops/password"), ("POST", "/ops/password")]


def _routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route of the app, those of included routers too."""
    found = set()
    for route in app.routes:
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        for context in contexts:
            if isinstance(context, Route) or hasattr(context, "methods"):
                found |= {(method, context.path) for method in (context.methods or ()) - {"HEAD"}}
    return found


def test_every_console_route_is_in_the_table(web_app):
    routes = {(method, path) for method, path in _routes(web_app) if path.startswith(("/api/v1/ops", "/ops"))}
    table = {(m, r) for m, r, *_ in API} | set(API_OWN) | {(m, r) for m, r, *_ in PAGES} | set(PAGES_OWN)
    assert routes == table


@pytest.fixture
def alice(programme):
    member_with_points(programme, ALICE, 300)


@pytest.mark.parametrize("role", [O, S, A])
def test_the_api_does_what_the_role_may_and_refuses_the_rest(client, clock, alice, role):
    staff = signed_in_staff(client, clock, f"who.{role}", role)
    for method, route, path, body, roles in API:
        answer = client.request(method, path, headers=staff.headers, json=body)
        if role in roles:
            assert answer.status_code not in (401, 403), (role, method, route, answer.text)
            assert answer.status_code < 500, (role, method, route, answer.text)
        else:
            assert (answer.status_code, answer.json()["error"]) == (403, "forbidden"), (role, method, route)


@pytest.mark.parametrize("role", [O, S, A])
def test_the_pages_do_what_the_role_may_and_refuse_the_rest(web_app, clock, alice, role):
    with TestClient(web_app, base_url="https://testserver") as browser:
        page_signed_in_staff(browser, clock, f"who.{role}", role)
        csrf = csrf_of(browser.get("/ops/members").text)
        for method, route, path, roles in PAGES:
            data = {"csrf": csrf, "msisdn": ALICE, "points": "10", "reason": "Проверка ролей консоли", "key": "r1"}
            answer = browser.request(method, path, data=data if method == "POST" else None, follow_redirects=False)
            if role in roles:
                assert answer.status_code in (200, 303, 404), (role, method, route, answer.status_code)
            else:
                assert answer.status_code == 403, (role, method, route, answer.status_code)


def test_without_a_session_the_api_answers_401_and_the_pages_send_to_the_sign_in(client, alice):
    for method, route, path, body, _ in API:
        assert client.request(method, path, json=body).status_code == 401, route
    for method, route, path, _ in PAGES:
        answer = client.request(method, path, data={"csrf": "x"} if method == "POST" else None,
                                follow_redirects=False)
        assert answer.status_code in (303, 403), route  # a POST without a session fails its CSRF check first
        if answer.status_code == 303:
            assert answer.headers["location"] == "/ops/login", route


def test_before_the_first_password_change_only_the_change_is_allowed(client, clock, alice):
    credentials = add_staff(client, "olga", S)
    token = client.post("/api/v1/ops/auth/login", json={
        "login": "olga", "password": credentials.password, "totp": code_now(credentials, clock)}).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    for method, route, path, body, _ in API:
        answer = client.request(method, path, headers=headers, json=body)
        assert (answer.status_code, answer.json()["error"]) == (403, "password_change_required"), route
    assert client.get("/api/v1/ops/me", headers=headers).json()["must_change_password"] is True
