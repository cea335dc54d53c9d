"""The JSON API for members: the account, its history and password, how to
earn, offers, the catalogue and orders, transfers."""
from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import Query, Request, Response
from pydantic import BaseModel, Field

from engine.errors import RuleRefusal
from web.api import (
    ApiError, Code, HistoryKind, Id, Key, Member, Msisdn, Password, Points, Strict, api_router, confirm_spending,
    error_responses, limited, refusal_error, set_password_with_code,
)
from web.app import context_of
from web.auth import Session
from web.preferences import choose, preferences_of
from web.service import NotFound, UnknownReward, category_list

router = api_router()


# -- the member's account ------------------------------------------------------------------


class Lot(BaseModel):
    lot_id: int
    rule: str
    lot_date: str
    expires_on: str
    points: int
    remaining: int


class MgtsLink(BaseModel):
    mgts_account: str
    linked_at: str | None


class Me(BaseModel):
    msisdn: str
    enrolled: bool
    enrolled_at: str | None
    balance: int
    lots: list[Lot]
    expiring: dict[str, int] = Field(description="points that expire within 30, 60 and 90 days")
    lapsed: int = Field(description="points in the balance whose lots have expired already; the next daily close "
                                    "(tick) takes them")
    lapsed_on: str | None = Field(description="the earliest expiry date of those lots")
    mgts_accounts: list[MgtsLink]
    terms_version: str | None
    terms_accepted_at: str | None
    has_password: bool
    session_via: str


@router.get("/me", response_model=Me)
async def me(session: Member, request: Request) -> Me:
    context = context_of(request)
    account = context.cabinet.account_query(session.msisdn)

    def query(reads):
        return account(reads), context.auth.credentials(session.msisdn, reads.db)

    found, (has_password, terms) = await context.cabinet.read(query)
    version, accepted_at = terms or (None, None)
    return Me(**found, terms_version=version, terms_accepted_at=accepted_at, has_password=has_password,
              session_via=session.via)


class Enrollment(BaseModel):
    status: Literal["applied", "duplicate"]


@router.post("/me/enroll", response_model=Enrollment)
def enroll(session: Member, request: Request) -> Enrollment:
    """Registers the member in the programme (member_enrolled, channel web)."""
    return Enrollment(status=context_of(request).cabinet.enroll(session.msisdn))


class HistoryEntry(BaseModel):
    version: int
    kind: str
    points: int
    rule: str | None
    reason: str | None
    source_event_id: str | None
    lot_id: int | None
    lot_date: str | None
    expires_on: str | None
    occurred_at: str
    detail: dict[str, Any]


class HistoryPage(BaseModel):
    items: list[HistoryEntry]
    total: int
    page: int
    per_page: int


@router.get("/me/history", response_model=HistoryPage)
async def history(
    session: Member,
    request: Request,
    kind: Annotated[list[HistoryKind] | None, Query(max_length=20,
                                                    description="accrued, clawed_back, expired, redeemed, …")] = None,
    since: Annotated[date | None, Query(description="from this Moscow date")] = None,
    until: Annotated[date | None, Query(description="to this Moscow date, included")] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 20,
) -> HistoryPage:
    cabinet = context_of(request).cabinet
    return HistoryPage(**await cabinet.read(cabinet.history_query(session.msisdn, kind or [], since, until, page,
                                                                  per_page)))


class NewPassword(Strict):
    code: Code
    password: Password


@router.put("/me/password", status_code=204, responses=error_responses(400))
def change_password(body: NewPassword, session: Member, request: Request) -> Response:
    """Sets or changes the password, confirmed by a code sent for purpose 'password'."""
    set_password_with_code(context_of(request).auth, session.msisdn, body.code, body.password, keep=session)
    return Response(status_code=204)


class Notifications(Strict):
    """Which SMS the member wants (all on by default); the notifier honours
    a change from its next message on (docs/notifications.md)."""

    credits: bool = Field(description="one SMS a day with yesterday's credits, by rule")
    transfers: bool = Field(description="a transfer offered to the member; one it sent accepted, declined or returned")
    expiry: bool = Field(description="points that expire within 30 days, and again within 7")


class NotificationsAnswer(BaseModel):
    credits: bool
    transfers: bool
    expiry: bool
    version: int = Field(description="0: never changed")


@router.get("/me/notifications", response_model=NotificationsAnswer)
def notifications(session: Member, request: Request) -> NotificationsAnswer:
    return NotificationsAnswer(**preferences_of(context_of(request).store, session.msisdn).to_json())


@router.put("/me/notifications", response_model=NotificationsAnswer)
def set_notifications(body: Notifications, session: Member, request: Request) -> NotificationsAnswer:
    off = {group for group, on in body.model_dump().items() if not on}
    chosen = choose(context_of(request).store, session.msisdn, off, context_of(request).clock.now())
    return NotificationsAnswer(**chosen.to_json())


# -- the programme: how to earn, offers, the catalogue ---------------------------------------


class Source(BaseModel):
    source: str
    title: str
    rate: str


class Earning(BaseModel):
    rules_version: str
    sources: list[Source]
    expiry_months: int


@router.get("/earn", response_model=Earning)
def earn(request: Request) -> Earning:
    return Earning(**context_of(request).cabinet.earning())


class OfferOut(BaseModel):
    offer_id: str
    title: str
    text: str
    valid_from: date
    valid_to: date


@router.get("/offers", response_model=list[OfferOut])
def offers(request: Request) -> list[OfferOut]:
    return [OfferOut(**vars(o)) for o in context_of(request).cabinet.offers_now()]


class Category(BaseModel):
    id: str
    title: str


class RewardOut(BaseModel):
    item_id: str
    category: str
    title: str
    points: int
    description: str


class Catalog(BaseModel):
    categories: list[Category]
    rewards: list[RewardOut]


@router.get("/catalog", response_model=Catalog)
def catalog(
    request: Request,
    category: Annotated[str | None, Query(pattern=r"^[a-z]{1,30}$")] = None,
) -> Catalog:
    rewards = context_of(request).cabinet.rewards(category)
    return Catalog(categories=category_list(), rewards=[RewardOut(**vars(r)) for r in rewards])


# -- orders ----------------------------------------------------------------------------------------


class NewOrder(Strict):
    item_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
    idempotency_key: Key
    code: Code | None = Field(None, description="required when the session came from the network header")


class Order(BaseModel):
    order_id: str
    item_id: str | None
    title: str
    points: int
    status: Literal["placed", "cancelled"]
    balance_after: int | None
    duplicate: bool
    at: str | None = None


@router.post("/orders", status_code=201, response_model=Order, responses=error_responses(200, 403, 404, 409, 422))
def place_order(body: NewOrder, session: Member, request: Request, response: Response) -> Order:
    """Orders a gift: its price is debited once per idempotency key."""
    confirm_spending(request, session, body.code)
    try:
        order = context_of(request).cabinet.order(session.msisdn, body.item_id, body.idempotency_key)
    except UnknownReward as error:
        raise ApiError(404, "unknown_item", f"no reward {body.item_id!r} in the catalogue") from error
    except RuleRefusal as refusal:
        raise refusal_error(refusal) from refusal
    if order["duplicate"]:
        response.status_code = 200
    return Order(**order)


@router.get("/orders", response_model=list[Order])
def list_orders(session: Member, request: Request) -> list[Order]:
    return [Order(**o) for o in context_of(request).cabinet.orders(session.msisdn)]


@router.get("/orders/{order_id}", response_model=Order, responses=error_responses(404))
def get_order(order_id: Id, session: Member, request: Request) -> Order:
    try:
        return Order(**context_of(request).cabinet.order_status(session.msisdn, order_id))
    except NotFound as error:
        raise ApiError(404, "not_found", "no such order") from error


# -- transfers between members -------------------------------------------------------------------


class NewTransfer(Strict):
    recipient: Msisdn
    points: Points
    idempotency_key: Key
    code: Code | None = Field(None, description="required when the session came from the network header")


class Transfer(BaseModel):
    transfer_id: str
    sender: str
    recipient: str
    points: int
    status: Literal["pending", "accepted", "declined", "returned"]
    offered_at: str | None
    expires_at: str | None
    settled_at: str | None


def _transfer(value: dict[str, Any]) -> Transfer:
    return Transfer(**{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in value.items()
                       if k in Transfer.model_fields})


@router.post("/transfers", status_code=201, response_model=Transfer, responses=error_responses(403, 409, 422))
def offer_transfer(body: NewTransfer, session: Member, request: Request) -> Transfer:
    """Offers points to another member: held from the sender until the
    recipient accepts or declines, and returned after 24 hours otherwise."""
    confirm_spending(request, session, body.code)
    limited(context_of(request).auth.take_transfer_offer, session.msisdn)
    try:
        offered = context_of(request).cabinet.offer_transfer(
            session.msisdn, body.recipient, body.points, body.idempotency_key
        )
    except RuleRefusal as refusal:
        raise refusal_error(refusal) from refusal
    return _transfer(offered)


@router.get("/transfers", response_model=list[Transfer])
def list_transfers(session: Member, request: Request) -> list[Transfer]:
    return [_transfer(t) for t in context_of(request).cabinet.transfers(session.msisdn)]


@router.get("/transfers/{transfer_id}", response_model=Transfer, responses=error_responses(404))
def get_transfer(transfer_id: Id, session: Member, request: Request) -> Transfer:
    try:
        return _transfer(context_of(request).cabinet.transfer(session.msisdn, transfer_id))
    except NotFound as error:
        raise ApiError(404, "not_found", "no such transfer") from error


def _settle(request: Request, session: Session, transfer_id: str, accept: bool) -> Transfer:
    try:
        return _transfer(context_of(request).cabinet.settle_transfer(session.msisdn, transfer_id, accept))
    except NotFound as error:
        raise ApiError(404, "not_found", "no such transfer") from error
    except RuleRefusal as refusal:
        raise refusal_error(refusal) from refusal


@router.post("/transfers/{transfer_id}/accept", response_model=Transfer, responses=error_responses(404, 409))
def accept_transfer(transfer_id: Id, session: Member, request: Request) -> Transfer:
    return _settle(request, session, transfer_id, True)


@router.post("/transfers/{transfer_id}/decline", response_model=Transfer, responses=error_responses(404, 409))
def decline_transfer(transfer_id: Id, session: Member, request: Request) -> Transfer:
    return _settle(request, session, transfer_id, False)
