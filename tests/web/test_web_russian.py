"""The member pages in good Russian (issue 11, items 4, 5 and 7): plural
forms, thousands separators, dates in words, no internal ids, lots that
have expired shown as such, empty states and a favicon."""
from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

import pytest

from tests.web.conftest import ALICE, BOB, CAROL, member_with_points
from tests.web.test_web_pages import csrf_of, page_sign_in
from web import formatting as fmt

NBSP = "\u00a0"


# -- the formatting itself (pure) ---------------------------------------------------------------


@pytest.mark.parametrize("points, text", [
    (0, "0 баллов"), (1, "1 балл"), (2, "2 балла"), (4, "4 балла"), (5, "5 баллов"), (11, "11 баллов"),
    (12, "12 баллов"), (21, "21 балл"), (22, "22 балла"), (25, "25 баллов"), (101, "101 балл"),
    (111, "111 баллов"), (1000, "1 000 баллов"), (18503, "18 503 балла"), (1000001, "1 000 001 балл"),
])
def test_points_take_the_plural_form_of_their_number(points, text):
    assert fmt.points(points).replace(NBSP, " ") == text


def test_the_genitive_after_a_noun():
    # «срок действия 31 балла», «2 баллов», «5 баллов»
    assert [fmt.points_of(n).replace(NBSP, " ") for n in (1, 2, 5, 31)] == ["1 балла", "2 баллов", "5 баллов", "31 балла"]


def test_movements_have_a_sign_and_a_typographic_minus():
    assert fmt.signed_points(700).replace(NBSP, " ") == "+700 баллов"
    assert fmt.signed_points(-2).replace(NBSP, " ") == "\u22122 балла"
    assert fmt.signed_points(0).replace(NBSP, " ") == "0 баллов"


def test_money_dates_and_moments_in_words():
    assert fmt.rubles(Decimal("10000")).replace(NBSP, " ") == "10 000 ₽"
    assert fmt.rubles(Decimal("99.50")).replace(NBSP, " ") == "99,50 ₽"
    assert fmt.day(date(2026, 7, 25)) == "25 июля 2026"  # the month in the genitive after a day
    assert fmt.day("2026-03-01") == "1 марта 2026"
    assert fmt.month("2026-07-25") == "июль 2026"  # on its own: the nominative
    # 21:30 UTC on 31 December is 00:30 on 1 January in Moscow (UTC+3)
    assert fmt.moment("2026-12-31T21:30:00+00:00") == "1 января 2027, 00:30"
    assert fmt.months(12).replace(NBSP, " ") == "12 месяцев" and fmt.months(1).replace(NBSP, " ") == "1 месяц"


def test_a_reference_is_short_and_readable():
    assert fmt.reference("4f3a91c2-0d1e-4b5a-9c3d-2e1f0a9b8c7d") == f"№{NBSP}4F3A91C2"
    assert fmt.reference("") == ""


# -- the pages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("points, words", [(1, "балл"), (2, "балла"), (5, "баллов")])
def test_the_balance_is_written_with_the_plural_form_of_its_number(client, programme, points, words):
    member_with_points(programme, ALICE, points)
    page_sign_in(client)
    account = client.get("/account").text
    assert f'<span id="balance">{points}</span> {words}</p>' in account


def test_large_balances_have_thousands_separated(client, programme):
    member_with_points(programme, ALICE, 18503)
    page_sign_in(client)
    assert f'<span id="balance">18{NBSP}503</span> балла</p>' in client.get("/account").text


def test_lots_past_expiry_are_not_shown_as_expiring_or_spendable(client, programme):
    # given: 30 points credited 2025-10-01 (they expire 2026-10-01) and 70 on 2026-11-20; no tick since,
    # so on 2026-11-25 (the page's today) the books still hold all 100
    programme.enroll(ALICE, "2025-09-01 10:00", channel="shop")
    programme.ballyplus(ALICE, 30, "2025-10-01 10:00")
    programme.ballyplus(ALICE, 70, "2026-11-20 10:00")
    page_sign_in(client)
    # when
    account = client.get("/account").text
    # then: the balance says what the books say, and the 30 are named as expired, not as "expiring"
    assert '<span id="balance">100</span> баллов' in account
    lapsed = re.search(r'<p class="notice" id="lapsed">(.*?)</p>', account, re.S).group(1).replace(NBSP, " ")
    assert "Срок действия 30 баллов истёк 1 октября 2026" in lapsed and "<b>70 баллов</b>" in lapsed
    assert "В ближайшие 30 дней баллы не сгорают" in account
    # the months list only what is still valid: the 70 expire in November 2027
    expiry = re.search(r'<ul class="months" id="expiry">(.*?)</ul>', account, re.S).group(1).replace(NBSP, " ")
    assert "ноябрь 2027" in expiry and "70 баллов" in expiry and "2026" not in expiry
    me = client.get("/api/v1/me", headers={"Authorization": "Bearer " + _api_token(client)}).json()
    assert me["lapsed"] == 30 and me["lapsed_on"] == "2026-10-01" and me["expiring"]["30"] == 0


def _api_token(client) -> str:
    from tests.web.conftest import last_code

    client.post("/api/v1/auth/otp/request", json={"msisdn": ALICE, "purpose": "login"})
    answer = client.post("/api/v1/auth/otp/verify",
                         json={"msisdn": ALICE, "code": last_code(client.app, ALICE), "accept_terms": True})
    return answer.json()["token"]


def test_history_is_grouped_by_day_in_words_and_shows_no_internal_ids(client, programme):
    member_with_points(programme, ALICE, 0)
    programme.usage(ALICE, "500.00", "2026-11-10")  # 100 points (1 a 5 ₽)
    programme.ballyplus(ALICE, 7, "2026-11-20 10:00")
    page_sign_in(client)
    history = client.get("/history").text
    days = re.findall(r'<section class="card day">\s*<h2>([^<]+)</h2>', history)
    assert days[:2] == ["20 ноября 2026", "10 ноября 2026"]  # newest first
    assert "+7 баллов" in history.replace(NBSP, " ") and "+100 баллов" in history.replace(NBSP, " ")
    assert "Услуги связи" in history and "Баллы Плюс" in history
    assert "событие" not in history and "use-" not in history and not re.search(r"\d{4}-\d{2}-\d{2}", _text(history))


def _text(page: str) -> str:
    """The page's text, without its tags and attribute values (dates in
    `value=` of the filter's fields are ISO, as a date input wants)."""
    return re.sub(r"<[^>]*>", " ", page)


def test_the_history_pager_says_which_way_is_older(client, programme):
    member_with_points(programme, ALICE, 0)
    for day in range(1, 26):
        programme.ballyplus(ALICE, day, f"2026-11-{day:02d} 09:00")
    page_sign_in(client)
    first = client.get("/history").text
    assert 'page=2">Раньше →</a>' in first and "Новее" not in first
    second = client.get("/history?page=2").text
    assert 'page=1">← Новее</a>' in second


def test_lists_that_can_be_empty_say_so(client, programme):
    member_with_points(programme, CAROL, 0)
    page_sign_in(client, CAROL)
    assert "Переводов пока не было" in client.get("/transfers").text
    assert "Заказов пока нет" in client.get("/catalog").text
    assert "За выбранный период операций нет" in client.get("/history?kind=expired").text


def test_a_number_with_no_history_is_told_so(client):
    page_sign_in(client, ALICE)  # not a member: nothing in the log for this number
    assert "Операций пока нет" in client.get("/history").text


def test_orders_and_transfers_show_short_references_not_ids(client, programme):
    member_with_points(programme, ALICE, 500)
    member_with_points(programme, BOB, 0)
    page_sign_in(client)
    confirm = client.get("/catalog/confirm", params={"item_id": "gudok-month"})
    key = re.search(r'name="key" value="([^"]+-gudok-month)"', confirm.text).group(1)
    done = client.post("/catalog/order", data={"item_id": "gudok-month", "key": key, "csrf": csrf_of(confirm)})
    assert re.search(r"<b>№\xa0[0-9A-Z]{8}</b>", done.text)
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", _text(done.text))  # no UUID shown on the done page
    catalog = client.get("/catalog").text
    orders = re.search(r'<ul class="orders" id="orders">(.*?)</ul>', catalog, re.S).group(1)
    assert re.search(r"Заказ №\xa0[0-9A-Z]{8}", orders)
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", catalog)  # no UUID anywhere on the page
    page = client.get("/transfers")
    confirm = client.post("/transfers/confirm", data={"recipient": BOB, "points": "40", "csrf": csrf_of(page)})
    transfer_key = re.search(r'name="key" value="([^"]+)"', confirm.text).group(1)
    sent = client.post("/transfers", data={"recipient": BOB, "points": "40", "key": transfer_key,
                                           "csrf": csrf_of(confirm)})
    listed = re.search(r'<ul class="transfers" id="transfers">(.*?)</ul>', sent.text, re.S).group(1)
    assert "Вы → +7 916 000-00-02" in listed and "Ожидает ответа до" in listed
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", _text(sent.text))


def test_the_favicon_is_served(client):
    answer = client.get("/favicon.ico")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("image/svg+xml")
    assert answer.content.startswith(b"<svg")
