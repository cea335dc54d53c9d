"""The personal account's pages, in Russian, rendered on the server: the
shared parts (rendering, sessions, CSRF, error pages). The pages are in
`pages_signin` and `pages_member`.

A page session is a random token in an http-only cookie (Secure unless
development turned it off, SameSite=Lax). Every form carries a CSRF token:
the session's own once signed in, before that a random one that must match
its http-only, SameSite=Strict cookie (double submit)."""
from __future__ import annotations

import secrets
from datetime import date
from importlib import resources
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from schemas.msisdn import ascii_digits, is_msisdn
from web.api import ApiError, error_response
from web.app import context_of
from web.auth import SESSION_TTL, Session
from web.catalog import CATEGORIES
from web.formatting import FILTERS, month, moscow_day, phone
from web.guards import BodyTooLarge, too_large

SESSION_COOKIE, CSRF_COOKIE = "accrual_session", "accrual_csrf"
HISTORY_KINDS = {
    "enrolled": "Регистрация", "accrued": "Начисление", "clawed_back": "Возврат покупки", "expired": "Сгорание",
    "redeemed": "Списание", "restored": "Отмена списания", "transfer_out": "Перевод", "transfer_in": "Перевод вам",
    "transfer_returned": "Возврат перевода", "not_eligible": "Без начисления", "adjusted": "Корректировка",
}
RULES = {"usage": "Услуги связи", "shop": "Покупка в салоне МТС", "mgts": "Услуги МГТС",
         "card": "Покупки по карте МТС Банка", "ballyplus": "Баллы Плюс"}
MESSAGES = {  # ?msg= keys; the page never echoes text from the address bar
    "code_sent": "Код отправлен по SMS. Он действует 5 минут.",
    "bad_code": "Код неверный или устарел. Запросите новый.",
    "bad_login": "Неверный номер телефона или пароль.",
    "bad_phone": "Введите номер в формате +7 XXX XXX-XX-XX.",
    "terms": "Чтобы войти, примите условия Соглашения.",
    "slow_down": "Слишком много попыток. Попробуйте позже.",
    "sms_down": "Не удалось отправить SMS. Попробуйте позже.",
    "password_set": "Пароль сохранён.",
    "password_set_others_out": "Пароль сохранён. На других устройствах нужно войти заново.",
    "signed_out_everywhere": "Вы вышли на всех устройствах.",
    "weak_password": "Пароль: от 8 до 128 символов, не из числа распространённых и без номера телефона.",
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
    "too_many_transfers": "Слишком много переводов за час. Попробуйте позже.",
    "transfer_expired": "Срок принятия перевода истёк.",
    "transfer_settled": "Перевод уже завершён.",
    "refused": "Операция отклонена.",
    "notifications_saved": "Настройки уведомлений сохранены.",
}



_REASONS = {  # why points went back or were taken back, in words (unknown codes are not shown)
    "shop_return": "возврат покупки",
    "card_resettlement": "пересчёт по карте МТС Банка",
    "declined": "получатель отказался",
    "timed_out": "получатель не ответил за 24 часа",
}


def source_of(entry: dict[str, Any]) -> str:
    """What a history line was, in words a member reads: no event ids,
    order ids or rule codes."""
    detail, kind = entry["detail"], entry["kind"]
    if kind in ("redeemed", "restored"):
        reference = detail.get("reference") or {}
        if detail.get("purpose") == "pos":
            text = "Скидка в салоне МТС"
        else:
            text = f"Заказ: {reference.get('title') or 'подарок из каталога'}"
        return text + (" — отменён, баллы вернулись" if kind == "restored" else "")
    if kind == "transfer_out":
        return f"Перевод на {phone(detail.get('to'))}"
    if kind == "transfer_in":
        return f"Перевод от {phone(detail.get('from'))}"
    if kind == "transfer_returned":
        why = _REASONS.get(entry.get("reason") or "")
        return f"Перевод на {phone(detail.get('to'))} вернулся" + (f": {why}" if why else "")
    if kind == "expired":
        return "Истёк срок действия баллов"
    if kind == "adjusted":  # the staff's own reason is for the back office, not the member
        return "Корректировка баллов"
    if kind == "enrolled":
        return "Регистрация в программе"
    if kind == "not_eligible":
        return f"{RULES.get(entry['rule'] or '', 'Операция')}: до регистрации в программе баллы не начисляются"
    if kind == "clawed_back":
        why = _REASONS.get(entry.get("reason") or "", "возврат")
        return f"Списано: {why}"
    rule = RULES.get(entry["rule"] or "", "Начисление")
    if entry["rule"] in ("mgts", "card") and entry.get("lot_date"):
        return f"{rule} за {month(entry['lot_date'])}"
    return rule


def by_day(entries: list[dict[str, Any]]) -> list[tuple[date | None, list[dict[str, Any]]]]:
    """History entries (newest first) grouped by their Moscow date."""
    groups: list[tuple[date | None, list[dict[str, Any]]]] = []
    for entry in entries:
        when = moscow_day(entry.get("occurred_at"))
        if not groups or groups[-1][0] != when:
            groups.append((when, []))
        groups[-1][1].append(entry)
    return groups


templates = Jinja2Templates(directory=str(resources.files("web") / "templates"))
templates.env.globals.update(categories=CATEGORIES, kinds=HISTORY_KINDS, rules=RULES, source_of=source_of,
                             by_day=by_day)
templates.env.filters.update(FILTERS)


class Redirect(Exception):
    def __init__(self, url: str):
        self.url = url


def normalize_phone(text: str) -> str | None:
    """A number typed in any usual way (+7, 8, spaces, brackets, dashes) as
    an msisdn, or None. Only ASCII digits count (schemas.msisdn)."""
    digits = ascii_digits(text[:40])
    if len(digits) == 10:
        digits = "7" + digits
    if len(digits) == 11 and digits[0] == "8":
        digits = "7" + digits[1:]
    return digits if is_msisdn(digits) else None


def parse_points(text: str) -> int | None:
    """Points typed into a form: 1 to 10,000,000 in ASCII digits, or None."""
    text = text.strip()
    if not (0 < len(text) <= 8 and text.isascii() and text.isdigit()):
        return None
    points = int(text)
    return points if 0 < points <= 10_000_000 else None


def session_of(request: Request) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE, "")
    return context_of(request).auth.session(token, "page") if token else None


def signed_in(request: Request) -> Session:
    session = session_of(request)
    if session is None:
        raise Redirect("/login")
    return session


def check_csrf(request: Request, token: str) -> None:
    session = session_of(request)
    expected = session.csrf if session else request.cookies.get(CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, token):
        raise ApiError(403, "csrf", "the form is stale; reload the page")


def render(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    session = values.get("session", session_of(request))
    csrf = session.csrf if session else request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    message = MESSAGES.get(request.query_params.get("msg", ""))
    response = templates.TemplateResponse(
        request, name, {"session": session, "csrf": csrf, "message": message, **values}, status_code=status
    )
    if session is None and request.cookies.get(CSRF_COOKIE) != csrf:
        cookie(request, response, CSRF_COOKIE, csrf, samesite="strict")
    return response


def cookie(request: Request, response: Response, name: str, value: str, samesite: str = "lax") -> None:
    response.set_cookie(
        name, value, max_age=int(SESSION_TTL.total_seconds()), httponly=True,
        secure=context_of(request).secure_cookies, samesite=samesite, path="/",
    )


def go(url: str, msg: str | None = None) -> RedirectResponse:
    if msg:
        url += ("&" if "?" in url else "?") + "msg=" + quote(msg)
    return RedirectResponse(url, status_code=303)


def sign_in(request: Request, msisdn: str, via: str) -> RedirectResponse:
    auth = context_of(request).auth
    auth.accept_terms(msisdn)
    token, _ = auth.open_session(msisdn, "page", via)
    response = go("/account")
    cookie(request, response, SESSION_COOKIE, token)
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


def install_error_pages(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    def _api_error(request: Request, error: ApiError) -> Response:
        if request.url.path.startswith("/api/"):
            return error_response(error)
        if request.url.path == "/ops" or request.url.path.startswith("/ops/"):
            from web.pages_ops import render_error

            return render_error(request, error.status, error.detail)
        return render(request, "error.html", status=error.status, detail=error.detail)

    @app.exception_handler(BodyTooLarge)
    def _too_large(request: Request, error: BodyTooLarge) -> Response:
        return too_large(request.scope, error.limit)

    @app.exception_handler(Redirect)
    def _redirect(request: Request, redirect: Redirect) -> Response:
        return go(redirect.url)

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, error: RequestValidationError) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "invalid_request", "detail": _plain(error.errors())}, status_code=422)
        return render(request, "error.html", status=400, detail="Проверьте заполнение формы.")


def _plain(errors: Any) -> str:
    """What was wrong, field by field, without echoing the input:
    'body.points: Input should be a valid integer; …' (at most 10 fields)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', '')}" for e in list(errors)[:10]
    )


def confirmed(request: Request, session: Session, code: str) -> bool:
    return not session.must_confirm or context_of(request).auth.check_code(session.msisdn, "confirm", code.strip())
