"""Pages of a member: balance, history, how to earn, offers, the catalogue
and orders, transfers."""
from __future__ import annotations

import secrets
from datetime import date
from importlib import resources
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, Response

from engine.errors import RuleRefusal
from web.app import context_of
from web.auth import TooManyRequests
from web.catalog import CATEGORIES
from web.pages import (
    HISTORY_KINDS, MESSAGES, check_csrf, confirmed, go, normalize_phone, parse_points, render, session_of, signed_in,
)
from web.service import NotFound, UnknownReward

router = APIRouter(include_in_schema=False)


@router.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for it on every page, whatever the page links."""
    return FileResponse(resources.files("web") / "static" / "favicon.svg", media_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=86400"})


# -- the account ------------------------------------------------------------------------------------


@router.get("/account")
def account(request: Request) -> Response:
    session = signed_in(request)
    cabinet = context_of(request).cabinet
    return render(request, "account.html", account=cabinet.account(session.msisdn),
                  expiry_months=cabinet.app.rules.expiry_months)


@router.post("/account/enroll")
def enroll(request: Request, csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    session = signed_in(request)
    context_of(request).cabinet.enroll(session.msisdn)
    return go("/account", "enrolled")


@router.get("/history")
def history(request: Request, kind: str = "", since: str = "", until: str = "", page: int = 1) -> Response:
    session = signed_in(request)
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
    session = session_of(request)
    cabinet = context_of(request).cabinet
    category = category if category in CATEGORIES else ""
    balance = cabinet.account(session.msisdn)["balance"] if session else None
    orders = cabinet.orders(session.msisdn) if session else []
    return render(request, "catalog.html", rewards=cabinet.rewards(category or None), category=category,
                  balance=balance, orders=orders)


@router.get("/catalog/confirm")
def confirm_order(request: Request, item_id: str = "") -> Response:
    """The step before an order: what, the price, the balance after."""
    session = signed_in(request)
    cabinet = context_of(request).cabinet
    reward = cabinet.catalog.get(item_id[:100])
    if reward is None:
        return go("/catalog", "refused")
    balance = cabinet.account(session.msisdn)["balance"]
    return render(request, "order_confirm.html", reward=reward, balance=balance, order_key=secrets.token_urlsafe(12))


@router.post("/catalog/order")
def order(request: Request, item_id: str = Form(""), key: str = Form(""), code: str = Form(""),
          csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    session = signed_in(request)
    if not confirmed(request, session, code):
        return go(f"/catalog/confirm?item_id={quote(item_id[:100])}", "confirm")
    try:
        placed = context_of(request).cabinet.order(session.msisdn, item_id[:100],
                                                   key[:100] or secrets.token_urlsafe(12))
    except UnknownReward:
        return go("/catalog", "refused")
    except RuleRefusal as refusal:
        return go("/catalog", refusal.reason if refusal.reason in MESSAGES else "refused")
    return go(f"/orders/{quote(placed['order_id'])}")


@router.get("/orders/{order_id}")
def order_done(request: Request, order_id: str) -> Response:
    """An order of the member's: what, its status, how to get it."""
    session = signed_in(request)
    cabinet = context_of(request).cabinet
    try:
        placed = cabinet.order_status(session.msisdn, order_id[:100])
    except NotFound:
        return render(request, "error.html", status=404, detail="Такого заказа нет среди ваших.")
    reward = cabinet.catalog.get(placed["item_id"] or "")
    return render(request, "order_done.html", order=placed, reward=reward,
                  balance=cabinet.account(session.msisdn)["balance"])


@router.get("/transfers")
def transfers(request: Request) -> Response:
    session = signed_in(request)
    cabinet = context_of(request).cabinet
    return render(request, "transfers.html", transfers=cabinet.transfers(session.msisdn),
                  balance=cabinet.account(session.msisdn)["balance"])


def _transfer_form(recipient: str, points: str) -> tuple[str, int] | Response:
    """The recipient's number and the points of a transfer form, or the
    redirect that says which one is wrong."""
    to = normalize_phone(recipient)
    if to is None:
        return go("/transfers", "bad_phone")
    amount = parse_points(points)
    if amount is None:
        return go("/transfers", "invalid_points")
    return to, amount


@router.post("/transfers/confirm")
def confirm_transfer(request: Request, recipient: str = Form(""), points: str = Form(""),
                     csrf: str = Form("")) -> Response:
    """The step before a transfer: to whom, how many, the balance after."""
    check_csrf(request, csrf)
    session = signed_in(request)
    form = _transfer_form(recipient, points)
    if isinstance(form, Response):
        return form
    to, amount = form
    balance = context_of(request).cabinet.account(session.msisdn)["balance"]
    return render(request, "transfer_confirm.html", recipient=to, points=amount, balance=balance,
                  transfer_key=secrets.token_urlsafe(12))


@router.post("/transfers")
def transfer(request: Request, recipient: str = Form(""), points: str = Form(""), key: str = Form(""),
             code: str = Form(""), csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    session = signed_in(request)
    form = _transfer_form(recipient, points)
    if isinstance(form, Response):
        return form
    to, amount = form
    if not confirmed(request, session, code):
        return go("/transfers", "confirm")
    try:
        context_of(request).auth.take_transfer_offer(session.msisdn)
    except TooManyRequests:
        return go("/transfers", "too_many_transfers")
    try:
        context_of(request).cabinet.offer_transfer(session.msisdn, to, amount, key[:100] or secrets.token_urlsafe(12))
    except RuleRefusal as refusal:
        return go("/transfers", refusal.reason if refusal.reason in MESSAGES else "refused")
    return go("/transfers", "transfer_sent")


@router.post("/transfers/{transfer_id}/{action}")
def settle(request: Request, transfer_id: str, action: str, csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    session = signed_in(request)
    if action not in ("accept", "decline"):
        return go("/transfers")
    try:
        context_of(request).cabinet.settle_transfer(session.msisdn, transfer_id[:100], action == "accept")
    except NotFound:
        return go("/transfers", "refused")
    except RuleRefusal as refusal:
        return go("/transfers", refusal.reason if refusal.reason in MESSAGES else "refused")
    return go("/transfers", "transfer_done")
