"""What every answer of the personal account carries, and what no request may
exceed: security headers (on errors too), a body size limit checked before
anything parses the body, a 503 with Retry-After while the store does not
answer (a restart or failover; it recovers by itself), and a 500 that says
nothing of the fault.

These are ASGI middleware around the whole application. Starlette's own
error page is outside every middleware, so an unhandled error would leave
without the headers; here it is answered inside them instead.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse, Response

from accrual.outage import is_store_error

log = logging.getLogger("accrual.web")

BODY_MAX_BYTES = 64 * 1024  # the largest honest request (a form, a JSON command) is far below
HSTS_MAX_AGE_S = 365 * 24 * 3600

# `default-src 'self'`: pages load nothing from elsewhere; no frames of ours
# inside other sites; forms post only to us.
CONTENT_SECURITY_POLICY = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"


def security_headers(https: bool) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (b"cache-control", b"no-store"),  # balances and tokens are personal
        (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
        (b"x-frame-options", b"DENY"),
    ]
    if https:
        headers.append((b"strict-transport-security", f"max-age={HSTS_MAX_AGE_S}".encode()))
    return headers


class BodyTooLarge(HTTPException):
    """Raised while the body is read (FastAPI lets its own HTTPException
    through the body parsing; any other error there becomes a 400)."""

    def __init__(self, limit: int):
        super().__init__(413, f"a request body is at most {limit} bytes")
        self.limit = limit


class Guard:
    """Adds the security headers to every answer (those the answer already
    has are kept), refuses bodies over `body_max` bytes with 413, and turns
    an unhandled error into a bare 500."""

    def __init__(self, app: Any, https: bool, body_max: int = BODY_MAX_BYTES):
        self.app = app
        self.headers = security_headers(https)
        self.body_max = body_max

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_guarded(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in self.headers if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        declared = _content_length(scope)
        if declared is not None and declared > self.body_max:
            await too_large(scope, self.body_max)(scope, receive, send_guarded)
            return
        received = 0

        async def receive_bounded() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.body_max:  # a body sent without a length, or longer than it said
                    raise BodyTooLarge(self.body_max)
            return message

        try:
            await self.app(scope, receive_bounded, send_guarded)
        except Exception as error:
            if started:
                raise
            if is_store_error(error):  # a restart, a failover: the connections come back by themselves
                log.warning("store unavailable: %s %s: %s: %s", scope.get("method"), scope.get("path"),
                            type(error).__name__, error)
                await _unavailable(scope)(scope, receive, send_guarded)
                return
            log.exception("unhandled error: %s %s", scope.get("method"), scope.get("path"))
            await _internal_error(scope)(scope, receive, send_guarded)


def _content_length(scope: dict) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value.decode("ascii"))
            except ValueError:
                return None
    return None


def _is_api(scope: dict) -> bool:
    return str(scope.get("path", "")).startswith("/api/")


def too_large(scope: dict, limit: int) -> Response:
    detail = f"a request body is at most {limit} bytes"
    if _is_api(scope):
        return JSONResponse({"error": "request_too_large", "detail": detail}, 413, headers={"Connection": "close"})
    return PlainTextResponse("Слишком большой запрос.", 413, headers={"Connection": "close"})


STORE_RETRY_AFTER_S = 5


def _unavailable(scope: dict) -> Response:
    """The store does not answer (accrual/outage.py): 503 with Retry-After,
    not 500; the next request uses a new connection."""
    headers = {"Retry-After": str(STORE_RETRY_AFTER_S)}
    if _is_api(scope):
        return JSONResponse({"error": "store_unavailable", "detail": "try again in a few seconds"}, 503,
                            headers=headers)
    return PlainTextResponse("Личный кабинет временно недоступен. Попробуйте через минуту.", 503, headers=headers)


def _internal_error(scope: dict) -> Response:
    if _is_api(scope):
        return JSONResponse({"error": "internal_error", "detail": "try again later"}, 500)
    return PlainTextResponse("Что-то пошло не так. Попробуйте позже.", 500)
