"""The JSON API (/api/v1), shared parts: field types, errors, who is calling.
The operations are in `api_signin`, `api_member` and `api_pos`. Each handler
parses its request into a call on `Auth` or `Cabinet` and turns the answer or
refusal into JSON; no rule lives here."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from engine.errors import RuleRefusal
from schemas.msisdn import Msisdn
from web.app import context_of
from web.auth import Session, TooManyRequests, WeakPassword, check_password_strength

__all__ = ["Msisdn"]  # re-exported: the API's models name the one msisdn type
Code = Annotated[str, Field(pattern=r"^[0-9]{6}$")]
Key = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,100}$", description="the same key twice is one operation")]
Password = Annotated[str, Field(min_length=1, max_length=128)]
Points = Annotated[int, Field(strict=True, ge=1, le=10_000_000)]  # true is not 1 point, "10" not 10
Id = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,100}$")]
# A kind of history line (accrued, clawed_back, …): a word of the engine's, never free text (a NUL
# byte in a filter is an error of PostgreSQL's, not a miss).
HistoryKind = Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,40}$")]
# Filters of the console: a refusal reason or an action, a topic, a staff login.
WORD_PATTERN, TOPIC_PATTERN, LOGIN_PATTERN = r"^[a-z_]{1,64}$", r"^[A-Za-z0-9._-]{1,200}$", r"^[a-z0-9._-]{1,64}$"

# Refusals of the engine, by reason, as HTTP statuses.
REFUSAL_STATUS = {
    "insufficient_points": 409, "not_enrolled": 409, "idempotency_conflict": 409,
    "transfer_expired": 409, "transfer_settled": 409, "invalid_points": 422, "invalid_purpose": 422,
    "invalid_channel": 422,
    "invalid_adjustment": 422, "self_approval": 403,
    "recipient_not_enrolled": 422, "invalid_msisdn": 422, "self_transfer": 422, "unknown_debit": 404, "unknown_transfer": 404,
}


class Strict(BaseModel):
    """A request body: unknown fields refused, no type coercion (`true` is
    not a number, `"yes"` not a boolean)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Error(BaseModel):
    error: str
    detail: str = ""


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str = "", headers: dict[str, str] | None = None):
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Error} for code in codes}


def api_router() -> APIRouter:
    """A router of /api/v1: every operation may answer 401, 429, and 422
    (`invalid_request`: the request does not match its schema)."""
    return APIRouter(prefix="/api/v1", responses=error_responses(401, 422, 429))


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse({"error": error.error, "detail": error.detail}, error.status, headers=error.headers)


def refusal_error(refusal: RuleRefusal) -> ApiError:
    return ApiError(REFUSAL_STATUS.get(refusal.reason, 409), refusal.reason, refusal.detail)


# -- who is calling ----------------------------------------------------------------------


member_token_scheme = HTTPBearer(auto_error=False, scheme_name="MemberToken",
                           description="a token from /api/v1/auth/otp/verify, /auth/login or /auth/network")
store_key_scheme = HTTPBearer(auto_error=False, scheme_name="StoreKey", description="a key from `accrual stores add`")
Credentials = HTTPAuthorizationCredentials | None


def bearer_token(credentials: Credentials) -> str:
    return credentials.credentials if credentials is not None else ""


async def member(request: Request, credentials: Annotated[Credentials, Depends(member_token_scheme)]) -> Session:
    """The member's session. Read without a write where it can be (the
    last use is written once a minute, an ended session deleted): those
    cases go to the thread pool, as every write of the web store does."""
    context = context_of(request)
    token = bearer_token(credentials)
    session = await context.cabinet.read(lambda reads: context.auth.peek_session(token, "api", reads.db))
    if session is None:
        session = await run_in_threadpool(context.auth.session, token, "api")
    if session is None:
        raise ApiError(401, "unauthorized", "a member's bearer token is required",
                       headers={"WWW-Authenticate": "Bearer"})
    return session


def store(request: Request, credentials: Annotated[Credentials, Depends(store_key_scheme)]) -> str:
    store_id = context_of(request).auth.store_for_key(bearer_token(credentials))
    if store_id is None:
        raise ApiError(401, "unauthorized", "a store key is required", headers={"WWW-Authenticate": "Bearer"})
    return store_id


Member = Annotated[Session, Depends(member)]
Store = Annotated[str, Depends(store)]


def limited(call, *args):
    try:
        return call(*args)
    except TooManyRequests as limit:
        raise ApiError(429, "too_many_requests", "try again later",
                       headers={"Retry-After": str(limit.retry_after_s)}) from limit


def confirm_spending(request: Request, session: Session, code: str | None) -> None:
    """A session opened by the network header confirms spending by SMS code."""
    if not session.must_confirm:
        return
    if not code or not context_of(request).auth.check_code(session.msisdn, "confirm", code):
        raise ApiError(403, "confirmation_required",
                       "request a code with purpose 'confirm' and send it as `code`")

def set_password_with_code(auth, msisdn: str, code: str, password: str, keep: Session | None = None) -> None:
    """Sets the password if the code is right; every other session of the
    number ends (all of them when a lost password is restored)."""
    try:
        check_password_strength(password, msisdn)
    except WeakPassword as weak:
        raise ApiError(400, "weak_password", str(weak)) from weak
    if not auth.check_code(msisdn, "password", code):
        raise ApiError(400, "invalid_code", "the code is wrong, used or expired")
    auth.set_password(msisdn, password, keep)
