"""The console's JSON API (/api/v1/ops): staff sign-in, members, adjustments,
dead letters, the programme's figures and the audit log (docs/console.md).

Every route names the permission it needs (web.staff.PERMISSIONS); a staff
token is a bearer token of its own kind, unknown to the member API, and a
member's token is unknown here. A token whose password must still change
can only change it. Every call that reads a member or changes something is
written to the audit log with who, when, from which address and what."""
from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Callable, Literal

from fastapi import Depends, Path, Query, Request, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field

from engine.errors import RuleRefusal
from web.api import LOGIN_PATTERN, TOPIC_PATTERN, WORD_PATTERN, ApiError, Credentials, HistoryKind, Id, Key, Msisdn, Strict, api_router, bearer_token, error_responses
from web.app import client_address, context_of
from web.auth import TooManyRequests, WeakPassword
from web.console import Adjustment, ConsoleRefusal
from web.staff import SignInRefused, StaffSession

router = api_router()
staff_token_scheme = HTTPBearer(auto_error=False, scheme_name="StaffToken",
                                description="a token from /api/v1/ops/auth/login")
Password = Annotated[str, Field(min_length=1, max_length=128)]
Login = Annotated[str, Field(min_length=1, max_length=64)]
Totp = Annotated[str, Field(pattern=r"^[0-9]{6}$")]
SignedPoints = Annotated[int, Field(strict=True, ge=-10_000_000, le=10_000_000)]
Reason = Annotated[str, Field(min_length=10, max_length=500)]
Prefix = Annotated[str, Query(pattern=r"^[0-9]{1,11}$", description="the first digits of the number")]


def _session(request: Request, credentials: Credentials) -> StaffSession:
    session = context_of(request).staff.session(bearer_token(credentials), "api")
    if session is None:
        raise ApiError(401, "unauthorized", "a staff bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    return session


def allowed(permission: str) -> Callable[..., StaffSession]:
    """A dependency: the caller's staff session, if its role may `permission`."""

    def dependency(request: Request, credentials: Annotated[Credentials, Depends(staff_token_scheme)]) -> StaffSession:
        session = _session(request, credentials)
        if session.must_change_password:
            raise ApiError(403, "password_change_required", "change the initial password first: PUT /api/v1/ops/me/password")
        if not session.may(permission):
            raise ApiError(403, "forbidden", f"the {session.role} role may not do this")
        return session

    return dependency


def signed_in(request: Request, credentials: Annotated[Credentials, Depends(staff_token_scheme)]) -> StaffSession:
    return _session(request, credentials)


def audit(request: Request, session: StaffSession, action: str, target: str = "", **detail: Any) -> None:
    context_of(request).console.audit.record(session.login, session.role, client_address(request), action, target,
                                              detail)


def refused(refusal: ConsoleRefusal) -> ApiError:
    return ApiError(refusal.status, refusal.reason, refusal.detail)


# -- signing in ----------------------------------------------------------------------------------


class LoginRequest(Strict):
    login: Login
    password: Password
    totp: Totp


class LoginAnswer(BaseModel):
    token: str
    must_change_password: bool = False
    role: str


@router.post("/ops/auth/login", response_model=LoginAnswer, tags=["console"],
             responses=error_responses(401, 429))
def login(body: LoginRequest, request: Request) -> LoginAnswer:
    context = context_of(request)
    address = client_address(request)
    try:
        token, session = context.staff.sign_in(body.login, body.password, body.totp, address, "api")
    except TooManyRequests as limit:
        raise ApiError(429, "too_many_requests", "try again later",
                       headers={"Retry-After": str(limit.retry_after_s)}) from limit
    except SignInRefused as refusal:
        context.console.audit.record(body.login, "-", address, "sign_in_refused")
        raise ApiError(401, "invalid_credentials", "the login, password or code is wrong") from refusal
    audit(request, session, "sign_in", via="api")
    return LoginAnswer(token=token, must_change_password=session.must_change_password, role=session.role)


@router.post("/ops/auth/logout", status_code=204, tags=["console"])
def logout(session: Annotated[StaffSession, Depends(signed_in)], request: Request) -> Response:
    context_of(request).staff.sign_out(session)
    audit(request, session, "sign_out")
    return Response(status_code=204)


class PasswordChange(Strict):
    current_password: Password
    new_password: Password


@router.put("/ops/me/password", status_code=204, tags=["console"], responses=error_responses(400, 403))
def change_password(body: PasswordChange, session: Annotated[StaffSession, Depends(signed_in)],
                    request: Request) -> Response:
    try:
        context_of(request).staff.change_password(session, body.current_password, body.new_password,
                                                  client_address(request))
    except TooManyRequests as limit:
        raise ApiError(429, "too_many_requests", "try again later",
                       headers={"Retry-After": str(limit.retry_after_s)}) from limit
    except SignInRefused as refusal:
        raise ApiError(403, "invalid_credentials", "the current password is wrong") from refusal
    except WeakPassword as weak:
        raise ApiError(400, "weak_password", str(weak)) from weak
    audit(request, session, "password_changed")
    return Response(status_code=204)


class Me(BaseModel):
    login: str
    role: str
    must_change_password: bool
    permissions: list[str]


@router.get("/ops/me", response_model=Me, tags=["console"])
def me(session: Annotated[StaffSession, Depends(signed_in)]) -> Me:
    from web.staff import PERMISSIONS

    return Me(login=session.login, role=session.role, must_change_password=session.must_change_password,
              permissions=[] if session.must_change_password else sorted(PERMISSIONS[session.role]))


# -- members -------------------------------------------------------------------------------------


MembersReader = Annotated[StaffSession, Depends(allowed("members.read"))]


@router.get("/ops/members", tags=["console"])
def search_members(prefix: Prefix, session: MembersReader, request: Request) -> dict[str, Any]:
    found = context_of(request).console.search(prefix)
    audit(request, session, "members_searched", prefix, found=len(found))
    return {"items": found}


@router.get("/ops/members/{msisdn}", tags=["console"], responses=error_responses(404))
def member(msisdn: Msisdn, session: MembersReader, request: Request) -> dict[str, Any]:
    found = context_of(request).console.member(msisdn)
    audit(request, session, "member_viewed", msisdn)
    if found is None:
        raise ApiError(404, "unknown_member", "the engine has no account for this number")
    return found


@router.get("/ops/members/{msisdn}/history", tags=["console"])
def member_history(
    msisdn: Msisdn, session: MembersReader, request: Request,
    kind: Annotated[list[HistoryKind] | None, Query(max_length=20)] = None,
    since: Annotated[date | None, Query(alias="from")] = None,
    until: Annotated[date | None, Query(alias="to")] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    result = context_of(request).console.history(msisdn, kind or [], since, until, page, per_page)
    audit(request, session, "member_history_viewed", msisdn, page=page)
    return result


# -- adjustments ---------------------------------------------------------------------------------


class AdjustmentRequest(Strict):
    msisdn: Msisdn
    points: SignedPoints = Field(description="signed: a credit (new lot dated today) or a debit (first-to-expire "
                                             "lots first)")
    reason: Reason
    idempotency_key: Key


def _refused_outcome(adjustment: Adjustment) -> None:
    """An adjustment the engine refused (a debit beyond the balance) is kept
    as `refused`; the caller is told why, as a refusal."""
    if adjustment.status == "refused":
        raise ApiError(409, adjustment.refusal or "refused",
                       f"adjustment {adjustment.adjustment_id} was refused: {adjustment.refusal}")


@router.post("/ops/adjustments", response_model=Adjustment, tags=["console"], responses=error_responses(403, 409))
def request_adjustment(body: AdjustmentRequest, session: Annotated[StaffSession, Depends(allowed("adjustments.request"))],
                       request: Request, response: Response) -> Adjustment:
    try:
        adjustment, repeat = context_of(request).console.request_adjustment(
            session, body.msisdn, body.points, body.reason, body.idempotency_key)
    except ConsoleRefusal as refusal:
        raise refused(refusal) from refusal
    if not repeat:
        audit(request, session, "adjustment_requested", adjustment.adjustment_id, msisdn=body.msisdn,
              points=body.points, reason=adjustment.reason, status=adjustment.status)
    response.status_code = 200 if repeat else 201
    _refused_outcome(adjustment)
    return adjustment


@router.get("/ops/adjustments", tags=["console"])
def list_adjustments(
    session: Annotated[StaffSession, Depends(allowed("adjustments.read"))], request: Request,
    status: Annotated[Literal["pending_approval", "approved", "applied", "rejected", "refused"] | None,
                      Query()] = None,
    msisdn: Annotated[str | None, Query(pattern=r"^7[0-9]{10}$")] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    items, total = context_of(request).console.adjustments(status, msisdn, per_page, (page - 1) * per_page)
    return {"items": [a.to_json() for a in items], "total": total, "page": page, "per_page": per_page}


@router.get("/ops/adjustments/{adjustment_id}", response_model=Adjustment, tags=["console"],
            responses=error_responses(404))
def get_adjustment(adjustment_id: Id, session: Annotated[StaffSession, Depends(allowed("adjustments.read"))],
                   request: Request) -> Adjustment:
    found = context_of(request).console.adjustment(adjustment_id)
    if found is None:
        raise ApiError(404, "unknown_adjustment", "no such adjustment")
    return found


def _decide(adjustment_id: str, session: StaffSession, request: Request, approve: bool) -> Adjustment:
    try:
        adjustment = context_of(request).console.decide(session, adjustment_id, approve)
    except ConsoleRefusal as refusal:
        raise refused(refusal) from refusal
    audit(request, session, "adjustment_approved" if approve else "adjustment_rejected", adjustment_id,
          msisdn=adjustment.msisdn, points=adjustment.points, status=adjustment.status)
    _refused_outcome(adjustment)
    return adjustment


Decider = Annotated[StaffSession, Depends(allowed("adjustments.decide"))]


@router.post("/ops/adjustments/{adjustment_id}/approve", response_model=Adjustment, tags=["console"],
             responses=error_responses(403, 404, 409))
def approve(adjustment_id: Id, session: Decider, request: Request) -> Adjustment:
    return _decide(adjustment_id, session, request, True)


@router.post("/ops/adjustments/{adjustment_id}/reject", response_model=Adjustment, tags=["console"],
             responses=error_responses(403, 404, 409))
def reject(adjustment_id: Id, session: Decider, request: Request) -> Adjustment:
    return _decide(adjustment_id, session, request, False)


# -- dead letters --------------------------------------------------------------------------------


@router.get("/ops/dead-letters", tags=["console"])
def list_dead_letters(
    session: Annotated[StaffSession, Depends(allowed("dead_letters.read"))], request: Request,
    reason: Annotated[str | None, Query(pattern=WORD_PATTERN)] = None,
    topic: Annotated[str | None, Query(pattern=TOPIC_PATTERN)] = None,
    since: Annotated[date | None, Query(alias="from")] = None,
    until: Annotated[date | None, Query(alias="to")] = None,
    status: Annotated[Literal["open", "redriven"] | None, Query()] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Rejected messages, newest first, with their reason, detail, source
    topic, partition, offset, original bytes (base64, and the text when it is
    UTF-8) and every attempt; counts by reason and by Moscow day."""
    found = context_of(request).dead_letters.page(reason=reason, topic=topic, since=since, until=until,
                                                  status=status, limit=per_page, offset=(page - 1) * per_page)
    audit(request, session, "dead_letters_viewed", reason or "", topic=topic, page=page)
    return {**found, "page": page, "per_page": per_page}


DeadLetterId = Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{32,36}$")]


@router.get("/ops/dead-letters/{rejection_id}", tags=["console"], responses=error_responses(404))
def get_dead_letter(rejection_id: DeadLetterId, session: Annotated[StaffSession, Depends(allowed("dead_letters.read"))],
                    request: Request) -> dict[str, Any]:
    found = context_of(request).dead_letters.one(rejection_id)
    if found is None:
        raise ApiError(404, "unknown_dead_letter", "no such dead letter")
    return found


@router.post("/ops/dead-letters/{rejection_id}/redrive", tags=["console"], responses=error_responses(404, 409))
def redrive(rejection_id: DeadLetterId, session: Annotated[StaffSession, Depends(allowed("dead_letters.redrive"))],
            request: Request) -> dict[str, Any]:
    """Applies the original bytes again under their own key. `outcome`
    "applied" (then `applied_as`), or "rejected" with the new reason: the
    message stays a dead letter, both attempts shown."""
    try:
        result = context_of(request).dead_letters.redrive(session, rejection_id)
    except RuleRefusal as refusal:
        status = 404 if refusal.reason == "unknown_dead_letter" else 409
        raise ApiError(status, refusal.reason, refusal.detail) from refusal
    audit(request, session, "dead_letter_redriven", rejection_id, outcome=result["outcome"],
          reason=result.get("reason"), attempt=result["attempt"])
    return result


# -- the programme at a glance -------------------------------------------------------------------


async def programme(request: Request) -> Any:
    """The dashboard's figures from the read models, and the Kafka worker's
    lag and throughput (bounded: a Kafka that does not answer shows none)."""
    import time

    from web.dashboard import at_a_glance
    from web.dashboard_worker import worker_status

    context = context_of(request)
    today = context.cabinet.today()
    figures = await context.cabinet.read(lambda reads: at_a_glance(reads.db, reads.names, today))
    worker = await worker_status(request.app.state.kafka, request.app.state.throughput, time.monotonic())
    return figures.with_worker(worker)


@router.get("/ops/dashboard", tags=["console"])
async def dashboard(session: Annotated[StaffSession, Depends(allowed("programme.read"))],
                    request: Request) -> dict[str, Any]:
    """Members and points outstanding, points issued by rule and redeemed per
    day for the last 90 days, the liability by month, the breakage cohorts,
    rejections by reason per day, the worker's lag per partition and its
    throughput."""
    return (await programme(request)).to_json()


# -- the audit log -------------------------------------------------------------------------------


@router.get("/ops/audit-log", tags=["console"])
def audit_log(
    session: Annotated[StaffSession, Depends(allowed("audit.read"))], request: Request,
    login: Annotated[str | None, Query(pattern=LOGIN_PATTERN)] = None,
    action: Annotated[str | None, Query(pattern=WORD_PATTERN)] = None,
    since: Annotated[date | None, Query(alias="from")] = None,
    until: Annotated[date | None, Query(alias="to")] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 100,
) -> dict[str, Any]:
    entries, total = context_of(request).console.audit.entries(
        login=login, action=action, since=since, until=until, limit=per_page, offset=(page - 1) * per_page)
    return {"items": [e.to_json() for e in entries], "total": total, "page": page, "per_page": per_page}
