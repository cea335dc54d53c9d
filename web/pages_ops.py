"""The console's pages under /ops, in Russian, rendered on the server
(docs/console.md): sign-in with a password and a TOTP code, the forced first
password change, members, adjustments, dead letters, the programme at a
glance and the audit log.

A page session is a random token in an http-only cookie of its own
(`accrual_ops`, path /ops, SameSite=Strict, Secure unless development turned
it off): the member pages never see it. Every form carries a CSRF token: the
session's own once signed in, before that a random one that must match its
cookie (double submit). The roles and the audit are those of the API
(web.staff.PERMISSIONS, web.console.AuditLog)."""
from __future__ import annotations

import math
import re
import secrets
from datetime import date
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from engine.errors import RuleRefusal
from schemas.msisdn import is_msisdn
from web.api_ops import audit  # one way to record a staff action, for the pages and the API
from web.api import LOGIN_PATTERN, TOPIC_PATTERN, WORD_PATTERN, ApiError
from web.app import client_address, context_of
from web.auth import TooManyRequests, WeakPassword
from web.console import REASON_LENGTH, STATUSES, ConsoleRefusal
from web.pages import HISTORY_KINDS, RULES, go, templates
from web.staff import SESSION_TTL, SignInRefused, StaffSession

router = APIRouter(include_in_schema=False)
OPS_COOKIE, OPS_CSRF_COOKIE = "accrual_ops", "accrual_ops_csrf"
STATUS_TITLES = {"pending_approval": "ждёт решения", "approved": "одобрена", "applied": "проведена",
                 "rejected": "отклонена", "refused": "не проведена"}
MESSAGES = {  # ?msg= keys; the page never echoes text from the address bar
    "bad_login": "Неверный логин, пароль или код.",
    "slow_down": "Слишком много попыток. Попробуйте позже.",
    "change_password": "Смените начальный пароль, чтобы продолжить.",
    "password_set": "Пароль сохранён.",
    "weak_password": "Пароль: от 8 до 128 символов, не из числа распространённых и без логина.",
    "bad_password": "Текущий пароль неверный.",
    "requested": "Корректировка ждёт решения другого супервайзера.",
    "applied": "Корректировка проведена.",
    "approved": "Корректировка одобрена и проведена.",
    "rejected": "Корректировка отклонена.",
    "redriven": "Сообщение обработано повторно.",
    "redrive_rejected": "Сообщение снова отклонено; обе попытки видны в карточке.",
    "bad_form": "Проверьте заполнение формы.",
    "forbidden": "Вашей роли это недоступно.",
    "not_found": "Не найдено.",
}
REFUSALS = {
    "insufficient_points": "Недостаточно баллов: баланс не может стать отрицательным.",
    "not_enrolled": "Номер не участвует в программе.",
    "own_request": "Свою заявку решает другой супервайзер.",
    "adjustment_decided": "Заявка уже решена.",
    "idempotency_conflict": "Эта форма уже отправлена с другими данными.",
    "invalid_reason": "Причина: от 10 до 500 символов.",
    "invalid_points": "Укажите число баллов, не ноль.",
    "already_redriven": "Это сообщение уже обработано повторно.",
}


class OpsRedirect(Exception):
    def __init__(self, url: str, msg: str | None = None):
        self.url, self.msg = url, msg


# -- sessions, CSRF, rendering ------------------------------------------------------------------------


def staff_of(request: Request) -> StaffSession | None:
    token = request.cookies.get(OPS_COOKIE, "")
    return context_of(request).staff.session(token, "page") if token else None


def allowed(request: Request, permission: str) -> StaffSession:
    """The signed-in staff member, if the role may `permission`; a first
    sign-in goes to the password change first."""
    session = staff_of(request)
    if session is None:
        raise OpsRedirect("/ops/login")
    if session.must_change_password:
        raise OpsRedirect("/ops/password", "change_password")
    if not session.may(permission):
        raise ApiError(403, "forbidden", "Вашей роли это недоступно.")
    return session


def check_csrf(request: Request, token: str) -> None:
    session = staff_of(request)
    expected = session.csrf if session else request.cookies.get(OPS_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, token):
        raise ApiError(403, "csrf", "Форма устарела: обновите страницу.")


def render(request: Request, name: str, session: StaffSession | None, **values: Any) -> HTMLResponse:
    csrf = session.csrf if session else request.cookies.get(OPS_CSRF_COOKIE) or secrets.token_urlsafe(24)
    msg = request.query_params.get("msg", "")
    response = templates.TemplateResponse(request, f"ops/{name}", {
        "staff": session, "csrf": csrf, "message": MESSAGES.get(msg) or REFUSALS.get(msg),
        "kinds": HISTORY_KINDS, "rules": RULES, "statuses": STATUS_TITLES, **values,
    })
    if session is None and request.cookies.get(OPS_CSRF_COOKIE) != csrf:
        _cookie(request, response, OPS_CSRF_COOKIE, csrf)
    return response


def _cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(name, value, max_age=int(SESSION_TTL.total_seconds()), httponly=True,
                        secure=context_of(request).secure_cookies, samesite="strict", path="/ops")


def install(app: Any) -> None:
    @app.exception_handler(OpsRedirect)
    def _redirect(request: Request, redirect: OpsRedirect) -> Response:
        return go(redirect.url, redirect.msg)


# -- signing in -------------------------------------------------------------------------------------------


@router.get("/ops")
def home(request: Request) -> Response:
    session = staff_of(request)
    if session is None:
        return go("/ops/login")
    return go("/ops/password" if session.must_change_password else "/ops/members")


@router.get("/ops/login")
def login_page(request: Request) -> Response:
    if staff_of(request):
        return go("/ops")
    return render(request, "login.html", None)


@router.post("/ops/login")
def login(request: Request, login: str = Form(""), password: str = Form(""), totp: str = Form(""),
          csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    context = context_of(request)
    address = client_address(request)
    try:
        token, session = context.staff.sign_in(login.strip()[:64], password[:128], totp.strip()[:6], address, "page")
    except TooManyRequests:
        return go("/ops/login", "slow_down")
    except SignInRefused:
        context.console.audit.record(login.strip()[:64], "-", address, "sign_in_refused")
        return go("/ops/login", "bad_login")
    audit(request, session, "sign_in", via="page")
    response = go("/ops")
    _cookie(request, response, OPS_COOKIE, token)
    response.delete_cookie(OPS_CSRF_COOKIE, path="/ops")
    return response


@router.post("/ops/logout")
def logout(request: Request, csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    session = staff_of(request)
    if session is not None:
        context_of(request).staff.sign_out(session)
        audit(request, session, "sign_out")
    response = go("/ops/login")
    response.delete_cookie(OPS_COOKIE, path="/ops")
    return response


@router.get("/ops/password")
def password_page(request: Request) -> Response:
    session = staff_of(request)
    if session is None:
        return go("/ops/login")
    return render(request, "password.html", session)


@router.post("/ops/password")
def change_password(request: Request, current_password: str = Form(""), new_password: str = Form(""),
                    csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    session = staff_of(request)
    if session is None:
        return go("/ops/login")
    try:
        context_of(request).staff.change_password(session, current_password[:128], new_password[:128],
                                                  client_address(request))
    except TooManyRequests:
        return go("/ops/password", "slow_down")
    except SignInRefused:
        return go("/ops/password", "bad_password")
    except WeakPassword:
        return go("/ops/password", "weak_password")
    audit(request, session, "password_changed")
    return go("/ops/members", "password_set")  # every role may look members up


# -- members ----------------------------------------------------------------------------------------------


@router.get("/ops/members")
def members_page(request: Request, prefix: str = "") -> Response:
    session = allowed(request, "members.read")
    prefix = "".join(c for c in prefix.strip().lstrip("+") if c.isascii() and c.isdigit())[:11]
    found = None
    if prefix:
        if is_msisdn(prefix):
            return go(f"/ops/members/{prefix}")
        found = context_of(request).console.search(prefix)
        audit(request, session, "members_searched", prefix, found=len(found))
    return render(request, "members.html", session, prefix=prefix, found=found)


@router.get("/ops/members/{msisdn}")
def member_page(request: Request, msisdn: str, page: int = 1, kind: str = "") -> Response:
    session = allowed(request, "members.read")
    if not is_msisdn(msisdn):
        raise ApiError(404, "not_found", "Такого номера нет.")
    console = context_of(request).console
    member = console.member(msisdn)
    audit(request, session, "member_viewed", msisdn)
    if member is None:
        raise ApiError(404, "unknown_member", "Номер не известен программе.")
    page = max(1, min(page, 100_000))
    kinds = [kind] if kind in HISTORY_KINDS else []
    history = console.history(msisdn, kinds, None, None, page, 50)
    adjustments, _ = console.adjustments(msisdn=msisdn, limit=20)
    return render(request, "member.html", session, member=member, history=history, kind=kind,
                  pages=max(1, math.ceil(history["total"] / 50)), adjustments=adjustments,
                  key=secrets.token_urlsafe(12), reason_length=REASON_LENGTH,
                  may_adjust=session.may("adjustments.request"))


# -- adjustments -----------------------------------------------------------------------------------------


def _signed_points(text: str) -> int | None:
    """Points typed into the form: a sign and up to 8 ASCII digits, not zero."""
    text = text.strip().replace(" ", "").replace("\u2212", "-")
    sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
    if not (0 < len(digits) <= 8 and digits.isascii() and digits.isdigit()) or int(digits) == 0:
        return None
    return sign * int(digits)


@router.post("/ops/adjustments")
def request_adjustment(request: Request, msisdn: str = Form(""), points: str = Form(""), reason: str = Form(""),
                       key: str = Form(""), csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    session = allowed(request, "adjustments.request")
    if not is_msisdn(msisdn):
        return go("/ops/members", "bad_form")
    amount = _signed_points(points)
    back = f"/ops/members/{msisdn}"
    if amount is None or not key or len(key) > 100 or not key.replace("-", "").replace("_", "").isalnum():
        return go(back, "invalid_points" if amount is None else "bad_form")
    try:
        adjustment, repeat = context_of(request).console.request_adjustment(session, msisdn, amount, reason[:600],
                                                                            key)
    except ConsoleRefusal as refusal:
        return go(back, refusal.reason)
    if not repeat:
        audit(request, session, "adjustment_requested", adjustment.adjustment_id, msisdn=msisdn, points=amount,
              reason=adjustment.reason, status=adjustment.status)
    if adjustment.status == "refused":
        return go(back, adjustment.refusal or "bad_form")
    return go(back, "applied" if adjustment.status == "applied" else "requested")


@router.get("/ops/adjustments")
def adjustments_page(request: Request, status: str = "pending_approval") -> Response:
    session = allowed(request, "adjustments.read")
    status = status if status in STATUSES else ""
    items, total = context_of(request).console.adjustments(status or None, limit=200)
    return render(request, "adjustments.html", session, items=items, total=total, status=status,
                  may_decide=session.may("adjustments.decide"))


@router.post("/ops/adjustments/{adjustment_id}/{decision}")
def decide(request: Request, adjustment_id: str, decision: str, csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    session = allowed(request, "adjustments.decide")
    if decision not in ("approve", "reject") or len(adjustment_id) > 100:
        raise ApiError(404, "not_found", "Не найдено.")
    approve = decision == "approve"
    try:
        adjustment = context_of(request).console.decide(session, adjustment_id, approve)
    except ConsoleRefusal as refusal:
        return go("/ops/adjustments", refusal.reason)
    audit(request, session, "adjustment_approved" if approve else "adjustment_rejected", adjustment_id,
          msisdn=adjustment.msisdn, points=adjustment.points, status=adjustment.status)
    if adjustment.status == "refused":
        return go("/ops/adjustments", adjustment.refusal or "bad_form")
    return go("/ops/adjustments", "approved" if approve else "rejected")


# -- dead letters ----------------------------------------------------------------------------------------


def _filter(text: str, pattern: str) -> str | None:
    """A filter typed into a page: None when empty; refused unless it has
    the shape of what it filters (a NUL byte or free text finds nothing
    and must not reach the database)."""
    text = text.strip()
    if not text:
        return None
    if not re.match(pattern, text):
        raise ApiError(400, "invalid_filter", "Проверьте фильтр.")
    return text


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


@router.get("/ops/dead-letters")
def dead_letters_page(request: Request, reason: str = "", topic: str = "", since: str = "", until: str = "",
                      status: str = "", page: int = 1) -> Response:
    session = allowed(request, "dead_letters.read")
    page = max(1, min(page, 100_000))
    status = status if status in ("open", "redriven") else ""
    reason, topic = _filter(reason, WORD_PATTERN) or "", _filter(topic, TOPIC_PATTERN) or ""
    found = context_of(request).dead_letters.page(
        reason=reason or None, topic=topic or None, since=_day(since), until=_day(until),
        status=status or None, limit=50, offset=(page - 1) * 50)
    audit(request, session, "dead_letters_viewed", reason[:64], topic=topic[:200], page=page)
    return render(request, "dead_letters.html", session, found=found, reason=reason[:64], topic=topic[:200],
                  since=since[:10], until=until[:10], status=status, page=page,
                  pages=max(1, math.ceil(found["total"] / 50)))


@router.get("/ops/dead-letters/{rejection_id}")
def dead_letter_page(request: Request, rejection_id: str) -> Response:
    session = allowed(request, "dead_letters.read")
    found = context_of(request).dead_letters.one(rejection_id[:40])
    if found is None:
        raise ApiError(404, "unknown_dead_letter", "Такого сообщения нет.")
    return render(request, "dead_letter.html", session, letter=found,
                  may_redrive=session.may("dead_letters.redrive"))


@router.post("/ops/dead-letters/{rejection_id}/redrive")
def redrive(request: Request, rejection_id: str, csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    session = allowed(request, "dead_letters.redrive")
    back = f"/ops/dead-letters/{rejection_id[:40]}"
    try:
        result = context_of(request).dead_letters.redrive(session, rejection_id[:40])
    except RuleRefusal as refusal:
        if refusal.reason == "unknown_dead_letter":
            raise ApiError(404, refusal.reason, "Такого сообщения нет.") from refusal
        return go(back, refusal.reason)
    audit(request, session, "dead_letter_redriven", rejection_id[:40], outcome=result["outcome"],
          reason=result.get("reason"), attempt=result["attempt"])
    return go(back, "redriven" if result["outcome"] == "applied" else "redrive_rejected")


# -- the programme at a glance ----------------------------------------------------------------------------


@router.get("/ops/dashboard")
async def dashboard_page(request: Request) -> Response:
    session = await run_in_threadpool(allowed, request, "programme.read")
    from web.api_ops import programme

    return render(request, "dashboard.html", session, d=await programme(request))


# -- the audit log ---------------------------------------------------------------------------------------


@router.get("/ops/audit")
def audit_page(request: Request, login: str = "", action: str = "", page: int = 1) -> Response:
    session = allowed(request, "audit.read")
    page = max(1, min(page, 100_000))
    login, action = _filter(login, LOGIN_PATTERN) or "", _filter(action, WORD_PATTERN) or ""
    entries, total = context_of(request).console.audit.entries(
        login=login or None, action=action or None, limit=100, offset=(page - 1) * 100)
    return render(request, "audit.html", session, entries=entries, total=total, page=page,
                  pages=max(1, math.ceil(total / 100)), login=login[:64], action=action[:64])


def render_error(request: Request, status: int, detail: str) -> Response:
    response = render(request, "error.html", staff_of(request), detail=detail)
    response.status_code = status
    return response
