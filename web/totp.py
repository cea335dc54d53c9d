"""Time-based one-time passwords (RFC 6238: HMAC-SHA-1, 30-second steps,
6 digits), the second factor of the loyalty team's staff.

Pure functions of a secret and a moment: the store (web.staff) remembers the
last step each person used, so that a code is good once. A code of the step
before or after the current one is accepted too: a phone's clock may be off
by up to 30 seconds, and a code typed at the end of its step arrives in the
next."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from datetime import datetime
from urllib.parse import quote, urlencode

STEP_S = 30
DIGITS = 6
SKEW_STEPS = 1  # the step before and the step after are accepted too
SECRET_BYTES = 20  # 160 bits, as RFC 4226 recommends for HMAC-SHA-1
ISSUER = "МТС Бонус accrual"


def new_secret() -> str:
    """A random secret in base32 without padding (what authenticator apps read)."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def step_of(moment: datetime) -> int:
    assert moment.tzinfo is not None, "moments are time-zone aware"
    return int(moment.timestamp()) // STEP_S


def code_at(secret: str, step: int) -> str:
    """RFC 4226 HOTP of the step counter: the code an authenticator shows."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8), casefold=True)
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{number % 10**DIGITS:0{DIGITS}d}"


def matching_step(secret: str, code: str, moment: datetime) -> int | None:
    """The step (now, one before or one after) whose code is `code`, or
    None. Every candidate is compared in constant time."""
    if not (len(code) == DIGITS and code.isascii() and code.isdigit()):
        return None
    now = step_of(moment)
    found = None
    for step in range(now - SKEW_STEPS, now + SKEW_STEPS + 1):
        if hmac.compare_digest(code_at(secret, step), code) and found is None:
            found = step
    return found


def provisioning_uri(secret: str, login: str) -> str:
    """otpauth://totp/… for an authenticator app (Key Uri Format)."""
    label = quote(f"{ISSUER}:{login}")
    query = urlencode({"secret": secret, "issuer": ISSUER, "algorithm": "SHA1", "digits": DIGITS,
                       "period": STEP_S})
    return f"otpauth://totp/{label}?{query}"
