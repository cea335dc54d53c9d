"""The console end to end in headless Chromium, as a supervisor would use it
after docs/console.md: `accrual serve` on the embedded SQLite store, staff
made with `accrual operators add`, an operator's adjustment waiting for
approval (through the API), and the supervisor signing in with the password
and the code of an authenticator app, changing the initial password,
finding the member, approving, seeing the balance change and looking at
the programme at a glance. Screenshots are kept in test-artifacts/."""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import httpx
import pytest

from tests.programme import TOPICS
from tests.web.conftest import serving
from tests.web.test_web_browser import ARTIFACTS, CHROMIUM, MEMBER, accrual, axe_findings
from web import totp

pytestmark = pytest.mark.browser
NEW_PASSWORD = "Сосновый бор 2026!"


def code(secret: str, steps_ahead: int = 0) -> str:
    """What the authenticator app shows now (this process's clock is the server's)."""
    return totp.code_at(secret, totp.step_of(datetime.now(timezone.utc)) + steps_ahead)


@pytest.fixture
def console(tmp_path):
    env = {**os.environ, "ACCRUAL_DATABASE_URL": f"sqlite:///{tmp_path / 'accrual.sqlite3'}"}
    feed = tmp_path / "feed.jsonl"
    feed.write_text("".join(json.dumps(m) + "\n" for m in [
        {"topic": TOPICS["member_enrolled"], "event_id": "e-1", "type": "member_enrolled",
         "occurred_at": "2026-10-01T10:00:00+03:00", "msisdn": MEMBER, "channel": "shop"},
        {"topic": TOPICS["ballyplus_transfer"], "event_id": "b-1", "type": "ballyplus_transfer",
         "occurred_at": "2026-10-05T10:00:00+03:00", "msisdn": MEMBER, "partner_points": 700},
    ]))
    accrual(env, "ingest", str(feed))
    operator = json.loads(accrual(env, "operators", "add", "ivan", "--role", "operator", "--json"))
    supervisor = json.loads(accrual(env, "operators", "add", "olga", "--role", "supervisor", "--json"))
    with serving({**env, "ACCRUAL_INSECURE_COOKIES": "1"}) as (base, _):
        yield base, operator, supervisor


def operator_asks_for(base: str, operator: dict, points: int) -> str:
    """The operator, through the API: first sign-in, password change, then
    an adjustment above the approval threshold. Returns its id."""
    with httpx.Client(base_url=base) as api:
        token = api.post("/api/v1/ops/auth/login", json={
            "login": operator["login"], "password": operator["password"], "totp": code(operator["totp_secret"])})
        headers = {"Authorization": f"Bearer {token.json()['token']}"}
        assert api.put("/api/v1/ops/me/password", headers=headers, json={
            "current_password": operator["password"], "new_password": NEW_PASSWORD}).status_code == 204
        asked = api.post("/api/v1/ops/adjustments", headers=headers, json={
            "msisdn": MEMBER, "points": points, "reason": "Компенсация за сбой начисления в октябре",
            "idempotency_key": "browser-1"})
        assert asked.status_code == 201 and asked.json()["status"] == "pending_approval", asked.text
        return asked.json()["adjustment_id"]


def test_a_supervisor_signs_in_with_totp_approves_an_adjustment_and_sees_the_balance_change(console):
    from playwright.sync_api import expect, sync_playwright

    base, operator, supervisor = console
    operator_asks_for(base, operator, 1500)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(locale="ru-RU", viewport={"width": 1280, "height": 900})
        try:
            page.goto(f"{base}/ops")
            page.fill("input[name=login]", "olga")
            page.fill("input[name=password]", supervisor["password"])
            page.fill("input[name=totp]", code(supervisor["totp_secret"]))
            page.click("button:has-text('Войти')")
            # the first sign-in: the initial password must change
            expect(page.locator("h1")).to_have_text("Смена пароля")
            page.fill("input[name=current_password]", supervisor["password"])
            page.fill("input[name=new_password]", NEW_PASSWORD)
            page.click("button:has-text('Сохранить')")
            expect(page.locator(".message")).to_contain_text("Пароль сохранён")

            page.click("nav >> text=Участники")
            page.fill("input[name=prefix]", MEMBER[:6])
            page.click("button:has-text('Найти')")
            page.click("a:has-text('+7 916 123-45-67')")
            expect(page.locator("#balance")).to_have_text("700 баллов".replace(" ", "\u00a0"))

            page.click("nav >> text=Корректировки")
            row = page.locator("#adjustments tr", has_text="Компенсация за сбой")
            expect(row).to_contain_text("ivan")
            row.locator("button:has-text('Одобрить')").click()
            expect(page.locator(".message")).to_contain_text("одобрена и проведена")

            page.goto(f"{base}/ops/members/{MEMBER}")
            expect(page.locator("#balance")).to_have_text("2 200 баллов".replace(" ", "\u00a0"))  # 700 + 1,500
            expect(page.locator("#history")).to_contain_text("Компенсация за сбой")
            page.screenshot(path=str(ARTIFACTS / "console-member.png"), full_page=True)

            page.click("nav >> text=Сводка")
            expect(page.locator("h1")).to_have_text("Программа в целом")
            expect(page.locator("svg").first).to_be_visible()  # ops-charts.js drew, under the page's CSP
            page.screenshot(path=str(ARTIFACTS / "console-dashboard.png"), full_page=True)
            # axe-core is injected as an inline script, which the page's CSP
            # forbids: it runs in a second context that ignores the CSP, on
            # the same session.
            checker = browser.new_context(bypass_csp=True, locale="ru-RU")
            checker.add_cookies(page.context.cookies())
            checked = checker.new_page()
            checked.goto(f"{base}/ops/dashboard")
            assert axe_findings(checked) == []
            checker.close()

            page.click("nav >> text=Журнал действий")
            expect(page.locator("table")).to_contain_text("adjustment_approved")
        finally:
            browser.close()


CONSOLE_PAGES = ("ops/members?prefix=7916", f"ops/members/{MEMBER}", "ops/adjustments", "ops/adjustments?status=",
                 "ops/dead-letters", "ops/dashboard", "ops/audit", "ops/password")


def test_every_console_page_passes_axe(console):
    """axe-core finds no serious or critical WCAG 2.1 AA violation on any
    console page (signed in as a supervisor, in a context that lets the
    checker's inline script run); a screenshot of each is kept."""
    from playwright.sync_api import expect, sync_playwright

    base, operator, supervisor = console
    operator_asks_for(base, operator, 1500)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_context(bypass_csp=True, locale="ru-RU", viewport={"width": 1280, "height": 900}).new_page()
        try:
            page.goto(f"{base}/ops/login")
            assert axe_findings(page) == [], "ops/login"
            page.fill("input[name=login]", "olga")
            page.fill("input[name=password]", supervisor["password"])
            page.fill("input[name=totp]", code(supervisor["totp_secret"]))
            page.click("button:has-text('Войти')")
            page.fill("input[name=current_password]", supervisor["password"])
            page.fill("input[name=new_password]", NEW_PASSWORD)
            page.click("button:has-text('Сохранить')")
            expect(page.locator(".message")).to_contain_text("Пароль сохранён")
            findings = {}
            for path in CONSOLE_PAGES:
                page.goto(f"{base}/{path}")
                found = axe_findings(page)
                if found:
                    findings[path] = found
                name = path.replace("/", "-").replace("?", "-").replace("=", "")
                page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)
            assert findings == {}
        finally:
            browser.close()
