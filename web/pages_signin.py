"""Pages for signing in (password, SMS code, the operator's network), the
agreement, restoring a password, and Settings."""
from __future__ import annotations

import re

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from web.app import client_address, context_of, network_msisdn
from web.auth import Session, TooManyRequests, WeakPassword, check_password_strength
from web.pages import (
    MESSAGES, SESSION_COOKIE, check_csrf, go, normalize_phone, render, session_of, sign_in, signed_in,
)
from web.preferences import choose, preferences_of
from web.sms import SmsError

router = APIRouter(include_in_schema=False)


# -- signing in ---------------------------------------------------------------------------------


@router.get("/")
def home(request: Request) -> Response:
    return go("/account" if session_of(request) else "/login")


@router.get("/login")
def login_page(request: Request) -> Response:
    if session_of(request):
        return go("/account")
    network = network_msisdn(request)
    auth = context_of(request).auth
    if network and (auth.accepted_terms(network) or ("",))[0] == auth.terms_version:
        return sign_in(request, network, "network")  # the agreement is accepted already: straight in
    return render(request, "login.html", network=network, terms_version=auth.terms_version)


@router.post("/login")
def login(request: Request, phone: str = Form(""), password: str = Form(""), csrf: str = Form(""),
          accept: str = Form("")) -> Response:
    check_csrf(request, csrf)
    msisdn = normalize_phone(phone)
    if msisdn is None:
        return go("/login", "bad_phone")
    if accept != "yes":
        return go("/login", "terms")
    try:
        ok = context_of(request).auth.check_password(msisdn, password[:128], client_address(request))
    except TooManyRequests:
        return go("/login", "slow_down")
    return sign_in(request, msisdn, "password") if ok else go("/login", "bad_login")


@router.post("/login/network")
def login_network(request: Request, csrf: str = Form(""), accept: str = Form("")) -> Response:
    check_csrf(request, csrf)
    msisdn = network_msisdn(request)
    if msisdn is None:
        return go("/login")
    if accept != "yes":
        return go("/login", "terms")
    return sign_in(request, msisdn, "network")


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


def _send_code_page(request: Request, phone: str, csrf: str, purpose: str, path: str, template: str) -> Response:
    """A form that sends a code: the number checked, the code sent, the
    form again with the number filled in (or back to `path` with why not)."""
    check_csrf(request, csrf)
    msisdn = normalize_phone(phone)
    if msisdn is None:
        return go(path, "bad_phone")
    failed = _send(request, msisdn, purpose)
    if failed:
        return go(path, failed)
    return render(request, template, phone=msisdn, message=MESSAGES["code_sent"])


@router.post("/login/sms")
def sms_send(request: Request, phone: str = Form(""), csrf: str = Form("")) -> Response:
    return _send_code_page(request, phone, csrf, "login", "/login/sms", "login_sms.html")


@router.post("/login/sms/verify")
def sms_verify(request: Request, phone: str = Form(""), code: str = Form(""), csrf: str = Form(""),
               accept: str = Form("")) -> Response:
    check_csrf(request, csrf)
    msisdn = normalize_phone(phone)
    if msisdn is None:
        return go("/login/sms", "bad_phone")
    if accept != "yes":
        return render(request, "login_sms.html", phone=msisdn, message=MESSAGES["terms"])
    if not context_of(request).auth.check_code(msisdn, "login", code.strip()[:6]):
        return render(request, "login_sms.html", phone=msisdn, message=MESSAGES["bad_code"])
    return sign_in(request, msisdn, "code")


@router.post("/logout")
def logout(request: Request, csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
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
    return _send_code_page(request, phone, csrf, "password", "/password/restore", "restore.html")


def _new_password(request: Request, msisdn: str, code: str, password: str, keep: Session | None = None) -> str:
    """Sets the password if the code is right and ends the number's other
    sessions (all but `keep`); returns the message key."""
    try:
        check_password_strength(password, msisdn)
    except WeakPassword:
        return "weak_password"
    auth = context_of(request).auth
    if not auth.check_code(msisdn, "password", code.strip()[:6]):
        return "bad_code"
    auth.set_password(msisdn, password, keep)
    return "password_set"


@router.post("/password/restore/confirm")
def restore_confirm(request: Request, phone: str = Form(""), code: str = Form(""), password: str = Form(""),
                    csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    msisdn = normalize_phone(phone)
    if msisdn is None:
        return go("/password/restore", "bad_phone")
    outcome = _new_password(request, msisdn, code, password)
    if outcome == "password_set":
        return go("/login", outcome)
    return render(request, "restore.html", phone=msisdn, message=MESSAGES[outcome])


@router.get("/settings")
def settings_page(request: Request) -> Response:
    session = signed_in(request)
    auth = context_of(request).auth
    has_password, terms = auth.credentials(session.msisdn)
    return render(request, "settings.html", has_password=has_password, terms=terms,
                  code_sent=request.query_params.get("sent") == "1",
                  notifications=preferences_of(context_of(request).store, session.msisdn))


@router.post("/settings/notifications")
def settings_notifications(request: Request, csrf: str = Form(""), credits: str = Form(""),
                           transfers: str = Form(""), expiry: str = Form("")) -> Response:
    """The three SMS switches; an unticked box is a group turned off."""
    check_csrf(request, csrf)
    session = signed_in(request)
    ticked = {"credits": credits, "transfers": transfers, "expiry": expiry}
    off = {group for group, value in ticked.items() if value != "on"}
    choose(context_of(request).store, session.msisdn, off, context_of(request).clock.now())
    return go("/settings", "notifications_saved")


@router.post("/settings/code")
def settings_code(request: Request, csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    session = signed_in(request)
    failed = _send(request, session.msisdn, "password")
    return go("/settings", failed) if failed else go("/settings?sent=1", "code_sent")


@router.post("/settings/password")
def settings_password(request: Request, code: str = Form(""), password: str = Form(""),
                      csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    session = signed_in(request)
    outcome = _new_password(request, session.msisdn, code, password, keep=session)
    if outcome == "password_set":
        return go("/settings", "password_set_others_out")
    return go("/settings?sent=1", outcome)


@router.post("/settings/logout-all")
def logout_everywhere(request: Request, csrf: str = Form("")) -> Response:
    """Signs out on every device, this one included."""
    check_csrf(request, csrf)
    session = signed_in(request)
    context_of(request).auth.end_sessions(session.msisdn)
    response = go("/login", "signed_out_everywhere")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/confirm/code")
def confirm_code(request: Request, csrf: str = Form(""), back: str = Form("/account")) -> Response:
    """A code that confirms spending, for sessions opened by the network header."""
    check_csrf(request, csrf)
    session = signed_in(request)
    failed = _send(request, session.msisdn, "confirm")
    # Only our own pages: an open redirect would carry the member anywhere.
    confirming = re.fullmatch(r"/catalog/confirm\?item_id=[A-Za-z0-9._-]{1,100}", back)
    back = back if back in ("/catalog", "/transfers") or confirming else "/account"
    return go(back, failed or "code_sent")
