"""The personal account's pages, in Russian, rendered on the server.

A page session is a random token in an http-only cookie (Secure unless
development turned it off, SameSite=Lax). Every form carries a CSRF token:
the session's own once signed in, before that a random one that must match
its http-only, SameSite=Strict cookie (double submit)."""
from __future__ import annotations

import secrets
from datetime import date, datetime
from importlib import resources
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from engine.calendar import MOSCOW
from engine.errors import RuleRefusal
from web.api import ApiError, error_response
from web.app import client_address, context_of, is_msisdn, network_msisdn
from web.auth import SESSION_TTL, Session, TooManyRequests, WeakPassword, check_password_strength
from web.catalog import CATEGORIES
from web.service import NotFound, UnknownReward
from web.sms import SmsError

SESSION_COOKIE, CSRF_COOKIE = "accrual_session", "accrual_csrf"
HISTORY_KINDS = {
    "enrolled": "Регистрация", "accrued": "Начисление", "clawed_back": "Возврат покупки", "expired": "Сгорание",
    "redeemed": "Списание", "restored": "Отмена списания", "transfer_out": "Перевод", "transfer_in": "Перевод вам",
    "transfer_returned": "Возврат перевода", "not_eligible": "Без начисления",
}
RULES = {"usage": "Услуги связи", "shop": "Салоны МТС", "mgts": "МГТС", "card": "Карта МТС Банка",
         "ballyplus": "Баллы Плюс"}
MESSAGES = {  # ?msg= keys; the page never echoes text from the address bar
    "code_sent": "Код отправлен по SMS. Он действует 5 минут.",
    "bad_code": "Код неверный или устарел. Запросите новый.",
    "bad_login": "Неверный номер телефона или пароль.",
    "bad_phone": "Введите номер в формате +7 XXX XXX-XX-XX.",
    "terms": "Чтобы войти, примите условия Соглашения.",
    "slow_down": "Слишком много попыток. Попробуйте позже.",
    "sms_down": "Не удалось отправить SMS. Попробуйте позже.",
    "password_set": "Пароль сохранён.",
    "weak_password": "Пароль: от 8 символов, буквы вместе с цифрами или знаками.",
    "enrolled": "Вы зарегистрированы в программе МТС Бонус.",
    "ordered": "Заказ оформлен.",
    "confirm": "Подтвердите операцию кодом из SMS.",
    "transfer_sent": "Перевод отправлен. Получатель может принять его в течение 24 часов.",
    "transfer_done": "Готово.",
    "insufficient_points": "Недостаточно баллов.",
    "not_enrolled": "Сначала зарегистрируйтесь в программе.",
    "recipient_not_enrolled": "Получатель не участвует в программе.",
    "self_transfer": "Нельзя перевести баллы самому себе.",
    "invalid_points": "Укажите число баллов больше нуля.",
    "transfer_expired": "Срок принятия перевода истёк.",
    "transfer_settled": "Перевод уже завершён.",
    "refused": "Операция отклонена.",
}



def phone(msisdn: str | None) -> str:
    return f"+7 {msisdn[1:4]} {msisdn[4:7]}-{msisdn[7:9]}-{msisdn[9:11]}" if msisdn and len(msisdn) == 11 else msisdn or ""


def source_of(entry: dict[str, Any]) -> str:
    """Where a history line's points came from, in words."""
    detail, kind = entry["detail"], entry["kind"]
    if kind in ("redeemed", "restored"):
        reference = detail.get("reference") or {}
        if detail.get("purpose") == "pos":
            text = f"скидка в салоне МТС {reference.get('store_id', '')}"
        else:
            text = f"заказ «{reference.get('title') or reference.get('item_id', '')}»"
        return text + (" — отменён" if kind == "restored" else "")
    if kind == "transfer_out":
        return f"перевод на {phone(detail.get('to'))}"
    if kind == "transfer_in":
        return f"перевод от {phone(detail.get('from'))}"
    if kind == "transfer_returned":
        return f"возврат перевода на {phone(detail.get('to'))}"
    if kind == "expired":
        return "истёк срок действия баллов"
    if kind == "not_eligible":
        return f"до регистрации в программе — событие {entry.get('source_event_id') or ''}"
    parts = [RULES.get(entry["rule"] or "", entry["rule"] or "")]
    if entry.get("reason"):
        parts.append(f"({entry['reason']})")
    if entry.get("source_event_id"):
        parts.append(f"— событие {entry['source_event_id']}")
    return " ".join(p for p in parts if p)


def moscow(moment: str | None) -> str:
    """ISO text with any offset -> 'YYYY-MM-DD HH:MM' in Moscow time."""
    if not moment:
        return ""
    try:
        return datetime.fromisoformat(moment).astimezone(MOSCOW).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return moment


router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(resources.files("web") / "templates"))
templates.env.globals.update(categories=CATEGORIES, kinds=HISTORY_KINDS, rules=RULES, source_of=source_of)
templates.env.filters["phone"] = phone
templates.env.filters["moscow"] = moscow


class Redirect(Exception):
    def __init__(self, url: str):
        self.url = url


def normalize_phone(text: str) -> str | None:
    digits = "".join(ch for ch in text if ch.isdigit())
    if len(digits) == 10:
        digits = "7" + digits
    if len(digits) == 11 and digits[0] == "8":
        digits = "7" + digits[1:]
    return digits if is_msisdn(digits) else None


def _session(request: Request) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE, "")
    return context_of(request).auth.session(token, "page") if token else None


def _signed_in(request: Request) -> Session:
    session = _session(request)
    if session is None:
        raise Redirect("/login")
    return session


def _check_csrf(request: Request, token: str) -> None:
    session = _session(request)
    expected = session.csrf if session else request.cookies.get(CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, token):
        raise ApiError(403, "csrf", "the form is stale; reload the page")


def render(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    session = values.get("session", _session(request))
    csrf = session.csrf if session else request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    message = MESSAGES.get(request.query_params.get("msg", ""))
    response = templates.TemplateResponse(
        request, name, {"session": session, "csrf": csrf, "message": message, **values}, status_code=status
    )
    if session is None and request.cookies.get(CSRF_COOKIE) != csrf:
        _cookie(request, response, CSRF_COOKIE, csrf, samesite="strict")
    return response


def _cookie(request: Request, response: Response, name: str, value: str, samesite: str = "lax") -> None:
    response.set_cookie(
        name, value, max_age=int(SESSION_TTL.total_seconds()), httponly=True,
        secure=context_of(request).secure_cookies, samesite=samesite, path="/",
    )


def go(url: str, msg: str | None = None) -> RedirectResponse:
    if msg:
        url += ("&" if "?" in url else "?") + "msg=" + quote(msg)
    return RedirectResponse(url, status_code=303)


def _sign_in(request: Request, msisdn: str, via: str) -> RedirectResponse:
    auth = context_of(request).auth
    auth.accept_terms(msisdn)
    token, _ = auth.open_session(msisdn, "page", via)
    response = go("/account")
    _cookie(request, response, SESSION_COOKIE, token)
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


def install_error_pages(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    def _api_error(request: Request, error: ApiError) -> Response:
        if request.url.path.startswith("/api/"):
            return error_response(error)
        return render(request, "error.html", status=error.status, detail=error.detail)

    @app.exception_handler(Redirect)
    def _redirect(request: Request, redirect: Redirect) -> Response:
        return go(redirect.url)

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, error: RequestValidationError) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": _plain(error.errors())}, status_code=422)
        return render(request, "error.html", status=400, detail="Проверьте заполнение формы.")


def _plain(errors: Any) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in errors]


# -- signing in ---------------------------------------------------------------------------------


@router.get("/")
def home(request: Request) -> Response:
    return go("/account" if _session(request) else "/login")


@router.get("/login")
def login_page(request: Request) -> Response:
    if _session(request):
        return go("/account")
    network = network_msisdn(request)
    auth = context_of(request).auth
    if network and (auth.accepted_terms(network) or ("",))[0] == auth.terms_version:
        return _sign_in(request, network, "network")  # the agreement is accepted already: straight in
    return render(request, "login.html", network=network, terms_version=auth.terms_version)


@router.post("/login")
def login(request: Request, phone: str = Form(""), password: str = Form(""), csrf: str = Form(""),
          accept: str = Form("")) -> Response:
    _check_csrf(request, csrf)
    msisdn = normalize_phone(phone)
    if msisdn is None:
        return go("/login", "bad_phone")
    if accept != "yes":
        return go("/login", "terms")
    try:
        ok = context_of(request).auth.check_password(msisdn, password[:128])
    except TooManyRequests:
        return go("/login", "slow_down")
    return _sign_in(request, msisdn, "password") if ok else go("/login", "bad_login")


@router.post("/login/network")
def login_network(request: Request, csrf: str = Form(""), accept: str = Form("")) -> Response:
    _check_csrf(request, csrf)
    msisdn = network_msisdn(request)
    if msisdn is None:
        return go("/login")
    if accept != "yes":
        return go("/login", "terms")
    return _sign_in(request, msisdn, "network")


@router.get("/login/sms")
def sms_page(request: Request) -> Response:
    return render(request, "login_sms.html", phone=None)


def _send(request: Request, msisdn: str, purpose: str) -> str | None:
    """Sends a code; returns a message key if it was not sent."""
    try:
        context_of(request).auth.send_code(msisdn, purpose, client_address(request))
    except TooManyRequests:
        return "slow_down"
    except SmsError:
        return "sms_down"
    return None


@router.post("/login/sms")
def sms_send(request: Request, phone: str = Form(""), csrf: str = Form("")) -> Response:
    _check_csrf(request, csrf)
    msisdn = normalize_phone(phone)
    if msisdn is None:
        return go("/login/sms", "bad_phone")
    failed = _send(request, msisdn, "login")
    if failed:
        return go("/login/sms", failed)
    return render(request, "login_sms.html", phone=msisdn, message=MESSAGES["code_sent"])


@router.post("/login/sms/verify")
def sms_verify(request: Request, phone: str = Form(""), code: str = Form(""), csrf: str = Form(""),
               accept: str = Form("")) -> Response:
    _check_csrf(request, csrf)
    msisdn = normalize_phone(phone)
    if msisdn is None:
        return go("/login/sms", "bad_phone")
    if accept != "yes":
        return render(request, "login_sms.html", phone=msisdn, message=MESSAGES["terms"])
    if not context_of(request).auth.check_code(msisdn, "login", code.strip()[:6]):
        return render(request, "login_sms.html", phone=msisdn, message=MESSAGES["bad_code"])
    return _sign_in(request, msisdn, "code")


@router.post("/logout")
def logout(request: Request, csrf: str = Form("")) -> Response:
    _check_csrf(request, csrf)
    token = request.cookies.get(SESSION_COOKIE, "")
    if token:
        context_of(request).auth.close_session(token)
    response = go("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/terms")
def terms(request: Request) -> Response:
    return render(request, "terms.html", terms_version=context_of(request).auth.terms_version)


# -- passwords: restore (signed out) and set or change (Settings) ----------------------------------


@router.get("/password/restore")
def restore_page(request: Request) -> Response:
    return render(request, "restore.html", phone=None)


@router.post("/password/restore")
def restore_send(request: Request, phone: str = Form(""), csrf: str = Form("")) -> Response:
    _check_csrf(request, csrf)
    msisdn = normalize_phone(phone)
    if msisdn is None:
        return go("/password/restore", "bad_phone")
    failed = _send(request, msisdn, "password")
    if failed:
        return go("/password/restore", failed)
    return render(request, "restore.html", phone=msisdn, message=MESSAGES["code_sent"])


def _new_password(request: Request, msisdn: str, code: str, password: str) -> str:
    """Sets the password if the code is right; returns the message key."""
    try:
        check_password_strength(password)
    except WeakPassword:
        return "weak_password"
    auth = context_of(request).auth
    if not auth.check_code(msisdn, "password", code.strip()[:6]):
        return "bad_code"
    auth.set_password(msisdn, password)
    return "password_set"


@router.post("/password/restore/confirm")
def restore_confirm(request: Request, phone: str = Form(""), code: str = Form(""), password: str = Form(""),
                    csrf: str = Form("")) -> Response:
    _check_csrf(request, csrf)
    msisdn = normalize_phone(phone)
    if msisdn is None:
        return go("/password/restore", "bad_phone")
    outcome = _new_password(request, msisdn, code, password)
    if outcome == "password_set":
        return go("/login", outcome)
    return render(request, "restore.html", phone=msisdn, message=MESSAGES[outcome])


@router.get("/settings")
def settings_page(request: Request) -> Response:
    session = _signed_in(request)
    auth = context_of(request).auth
    return render(request, "settings.html", has_password=auth.has_password(session.msisdn),
                  terms=auth.accepted_terms(session.msisdn), code_sent=request.query_params.get("sent") == "1")


@router.post("/settings/code")
def settings_code(request: Request, csrf: str = Form("")) -> Response:
    _check_csrf(request, csrf)
    session = _signed_in(request)
    failed = _send(request, session.msisdn, "password")
    return go("/settings", failed) if failed else go("/settings?sent=1", "code_sent")


@router.post("/settings/password")
def settings_password(request: Request, code: str = Form(""), password: str = Form(""),
                      csrf: str = Form("")) -> Response:
    _check_csrf(request, csrf)
    session = _signed_in(request)
    outcome = _new_password(request, session.msisdn, code, password)
    return go("/settings" if outcome == "password_set" else "/settings?sent=1", outcome)


@router.post("/confirm/code")
def confirm_code(request: Request, csrf: str = Form(""), back: str = Form("/account")) -> Response:
    """A code that confirms spending, for sessions opened by the network header."""
    _check_csrf(request, csrf)
    session = _signed_in(request)
    failed = _send(request, session.msisdn, "confirm")
    back = back if back in ("/catalog", "/transfers") else "/account"
    return go(back, failed or "code_sent")


def _confirmed(request: Request, session: Session, code: str) -> bool:
    return not session.must_confirm or context_of(request).auth.check_code(session.msisdn, "confirm", code.strip())


# -- the account ------------------------------------------------------------------------------------


@router.get("/account")
def account(request: Request) -> Response:
    session = _signed_in(request)
    return render(request, "account.html", account=context_of(request).cabinet.account(session.msisdn))


@router.post("/account/enroll")
def enroll(request: Request, csrf: str = Form("")) -> Response:
    _check_csrf(request, csrf)
    session = _signed_in(request)
    context_of(request).cabinet.enroll(session.msisdn)
    return go("/account", "enrolled")


@router.get("/history")
def history(request: Request, kind: str = "", since: str = "", until: str = "", page: int = 1) -> Response:
    session = _signed_in(request)
    first, last = _day(since), _day(until)
    kinds = [kind] if kind in HISTORY_KINDS else []
    page = max(1, min(page, 100_000))
    result = context_of(request).cabinet.history(session.msisdn, kinds, first, last, page, 20)
    pages = max(1, -(-result["total"] // result["per_page"]))
    return render(request, "history.html", result=result, pages=pages, kind=kind if kinds else "",
                  since=first.isoformat() if first else "", until=last.isoformat() if last else "")


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


@router.get("/earn")
def earn(request: Request) -> Response:
    return render(request, "earn.html", earning=context_of(request).cabinet.earning())


@router.get("/offers")
def offers(request: Request) -> Response:
    return render(request, "offers.html", offers=context_of(request).cabinet.offers_now())


@router.get("/catalog")
def catalog(request: Request, category: str = "") -> Response:
    session = _session(request)
    cabinet = context_of(request).cabinet
    category = category if category in CATEGORIES else ""
    balance = cabinet.account(session.msisdn)["balance"] if session else None
    orders = cabinet.orders(session.msisdn) if session else []
    return render(request, "catalog.html", rewards=cabinet.rewards(category or None), category=category,
                  balance=balance, orders=orders, order_key=secrets.token_urlsafe(12))


@router.post("/catalog/order")
def order(request: Request, item_id: str = Form(""), key: str = Form(""), code: str = Form(""),
          csrf: str = Form("")) -> Response:
    _check_csrf(request, csrf)
    session = _signed_in(request)
    if not _confirmed(request, session, code):
        return go("/catalog", "confirm")
    try:
        context_of(request).cabinet.order(session.msisdn, item_id[:100], key[:100] or secrets.token_urlsafe(12))
    except UnknownReward:
        return go("/catalog", "refused")
    except RuleRefusal as refusal:
        return go("/catalog", refusal.reason if refusal.reason in MESSAGES else "refused")
    return go("/catalog", "ordered")


@router.get("/transfers")
def transfers(request: Request) -> Response:
    session = _signed_in(request)
    cabinet = context_of(request).cabinet
    return render(request, "transfers.html", transfers=cabinet.transfers(session.msisdn),
                  balance=cabinet.account(session.msisdn)["balance"], transfer_key=secrets.token_urlsafe(12))


@router.post("/transfers")
def transfer(request: Request, recipient: str = Form(""), points: str = Form(""), key: str = Form(""),
             code: str = Form(""), csrf: str = Form("")) -> Response:
    _check_csrf(request, csrf)
    session = _signed_in(request)
    to = normalize_phone(recipient)
    if to is None:
        return go("/transfers", "bad_phone")
    if not points.strip().isdigit() or not 0 < int(points) <= 10_000_000:
        return go("/transfers", "invalid_points")
    if not _confirmed(request, session, code):
        return go("/transfers", "confirm")
    try:
        context_of(request).cabinet.offer_transfer(session.msisdn, to, int(points), key[:100] or secrets.token_urlsafe(12))
    except RuleRefusal as refusal:
        return go("/transfers", refusal.reason if refusal.reason in MESSAGES else "refused")
    return go("/transfers", "transfer_sent")


@router.post("/transfers/{transfer_id}/{action}")
def settle(request: Request, transfer_id: str, action: str, csrf: str = Form("")) -> Response:
    _check_csrf(request, csrf)
    session = _signed_in(request)
    if action not in ("accept", "decline"):
        return go("/transfers")
    try:
        context_of(request).cabinet.settle_transfer(session.msisdn, transfer_id[:100], action == "accept")
    except NotFound:
        return go("/transfers", "refused")
    except RuleRefusal as refusal:
        return go("/transfers", refusal.reason if refusal.reason in MESSAGES else "refused")
    return go("/transfers", "transfer_done")
