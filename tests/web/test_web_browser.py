"""End to end in headless Chromium (Debian's, driven by Playwright), as a
person would use it after the README: `accrual serve` on the embedded SQLite
store, points arriving through `accrual ingest`, sign-in with the code that
`accrual sms outbox --json` shows, the balance and the history, a gift
ordered, the balance lower. The screenshot is kept in test-artifacts/."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.programme import TOPICS
from tests.web.conftest import serving

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MEMBER = "79161234567"
RECIPIENT = "79161234568"  # a member with no points, to send some to


def accrual(env, *args) -> str:
    done = subprocess.run([sys.executable, "-m", "accrual.cli", *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def served(tmp_path):
    """`accrual serve` on an SQLite file, with a member who has 700 points."""
    env = {**os.environ, "ACCRUAL_DATABASE_URL": f"sqlite:///{tmp_path / 'accrual.sqlite3'}"}
    messages = [
        {"topic": TOPICS["member_enrolled"], "event_id": "e-1", "type": "member_enrolled",
         "occurred_at": "2026-10-01T10:00:00+03:00", "msisdn": MEMBER, "channel": "shop"},
        {"topic": TOPICS["ballyplus_transfer"], "event_id": "b-1", "type": "ballyplus_transfer",
         "occurred_at": "2026-10-05T10:00:00+03:00", "msisdn": MEMBER, "partner_points": 700},
        {"topic": TOPICS["member_enrolled"], "event_id": "e-2", "type": "member_enrolled",
         "occurred_at": "2026-10-01T10:00:00+03:00", "msisdn": RECIPIENT, "channel": "shop"},
    ]
    feed = tmp_path / "feed.jsonl"
    feed.write_text("".join(json.dumps(m) + "\n" for m in messages))
    accrual(env, "ingest", str(feed))
    with serving(env) as (base, _):
        yield base, env


def sign_in_with_a_code(page, base: str, env: dict) -> None:
    """As a member would: the number, the code from the SMS (the outbox)."""
    from playwright.sync_api import expect

    page.goto(f"{base}/login")
    page.click("#sms-login")
    page.fill("input[name=phone]", "+7 916 123-45-67")
    page.click("button:has-text('Получить код')")
    expect(page.locator(".message")).to_contain_text("Код отправлен")
    outbox = json.loads(accrual(env, "sms", "outbox", "--json", "--msisdn", MEMBER))
    page.fill("input[name=code]", re.search(r"\b(\d{6})\b", outbox[0]["text"]).group(1))
    page.click("button:has-text('Войти')")


def test_a_member_signs_in_with_the_sms_code_and_orders_a_gift(served):
    from playwright.sync_api import expect, sync_playwright

    base, env = served
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(locale="ru-RU", viewport={"width": 1200, "height": 900})
        try:
            sign_in_with_a_code(page, base, env)
            expect(page.locator("#balance")).to_have_text("700")
            # `accrual serve` on a loopback address still sets Secure cookies
            # (the address says nothing of TLS); browsers keep them on localhost.
            session = [c for c in page.context.cookies() if c["name"] == "accrual_session"]
            assert session and session[0]["secure"] and session[0]["httpOnly"]

            page.click("nav >> text=История")
            expect(page.locator("#history")).to_contain_text("Баллы Плюс")
            expect(page.locator("#history")).to_contain_text("+700")

            page.click("nav >> text=Каталог")
            page.click("a:has-text('Мелодии вместо гудков')")
            page.locator("[data-item=gudok-month] button:has-text('Заказать')").click()
            # the confirmation step: what, the price, what is left (700 - 100 = 600); nothing spent yet
            expect(page.locator("h1")).to_have_text("Подтвердите заказ")
            expect(page.locator("#after")).to_have_text("600 баллов")
            page.click("button:has-text('Подтвердить заказ')")
            expect(page.locator("h1")).to_have_text("Заказ оформлен")
            expect(page.locator("#order")).to_contain_text("Как получить")
            expect(page.locator("#balance")).to_have_text("600")
            page.click("text=Вернуться в каталог")
            expect(page.locator("#orders")).to_contain_text("оформлен")

            page.click("nav >> text=Баланс")
            expect(page.locator("#balance")).to_have_text("600")
            page.screenshot(path=str(ARTIFACTS / "personal-account.png"), full_page=True)
        finally:
            browser.close()


PAGES = ("account", "history", "catalog", "catalog/confirm?item_id=gudok-month", "transfers", "settings", "earn",
         "offers", "terms")
SIGNED_OUT_PAGES = ("login", "login/sms", "password/restore", "catalog", "earn", "offers", "terms")
# WCAG 2.1 A and AA, as axe-core tags them
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def axe_findings(page) -> list[str]:
    """axe-core's serious and critical violations of WCAG 2.1 AA on the page
    shown. axe.min.js is the npm package's build, as shipped inside the
    axe-playwright-python wheel (npm is not reachable from CI)."""
    from importlib import resources

    page.add_script_tag(path=str(resources.files("axe_playwright_python") / "axe.min.js"))
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG_21_AA)
    assert result["passes"], "axe-core ran no check"
    return [f"{v['impact']} {v['id']}: {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("width", [390, 1280])
def test_every_page_fits_the_screen_reads_in_russian_and_passes_axe(served, width):
    """At a phone's 390 px and a desktop's 1280 px: no page scrolls sideways,
    axe-core finds no serious or critical WCAG 2.1 AA violation, the points
    take their plural form, and a screenshot of each page is kept in
    test-artifacts/ for a person to look at."""
    from playwright.sync_api import expect, sync_playwright

    base, env = served
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        # The pages' Content-Security-Policy forbids inline scripts; the test
        # browser lifts it so that axe-core can be injected.
        page = browser.new_page(locale="ru-RU", viewport={"width": width, "height": 800}, bypass_csp=True)
        findings: dict[str, list[str]] = {}

        def look(label: str) -> None:
            """The page shown: no sideways scroll, a screenshot, axe-core."""
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            page.screenshot(path=str(ARTIFACTS / f"{re.sub(r'[^a-z0-9]+', '-', label)}-{width}.png"), full_page=True)
            assert overflow <= 0, f"{label} scrolls sideways by {overflow} px at {width} px"
            found = axe_findings(page)
            if found:
                findings[label] = found

        def check(name: str, signed_in: bool) -> None:
            page.goto(f"{base}/{name}")
            look(name if signed_in else f"{name} signed out")

        try:
            for name in SIGNED_OUT_PAGES:
                check(name, signed_in=False)
            sign_in_with_a_code(page, base, env)
            expect(page.locator(".balance")).to_have_text("700 баллов")
            for name in PAGES:
                check(name, signed_in=True)
            # the confirmation steps, and the pages after them
            page.goto(f"{base}/transfers")
            page.fill("input[name=recipient]", "+7 916 123-45-68")
            page.fill("input[name=points]", "100")
            page.click("button:has-text('Далее')")
            expect(page.locator("h1")).to_have_text("Подтвердите перевод")
            expect(page.locator("#after")).to_have_text("600 баллов")  # 700 - 100, nothing taken yet
            look("transfer confirm")
            page.click("button:has-text('Перевести')")
            expect(page.locator(".message")).to_contain_text("Перевод отправлен")
            expect(page.locator("#balance")).to_have_text("600")
            look("transfer sent")
            page.goto(f"{base}/catalog/confirm?item_id=gudok-month")
            page.click("button:has-text('Подтвердить заказ')")
            expect(page.locator("h1")).to_have_text("Заказ оформлен")
            expect(page.locator("#balance")).to_have_text("500")  # 600 - 100
            look("order done")
            assert not findings, f"axe-core at {width} px: {findings}"
            # the menu: every section is reachable at this width (folded into «Ещё» on a phone)
            page.goto(f"{base}/account")
            if width < 700:
                expect(page.locator("nav >> text=Настройки").first).not_to_be_visible()
                page.click("summary:has-text('Ещё')")
            page.locator("nav a:visible", has_text="Настройки").first.click()
            expect(page).to_have_url(f"{base}/settings")
        finally:
            browser.close()
