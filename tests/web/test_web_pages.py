"""The Russian pages: sign-in with a code, the cookie's flags, CSRF, each
page a member uses, and the network header on pages."""
from __future__ import annotations

import re

import pytest

from tests.web.conftest import ALICE, BOB, last_code, member_with_points

pytestmark = pytest.mark.postgres


def csrf_of(page) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def page_sign_in(client, msisdn=ALICE):
    form = client.get("/login/sms")
    sent = client.post("/login/sms", data={"phone": "+7 " + msisdn[1:], "csrf": csrf_of(form)})
    assert "Код отправлен" in sent.text
    code = last_code(client.app, msisdn)
    return client.post("/login/sms/verify", data={"phone": msisdn, "code": code, "accept": "yes", "csrf": csrf_of(sent)},
                       follow_redirects=False)


def test_signing_in_with_a_code_sets_a_secure_http_only_session_cookie(client):
    answer = page_sign_in(client)
    assert answer.status_code == 303 and answer.headers["location"] == "/account"
    cookie = [h for h in answer.headers.get_list("set-cookie") if h.startswith("accrual_session=")][0].lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=lax" in cookie
    assert "Вы ещё не участвуете" in client.get("/account").text


def test_a_form_without_its_csrf_token_is_refused(client):
    client.get("/login/sms")
    assert client.post("/login/sms", data={"phone": ALICE, "csrf": "forged"}).status_code == 403
    page_sign_in(client)
    assert client.post("/account/enroll", data={"csrf": "forged"}).status_code == 403
    assert client.post("/account/enroll", data={}).status_code == 403


def test_pages_need_a_session(client):
    for path in ("/account", "/history", "/transfers", "/settings"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/login"


def test_a_member_sees_balance_history_catalogue_and_orders_a_gift(client, programme):
    member_with_points(programme, ALICE, 500)
    programme.link_mgts("MGTS-77", ALICE, "2026-11-02 10:00")
    page_sign_in(client)
    account = client.get("/account").text
    assert 'id="balance">500<' in account and "Когда сгорят баллы" in account and "MGTS-77" in account
    history = client.get("/history").text
    assert "Начисление" in history and "Баллы Плюс" in history
    catalog = client.get("/catalog")
    for title in ("Услуги связи", "Мелодии вместо гудков", "МТС Банк", "МГТС"):
        assert title in catalog.text
    # the order has a step that shows what it costs and what is left: 500 - 100 = 400
    confirm = client.get("/catalog/confirm", params={"item_id": "gudok-month"})
    assert "«Гудок»: мелодия на месяц" in confirm.text and 'id="after">400\xa0баллов<' in confirm.text
    assert 'id="balance">500<' in client.get("/account").text  # nothing is spent before the confirmation
    key = re.search(r'name="key" value="([^"]+-gudok-month)"', confirm.text).group(1)
    ordered = client.post("/catalog/order", data={"item_id": "gudok-month", "key": key, "csrf": csrf_of(confirm)})
    assert "Заказ оформлен" in ordered.text and 'id="balance">400<' in ordered.text
    assert "Как получить" in ordered.text and "в течение часа" in ordered.text and ordered.url.path.startswith("/orders/")
    client.post("/catalog/order", data={"item_id": "gudok-month", "key": key, "csrf": csrf_of(confirm)})
    assert 'id="balance">400<' in client.get("/account").text  # a resubmitted form is the same order
    assert "оформлен" in client.get("/catalog").text
    redeemed = client.get("/history?kind=redeemed").text
    assert "Списание" in redeemed and "Заказ: «Гудок»: мелодия на месяц" in redeemed


def test_registering_from_the_account_page(client, programme):
    page_sign_in(client)
    account = client.get("/account")
    enrolled = client.post("/account/enroll", data={"csrf": csrf_of(account)})
    assert "Вы зарегистрированы" in enrolled.text and 'id="balance">0<' in enrolled.text


def test_transfers_on_pages(client, programme):
    member_with_points(programme, ALICE, 100)
    member_with_points(programme, BOB, 0)
    page_sign_in(client, ALICE)
    page = client.get("/transfers")
    # the transfer has a step that shows to whom, how many and what is left: 100 - 40 = 60
    confirm = client.post("/transfers/confirm", data={"recipient": "8" + BOB[1:], "points": "40", "csrf": csrf_of(page)})
    assert "+7 916 000-00-02" in confirm.text and 'id="after">60\xa0баллов<' in confirm.text
    key = re.search(r'name="key" value="([^"]+)"', confirm.text).group(1)
    recipient = re.search(r'name="recipient" value="([^"]+)"', confirm.text).group(1)
    sent = client.post("/transfers", data={"recipient": recipient, "points": "40", "key": key, "csrf": csrf_of(confirm)})
    assert "Перевод отправлен" in sent.text and 'id="balance">60<' in sent.text
    client.post("/logout", data={"csrf": csrf_of(sent)})
    page_sign_in(client, BOB)
    incoming = client.get("/transfers")
    accept = re.search(r'action="(/transfers/[^"]+/accept)"', incoming.text).group(1)
    done = client.post(accept, data={"csrf": csrf_of(incoming)})
    assert "Принят" in done.text and 'id="balance">40<' in done.text


def test_settings_set_a_password_with_a_code_then_it_signs_in(client):
    page_sign_in(client)
    settings = client.get("/settings")
    assert "Установить постоянный пароль" in settings.text
    form = client.post("/settings/code", data={"csrf": csrf_of(settings)})
    saved = client.post("/settings/password", data={"code": last_code(client.app, ALICE), "password": "Leto-2026!",
                                                    "csrf": csrf_of(form)})
    assert "Пароль сохранён" in saved.text and "Сменить пароль" in saved.text
    client.post("/logout", data={"csrf": csrf_of(saved)})
    login = client.get("/login")
    signed = client.post("/login", data={"phone": ALICE, "password": "Leto-2026!", "accept": "yes", "csrf": csrf_of(login)})
    assert signed.url.path == "/account"


def test_the_public_pages_render(client):
    assert "1 балл за каждые 5 ₽" in client.get("/earn").text
    assert "Мелодия вместо гудков за 100 баллов" in client.get("/offers").text
    assert "Осенний марафон" not in client.get("/offers").text
    assert "Соглашение о пользовании системой" in client.get("/terms").text


def test_a_trusted_gateway_header_offers_one_click_sign_in(gateway_client, client):
    login = gateway_client.get("/login", headers={"X-MSISDN": ALICE})
    assert "Войти как +7 916 000-00-01" in login.text
    signed = gateway_client.post("/login/network", headers={"X-MSISDN": ALICE},
                                 data={"accept": "yes", "csrf": csrf_of(login)}, follow_redirects=False)
    assert signed.status_code == 303
    gateway_client.cookies.clear()
    again = gateway_client.get("/login", headers={"X-MSISDN": ALICE}, follow_redirects=False)
    assert again.status_code == 303  # the agreement is accepted: straight in
    spoofed = client.get("/login", headers={"X-MSISDN": ALICE}, follow_redirects=False)
    assert spoofed.status_code == 200 and "Войти как" not in spoofed.text


def test_a_network_session_on_pages_orders_only_with_a_confirmation_code(gateway_client, programme):
    member_with_points(programme, ALICE, 500)
    login = gateway_client.get("/login", headers={"X-MSISDN": ALICE})
    gateway_client.post("/login/network", headers={"X-MSISDN": ALICE}, data={"accept": "yes", "csrf": csrf_of(login)})
    confirm = gateway_client.get("/catalog/confirm", params={"item_id": "gudok-month"})
    assert "Получить код подтверждения" in confirm.text and 'name="code"' in confirm.text
    form = {"item_id": "gudok-month", "key": "k-net", "csrf": csrf_of(confirm)}
    refused = gateway_client.post("/catalog/order", data={**form, "code": "000000"})
    assert "Подтвердите операцию" in refused.text and 'id="balance">500<' in refused.text
    assert refused.url.path == "/catalog/confirm"  # back at the confirmation step of the same gift
    sent = gateway_client.post("/confirm/code", data={"csrf": csrf_of(confirm), "back": "/catalog/confirm?item_id=gudok-month"})
    assert sent.url.path == "/catalog/confirm" and "Код отправлен" in sent.text
    ordered = gateway_client.post("/catalog/order", data={**form, "code": last_code(gateway_client.app, ALICE)})
    assert "Заказ оформлен" in ordered.text and 'id="balance">400<' in ordered.text


def test_the_code_request_returns_only_to_our_own_pages(client):
    page_sign_in(client)
    form = client.get("/account")
    for back in ("https://evil.example/", "//evil.example", "/catalog/confirm?item_id=x&next=//evil"):
        answer = client.post("/confirm/code", data={"csrf": csrf_of(form), "back": back}, follow_redirects=False)
        assert answer.headers["location"].startswith("/account"), back


def test_pages_forbid_framing_and_caching_and_escape_what_they_show(client, programme):
    answer = client.get("/login")
    assert answer.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["cache-control"] == "no-store" and answer.headers["x-content-type-options"] == "nosniff"
    page_sign_in(client)
    shown = client.get("/history", params={"kind": "<script>", "since": "<script>"})
    assert shown.status_code == 200 and "<script>" not in shown.text
    programme.enroll(ALICE, "2026-11-01 10:00")
    programme.ballyplus(ALICE, 5, "2026-11-02 10:00", event_id="<b>evil</b>")
    history = client.get("/history").text
    assert "+5" in history and "evil" not in history  # a producer's event id is not shown to members at all
    from web.pages import templates
    assert templates.env.autoescape("history.html")  # the pages' templates escape what they show
