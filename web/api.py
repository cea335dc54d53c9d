"""The JSON API (/api/v1). Each handler parses its request into a call on
`Auth` or `Cabinet` and turns the answer or refusal into JSON; no rule lives
here."""
from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from engine.errors import RuleRefusal
from web.app import client_address, context_of, network_msisdn
from web.auth import Session, TooManyRequests, WeakPassword, check_password_strength
from web.service import NotFound, UnknownReward, category_list
from web.sms import SmsError

Msisdn = Annotated[str, Field(pattern=r"^7[0-9]{10}$", description="11 digits, the first 7")]
Code = Annotated[str, Field(pattern=r"^[0-9]{6}$")]
Key = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,100}$", description="the same key twice is one operation")]
Password = Annotated[str, Field(min_length=1, max_length=128)]
Points = Annotated[int, Field(ge=1, le=10_000_000)]
Id = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,100}$")]

# Refusals of the engine, by reason, as HTTP statuses.
REFUSAL_STATUS = {
    "insufficient_points": 409, "not_enrolled": 409, "idempotency_conflict": 409,
    "transfer_expired": 409, "transfer_settled": 409, "invalid_points": 422,
    "recipient_not_enrolled": 422, "self_transfer": 422, "unknown_debit": 404, "unknown_transfer": 404,
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(BaseModel):
    error: str
    detail: str = ""


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str = "", headers: dict[str, str] | None = None):
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Error} for code in codes}


router = APIRouter(prefix="/api/v1", responses=_errors(401, 429))


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse({"error": error.error, "detail": error.detail}, error.status, headers=error.headers)


def _refused(refusal: RuleRefusal) -> ApiError:
    return ApiError(REFUSAL_STATUS.get(refusal.reason, 409), refusal.reason, refusal.detail)


# -- who is calling ----------------------------------------------------------------------


_member_token = HTTPBearer(auto_error=False, scheme_name="MemberToken",
                           description="a token from /api/v1/auth/otp/verify, /auth/login or /auth/network")
_store_key = HTTPBearer(auto_error=False, scheme_name="StoreKey", description="a key from `accrual stores add`")
Credentials = HTTPAuthorizationCredentials | None


def _bearer(credentials: Credentials) -> str:
    return credentials.credentials if credentials is not None else ""


def member(request: Request, credentials: Annotated[Credentials, Depends(_member_token)]) -> Session:
    session = context_of(request).auth.session(_bearer(credentials), "api")
    if session is None:
        raise ApiError(401, "unauthorized", "a member's bearer token is required",
                       headers={"WWW-Authenticate": "Bearer"})
    return session


def store(request: Request, credentials: Annotated[Credentials, Depends(_store_key)]) -> str:
    store_id = context_of(request).auth.store_for_key(_bearer(credentials))
    if store_id is None:
        raise ApiError(401, "unauthorized", "a store key is required", headers={"WWW-Authenticate": "Bearer"})
    return store_id


Member = Annotated[Session, Depends(member)]
Store = Annotated[str, Depends(store)]


def _limited(call, *args):
    try:
        return call(*args)
    except TooManyRequests as limit:
        raise ApiError(429, "too_many_requests", "try again later",
                       headers={"Retry-After": str(limit.retry_after_s)}) from limit


def _confirm(request: Request, session: Session, code: str | None) -> None:
    """A session opened by the network header confirms spending by SMS code."""
    if not session.must_confirm:
        return
    if not code or not context_of(request).auth.check_code(session.msisdn, "confirm", code):
        raise ApiError(403, "confirmation_required",
                       "request a code with purpose 'confirm' and send it as `code`")


# -- sign-in -------------------------------------------------------------------------------


class CodeRequest(Strict):
    msisdn: Msisdn
    purpose: Literal["login", "password", "confirm"]


class CodeVerification(Strict):
    msisdn: Msisdn
    code: Code
    accept_terms: bool


class PasswordLogin(Strict):
    msisdn: Msisdn
    password: Password
    accept_terms: bool


class NetworkLogin(Strict):
    accept_terms: bool


class PasswordReset(Strict):
    msisdn: Msisdn
    code: Code
    password: Password


class Token(BaseModel):
    token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    via: Literal["password", "code", "network"]


class Sent(BaseModel):
    status: Literal["sent"] = "sent"


@router.post("/auth/otp/request", status_code=202, response_model=Sent, responses=_errors(503))
def request_code(body: CodeRequest, request: Request) -> Sent:
    """Sends a 6-digit code by SMS. The answer is the same for every valid
    number, member or not."""
    try:
        _limited(context_of(request).auth.send_code, body.msisdn, body.purpose, client_address(request))
    except SmsError as error:
        raise ApiError(503, "sms_unavailable", str(error)) from error
    return Sent()


def _terms(accept: bool) -> None:
    if not accept:
        raise ApiError(400, "terms_not_accepted", "signing in means accepting the user agreement")


def _token(request: Request, msisdn: str, via: str) -> Token:
    auth = context_of(request).auth
    auth.accept_terms(msisdn)
    token, session = auth.open_session(msisdn, "api", via)
    return Token(token=token, expires_at=session.expires_at, via=via)


@router.post("/auth/otp/verify", response_model=Token, responses=_errors(400))
def verify_code(body: CodeVerification, request: Request) -> Token:
    _terms(body.accept_terms)
    if not context_of(request).auth.check_code(body.msisdn, "login", body.code):
        raise ApiError(400, "invalid_code", "the code is wrong, used or expired")
    return _token(request, body.msisdn, "code")


@router.post("/auth/login", response_model=Token, responses=_errors(400))
def login(body: PasswordLogin, request: Request) -> Token:
    _terms(body.accept_terms)
    if not _limited(context_of(request).auth.check_password, body.msisdn, body.password):
        raise ApiError(400, "invalid_credentials", "the number or the password is wrong")
    return _token(request, body.msisdn, "password")


@router.post("/auth/network", response_model=Token, responses=_errors(400))
def network_login(body: NetworkLogin, request: Request) -> Token:
    """Signs in the subscriber whose number the operator's gateway adds
    (X-MSISDN, trusted only from ACCRUAL_TRUSTED_PROXIES)."""
    msisdn = network_msisdn(request)
    if msisdn is None:
        raise ApiError(401, "unauthorized", "no number from the operator's network")
    _terms(body.accept_terms)
    return _token(request, msisdn, "network")


@router.post("/auth/password/reset", status_code=204, responses=_errors(400))
def reset_password(body: PasswordReset, request: Request) -> Response:
    """Restores a lost password with a code sent for purpose 'password'."""
    auth = context_of(request).auth
    _set_password(auth, body.msisdn, body.code, body.password)
    return Response(status_code=204)


def _set_password(auth, msisdn: str, code: str, password: str) -> None:
    try:
        check_password_strength(password)
    except WeakPassword as weak:
        raise ApiError(400, "weak_password", str(weak)) from weak
    if not auth.check_code(msisdn, "password", code):
        raise ApiError(400, "invalid_code", "the code is wrong, used or expired")
    auth.set_password(msisdn, password)


@router.post("/auth/logout", status_code=204)
def logout(session: Member, request: Request, credentials: Annotated[Credentials, Depends(_member_token)]) -> Response:
    context_of(request).auth.close_session(_bearer(credentials))
    return Response(status_code=204)


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
    mgts_accounts: list[MgtsLink]
    terms_version: str | None
    terms_accepted_at: str | None
    has_password: bool
    session_via: str


@router.get("/me", response_model=Me)
def me(session: Member, request: Request) -> Me:
    context = context_of(request)
    terms = context.auth.accepted_terms(session.msisdn) or (None, None)
    return Me(
        **context.cabinet.account(session.msisdn),
        terms_version=terms[0], terms_accepted_at=terms[1],
        has_password=context.auth.has_password(session.msisdn), session_via=session.via,
    )


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
def history(
    session: Member,
    request: Request,
    kind: Annotated[list[str] | None, Query(description="accrued, clawed_back, expired, redeemed, …")] = None,
    since: Annotated[date | None, Query(description="from this Moscow date")] = None,
    until: Annotated[date | None, Query(description="to this Moscow date, included")] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 20,
) -> HistoryPage:
    result = context_of(request).cabinet.history(session.msisdn, kind or [], since, until, page, per_page)
    return HistoryPage(**result)


class NewPassword(Strict):
    code: Code
    password: Password


@router.put("/me/password", status_code=204, responses=_errors(400))
def change_password(body: NewPassword, session: Member, request: Request) -> Response:
    """Sets or changes the password, confirmed by a code sent for purpose 'password'."""
    _set_password(context_of(request).auth, session.msisdn, body.code, body.password)
    return Response(status_code=204)


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


@router.post("/orders", status_code=201, response_model=Order, responses=_errors(200, 403, 404, 409, 422))
def place_order(body: NewOrder, session: Member, request: Request, response: Response) -> Order:
    """Orders a gift: its price is debited once per idempotency key."""
    _confirm(request, session, body.code)
    try:
        order = context_of(request).cabinet.order(session.msisdn, body.item_id, body.idempotency_key)
    except UnknownReward as error:
        raise ApiError(404, "unknown_item", f"no reward {body.item_id!r} in the catalogue") from error
    except RuleRefusal as refusal:
        raise _refused(refusal) from refusal
    if order["duplicate"]:
        response.status_code = 200
    return Order(**order)


@router.get("/orders", response_model=list[Order])
def list_orders(session: Member, request: Request) -> list[Order]:
    return [Order(**o) for o in context_of(request).cabinet.orders(session.msisdn)]


@router.get("/orders/{order_id}", response_model=Order, responses=_errors(404))
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


@router.post("/transfers", status_code=201, response_model=Transfer, responses=_errors(403, 409, 422))
def offer_transfer(body: NewTransfer, session: Member, request: Request) -> Transfer:
    """Offers points to another member: held from the sender until the
    recipient accepts or declines, and returned after 24 hours otherwise."""
    _confirm(request, session, body.code)
    try:
        offered = context_of(request).cabinet.offer_transfer(
            session.msisdn, body.recipient, body.points, body.idempotency_key
        )
    except RuleRefusal as refusal:
        raise _refused(refusal) from refusal
    return _transfer(offered)


@router.get("/transfers", response_model=list[Transfer])
def list_transfers(session: Member, request: Request) -> list[Transfer]:
    return [_transfer(t) for t in context_of(request).cabinet.transfers(session.msisdn)]


@router.get("/transfers/{transfer_id}", response_model=Transfer, responses=_errors(404))
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
        raise _refused(refusal) from refusal


@router.post("/transfers/{transfer_id}/accept", response_model=Transfer, responses=_errors(404, 409))
def accept_transfer(transfer_id: Id, session: Member, request: Request) -> Transfer:
    return _settle(request, session, transfer_id, True)


@router.post("/transfers/{transfer_id}/decline", response_model=Transfer, responses=_errors(404, 409))
def decline_transfer(transfer_id: Id, session: Member, request: Request) -> Transfer:
    return _settle(request, session, transfer_id, False)


# -- shop tills ---------------------------------------------------------------------------------------


class PosDebitRequest(Strict):
    msisdn: Msisdn
    points: Points = Field(description="the discount in rubles: 1 point = 1 ₽")
    idempotency_key: Key
    receipt_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,100}$")] | None = None


class PosDebit(BaseModel):
    debit_id: str
    msisdn: str
    points: int
    purpose: str
    status: Literal["debited", "cancelled"]
    balance_after: int | None
    duplicate: bool


def _pos(value: dict[str, Any]) -> PosDebit:
    return PosDebit(**{k: v for k, v in value.items() if k in PosDebit.model_fields})


@router.post("/pos/debits", status_code=201, response_model=PosDebit, responses=_errors(200, 409, 422))
def pos_debit(body: PosDebitRequest, store_id: Store, request: Request, response: Response) -> PosDebit:
    """Debits points as a discount at a shop till, once per idempotency key."""
    context = context_of(request)
    try:
        debit = context.cabinet.pos_debit(
            store_id, body.msisdn, body.points, body.idempotency_key, body.receipt_id,
            lambda debit_id, msisdn: context.auth.remember_pos_debit(debit_id, store_id, msisdn),
        )
    except RuleRefusal as refusal:
        raise _refused(refusal) from refusal
    if debit.get("duplicate"):
        response.status_code = 200
    return _pos(debit)


def _own_debit(request: Request, store_id: str, debit_id: str) -> str:
    msisdn = context_of(request).auth.pos_debit_owner(debit_id, store_id)
    if msisdn is None:
        raise ApiError(404, "not_found", "no debit of this store with that id")
    return msisdn


@router.get("/pos/debits/{debit_id}", response_model=PosDebit, responses=_errors(404))
def pos_debit_status(debit_id: Id, store_id: Store, request: Request) -> PosDebit:
    msisdn = _own_debit(request, store_id, debit_id)
    try:
        return _pos(context_of(request).cabinet.pos_status(msisdn, debit_id))
    except NotFound as error:
        raise ApiError(404, "not_found", "no debit of this store with that id") from error


@router.post("/pos/debits/{debit_id}/cancel", response_model=PosDebit, responses=_errors(404, 409))
def pos_cancel(debit_id: Id, store_id: Store, request: Request) -> PosDebit:
    """Cancels a debit this store made; the points go back to the member."""
    msisdn = _own_debit(request, store_id, debit_id)
    try:
        return _pos(context_of(request).cabinet.pos_cancel(msisdn, debit_id))
    except RuleRefusal as refusal:
        raise _refused(refusal) from refusal
