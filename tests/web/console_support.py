"""Helpers of the console's tests: staff accounts made as `accrual operators
add` makes them, and signing in with a password and a TOTP code computed the
way an authenticator app computes it."""
from __future__ import annotations

from dataclasses import dataclass

from fastapi.testclient import TestClient

from web import totp
from web.clock import FixedClock
from web.staff import NewCredentials

NEW_PASSWORD = "Сосновый бор 2026!"


@dataclass
class StaffLogin:
    credentials: NewCredentials
    password: str
    headers: dict[str, str]

    @property
    def login(self) -> str:
        return self.credentials.login


def code_now(credentials: NewCredentials, clock: FixedClock, steps_ahead: int = 0) -> str:
    return totp.code_at(credentials.totp_secret, totp.step_of(clock.now()) + steps_ahead)


def add_staff(client: TestClient, login: str, role: str) -> NewCredentials:
    return client.app.state.context.staff.add(login, role)


def signed_in_staff(client: TestClient, clock: FixedClock, login: str, role: str) -> StaffLogin:
    """A staff member past the first sign-in: initial password changed, then
    signed in again with the next TOTP step (a code is good once)."""
    credentials = add_staff(client, login, role)
    first = client.post("/api/v1/ops/auth/login", json={
        "login": login, "password": credentials.password, "totp": code_now(credentials, clock)})
    assert first.status_code == 200, first.text
    assert first.json()["must_change_password"] is True
    headers = {"Authorization": f"Bearer {first.json()['token']}"}
    changed = client.put("/api/v1/ops/me/password", headers=headers,
                         json={"current_password": credentials.password, "new_password": NEW_PASSWORD})
    assert changed.status_code == 204, changed.text
    return StaffLogin(credentials, NEW_PASSWORD, headers)


def csrf_of(html: str) -> str:
    import re

    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has a form with a CSRF token"
    return found.group(1)


def page_signed_in_staff(client: TestClient, clock: FixedClock, login: str, role: str) -> NewCredentials:
    """A staff member signed in on the pages (cookie on `client`), past the
    first password change."""
    credentials = add_staff(client, login, role)
    form = client.get("/ops/login")
    answer = client.post("/ops/login", data={"login": login, "password": credentials.password,
                                             "totp": code_now(credentials, clock), "csrf": csrf_of(form.text)},
                         follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/ops", answer.text
    page = client.get("/ops/password")
    changed = client.post("/ops/password", data={"current_password": credentials.password,
                                                  "new_password": NEW_PASSWORD, "csrf": csrf_of(page.text)},
                          follow_redirects=False)
    assert changed.status_code == 303, changed.text
    return credentials
