"""The JSON API: signing in (codes by SMS, passwords, the network header),
restoring a password, signing out."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, Request, Response
from pydantic import BaseModel

from web.api import (
    ApiError, Code, Credentials, Member, Msisdn, Password, Strict, api_router, bearer_token, error_responses,
    limited, member_token_scheme, set_password_with_code,
)
from web.app import client_address, context_of, network_msisdn
from web.sms import SmsError

router = api_router()


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


@router.post("/auth/otp/request", status_code=202, response_model=Sent, responses=error_responses(503))
def request_code(body: CodeRequest, request: Request,
                 credentials: Annotated[Credentials, Depends(member_token_scheme)]) -> Sent:
    """Sends a 6-digit code by SMS. The answer is the same for every valid
    number, member or not. A code to confirm spending ('confirm') is sent
    only to the member signed in with the bearer token: nobody else can use
    up that number's confirmations."""
    if body.purpose == "confirm":
        session = context_of(request).auth.session(bearer_token(credentials), "api")
        if session is None or session.msisdn != body.msisdn:
            raise ApiError(401, "unauthorized", "a code to confirm spending goes only to the signed-in member",
                           headers={"WWW-Authenticate": "Bearer"})
    try:
        limited(context_of(request).auth.send_code, body.msisdn, body.purpose, client_address(request))
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


@router.post("/auth/otp/verify", response_model=Token, responses=error_responses(400))
def verify_code(body: CodeVerification, request: Request) -> Token:
    _terms(body.accept_terms)
    if not context_of(request).auth.check_code(body.msisdn, "login", body.code):
        raise ApiError(400, "invalid_code", "the code is wrong, used or expired")
    return _token(request, body.msisdn, "code")


@router.post("/auth/login", response_model=Token, responses=error_responses(400))
def login(body: PasswordLogin, request: Request) -> Token:
    _terms(body.accept_terms)
    if not limited(context_of(request).auth.check_password, body.msisdn, body.password, client_address(request)):
        raise ApiError(400, "invalid_credentials", "the number or the password is wrong")
    return _token(request, body.msisdn, "password")


@router.post("/auth/network", response_model=Token, responses=error_responses(400))
def network_login(body: NetworkLogin, request: Request) -> Token:
    """Signs in the subscriber whose number the operator's gateway adds
    (X-MSISDN, trusted only from ACCRUAL_TRUSTED_PROXIES)."""
    msisdn = network_msisdn(request)
    if msisdn is None:
        raise ApiError(401, "unauthorized", "no number from the operator's network")
    _terms(body.accept_terms)
    return _token(request, msisdn, "network")


@router.post("/auth/password/reset", status_code=204, responses=error_responses(400))
def reset_password(body: PasswordReset, request: Request) -> Response:
    """Restores a lost password with a code sent for purpose 'password'."""
    auth = context_of(request).auth
    set_password_with_code(auth, body.msisdn, body.code, body.password)
    return Response(status_code=204)



@router.post("/auth/logout", status_code=204)
def logout(session: Member, request: Request, credentials: Annotated[Credentials, Depends(member_token_scheme)]) -> Response:
    context_of(request).auth.close_session(bearer_token(credentials))
    return Response(status_code=204)


@router.post("/auth/logout/all", status_code=204)
def logout_everywhere(session: Member, request: Request) -> Response:
    """Signs the member out on every device: every token and page session
    of the number ends, this one included."""
    context_of(request).auth.end_sessions(session.msisdn)
    return Response(status_code=204)
