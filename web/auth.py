"""Who is signed in: passwords, one-time codes by SMS, sessions and API
tokens, shop keys, and the limits that stop guessing.

No answer here depends on whether a number is known: codes are sent to any
valid number (it is the subscriber's phone that proves who they are), a
password is checked against a stand-in hash when the number has none, and
the per-number slow-down counts failures of unknown numbers too.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from web.clock import Clock
from web.sms import SmsGateway
from web.store import WebStore, parse_stamp, stamp

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1 (minimum).
PASSWORDS = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16, type=Type.ID)
PASSWORD_LENGTH_MIN, PASSWORD_LENGTH_MAX = 8, 128

PURPOSES = ("login", "password", "confirm")  # sign in; set, change or restore the password; confirm a spend
CODE_DIGITS = 6
CODE_TTL = timedelta(minutes=5)
CODE_TRIES_MAX = 5
SENDS_PER_NUMBER = (3, timedelta(minutes=10))  # at most 3 codes to one number in 10 minutes
SENDS_PER_NUMBER_DAY = (10, timedelta(days=1))
SENDS_PER_ADDRESS = (20, timedelta(minutes=10))  # and 20 from one client address
LOGIN_FREE_FAILURES = 3  # then each failure doubles the wait: 1 s, 2 s, 4 s … up to 15 minutes
LOGIN_WAIT_MAX = timedelta(minutes=15)
SESSION_TTL = timedelta(hours=12)

SMS_TEXT = {
    "login": "МТС Бонус: код для входа {code}. Никому не сообщайте его.",
    "password": "МТС Бонус: код для смены пароля {code}. Никому не сообщайте его.",
    "confirm": "МТС Бонус: код подтверждения операции {code}. Никому не сообщайте его.",
}

# A stand-in hash, verified when a number has no password, so that a known
# and an unknown number take the same time to refuse.
_STAND_IN_HASH = PASSWORDS.hash(secrets.token_urlsafe(16))


class TooManyRequests(Exception):
    def __init__(self, retry_after_s: int):
        super().__init__(f"retry after {retry_after_s} s")
        self.retry_after_s = max(1, retry_after_s)


class WeakPassword(ValueError):
    pass


@dataclass(frozen=True)
class Session:
    msisdn: str
    kind: str  # "api" (bearer token) or "page" (cookie)
    via: str  # "password", "code" or "network" (X-MSISDN: must confirm spending with a code)
    csrf: str
    expires_at: datetime

    @property
    def must_confirm(self) -> bool:
        return self.via == "network"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _code_hash(salt: str, msisdn: str, purpose: str, code: str) -> str:
    return sha256(f"{salt}:{msisdn}:{purpose}:{code}")


class Auth:
    def __init__(self, store: WebStore, clock: Clock, sms: SmsGateway, terms_version: str):
        self.store = store
        self.clock = clock
        self.sms = sms
        self.terms_version = terms_version

    # -- rate limits -----------------------------------------------------------------

    def _take(self, bucket: str, limit: tuple[int, timedelta]) -> None:
        """Counts one hit in `bucket`, or raises TooManyRequests if the window
        is full (a sliding window of stored hits)."""
        count_max, window = limit
        now = self.clock.now()
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM web_rate_hits WHERE bucket = ? AND at <= ?", (bucket, stamp(now - window)))
            hits = tx.query("SELECT at FROM web_rate_hits WHERE bucket = ? ORDER BY at", (bucket,))
            if len(hits) >= count_max:
                oldest = parse_stamp(hits[0][0])
                raise TooManyRequests(math.ceil((oldest + window - now).total_seconds()))
            tx.execute("INSERT INTO web_rate_hits (bucket, at) VALUES (?, ?)", (bucket, stamp(now)))

    # -- one-time codes ------------------------------------------------------------------

    def send_code(self, msisdn: str, purpose: str, client: str) -> None:
        """A new 6-digit code for `purpose`, by SMS; earlier codes of the same
        number and purpose stop working."""
        assert purpose in PURPOSES
        self._take(f"sms:address:{client}", SENDS_PER_ADDRESS)
        self._take(f"sms:number:{msisdn}", SENDS_PER_NUMBER)
        self._take(f"sms:number-day:{msisdn}", SENDS_PER_NUMBER_DAY)
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        salt = secrets.token_hex(16)
        now = self.clock.now()
        with self.store.transaction() as tx:
            tx.execute(
                "UPDATE web_otps SET spent_at = ? WHERE msisdn = ? AND purpose = ? AND spent_at IS NULL",
                (stamp(now), msisdn, purpose),
            )
            tx.execute(
                "INSERT INTO web_otps (otp_id, msisdn, purpose, salt, code_hash, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (secrets.token_hex(16), msisdn, purpose, salt, _code_hash(salt, msisdn, purpose, code),
                 stamp(now), stamp(now + CODE_TTL)),
            )
        self.sms.send(msisdn, SMS_TEXT[purpose].format(code=code), now)

    def check_code(self, msisdn: str, purpose: str, code: str) -> bool:
        """True once for the right code of this number and purpose within its
        lifetime; a wrong try counts, and the fifth spends the code."""
        now = self.clock.now()
        with self.store.transaction() as tx:
            rows = tx.query(
                "SELECT otp_id, salt, code_hash, failures FROM web_otps WHERE msisdn = ? AND purpose = ? "
                "AND spent_at IS NULL AND expires_at > ? ORDER BY created_at DESC LIMIT 1",
                (msisdn, purpose, stamp(now)),
            )
            if not rows:
                _code_hash("0" * 32, msisdn, purpose, code)  # the same work as a real check
                return False
            otp_id, salt, expected, failures = rows[0]
            if hmac.compare_digest(expected, _code_hash(salt, msisdn, purpose, code)):
                tx.execute("UPDATE web_otps SET spent_at = ? WHERE otp_id = ? AND spent_at IS NULL",
                           (stamp(now), otp_id))
                return tx.cursor.rowcount == 1
            failures += 1
            spent = stamp(now) if failures >= CODE_TRIES_MAX else None
            tx.execute("UPDATE web_otps SET failures = ?, spent_at = ? WHERE otp_id = ?", (failures, spent, otp_id))
            return False

    # -- passwords -------------------------------------------------------------------------

    def check_password(self, msisdn: str, password: str) -> bool:
        """True if the number has this password. Failures of any number, known
        or not, make its next try wait (TooManyRequests)."""
        self._wait_after_failures(msisdn)
        rows = self.store.query("SELECT password_hash FROM web_credentials WHERE msisdn = ?", (msisdn,))
        stored = rows[0][0] if rows and rows[0][0] else None
        try:
            ok = PASSWORDS.verify(stored or _STAND_IN_HASH, password) and stored is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if ok:
            self.store.execute("DELETE FROM web_login_failures WHERE msisdn = ?", (msisdn,))
            if PASSWORDS.check_needs_rehash(stored):
                self._store_hash(msisdn, PASSWORDS.hash(password))  # stronger parameters since it was set
            return True
        self._count_failure(msisdn)
        return False

    def _wait_after_failures(self, msisdn: str) -> None:
        rows = self.store.query("SELECT failures, last_at FROM web_login_failures WHERE msisdn = ?", (msisdn,))
        if not rows or rows[0][0] < LOGIN_FREE_FAILURES:
            return
        failures, last_at = rows[0]
        wait = min(timedelta(seconds=2 ** (failures - LOGIN_FREE_FAILURES)), LOGIN_WAIT_MAX)
        left = parse_stamp(last_at) + wait - self.clock.now()
        if left > timedelta(0):
            raise TooManyRequests(math.ceil(left.total_seconds()))

    def _count_failure(self, msisdn: str) -> None:
        now = stamp(self.clock.now())
        with self.store.transaction() as tx:
            tx.execute(
                "INSERT INTO web_login_failures (msisdn, failures, last_at) VALUES (?, 1, ?) "
                "ON CONFLICT (msisdn) DO UPDATE SET failures = web_login_failures.failures + 1, last_at = ?",
                (msisdn, now, now),
            )

    def set_password(self, msisdn: str, password: str) -> None:
        check_password_strength(password)
        self._store_hash(msisdn, PASSWORDS.hash(password))

    def _store_hash(self, msisdn: str, hashed: str) -> None:
        now = stamp(self.clock.now())
        with self.store.transaction() as tx:
            tx.execute(
                "INSERT INTO web_credentials (msisdn, password_hash, password_set_at) VALUES (?, ?, ?) "
                "ON CONFLICT (msisdn) DO UPDATE SET password_hash = ?, password_set_at = ?",
                (msisdn, hashed, now, hashed, now),
            )
            tx.execute("DELETE FROM web_login_failures WHERE msisdn = ?", (msisdn,))

    def has_password(self, msisdn: str) -> bool:
        rows = self.store.query("SELECT password_hash FROM web_credentials WHERE msisdn = ?", (msisdn,))
        return bool(rows and rows[0][0])

    # -- the user agreement --------------------------------------------------------------------

    def accept_terms(self, msisdn: str) -> None:
        now = stamp(self.clock.now())
        with self.store.transaction() as tx:
            tx.execute(
                "INSERT INTO web_credentials (msisdn, terms_version, terms_accepted_at) VALUES (?, ?, ?) "
                "ON CONFLICT (msisdn) DO UPDATE SET terms_version = ?, terms_accepted_at = ?",
                (msisdn, self.terms_version, now, self.terms_version, now),
            )

    def accepted_terms(self, msisdn: str) -> tuple[str, str] | None:
        rows = self.store.query(
            "SELECT terms_version, terms_accepted_at FROM web_credentials WHERE msisdn = ?", (msisdn,)
        )
        return (rows[0][0], rows[0][1]) if rows and rows[0][0] else None

    # -- sessions and tokens ---------------------------------------------------------------------

    def open_session(self, msisdn: str, kind: str, via: str) -> tuple[str, Session]:
        """A new random token (returned once; only its SHA-256 is stored)."""
        token = secrets.token_urlsafe(32)
        now = self.clock.now()
        session = Session(msisdn, kind, via, secrets.token_urlsafe(24), now + SESSION_TTL)
        self.store.execute(
            "INSERT INTO web_sessions (token_hash, msisdn, kind, via, csrf, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sha256(token), msisdn, kind, via, session.csrf, stamp(now), stamp(session.expires_at)),
        )
        return token, session

    def session(self, token: str, kind: str) -> Session | None:
        if not token or len(token) > 200:
            return None
        rows = self.store.query(
            "SELECT msisdn, via, csrf, expires_at FROM web_sessions WHERE token_hash = ? AND kind = ?",
            (sha256(token), kind),
        )
        if not rows or parse_stamp(rows[0][3]) <= self.clock.now():
            return None
        msisdn, via, csrf, expires_at = rows[0]
        return Session(msisdn, kind, via, csrf, parse_stamp(expires_at))

    def close_session(self, token: str) -> None:
        self.store.execute("DELETE FROM web_sessions WHERE token_hash = ?", (sha256(token),))

    # -- shops -----------------------------------------------------------------------------------

    def add_store(self, store_id: str) -> str:
        """A new key for a shop till (shown once; a second call replaces it)."""
        key = "sk_" + secrets.token_urlsafe(32)
        now = stamp(self.clock.now())
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM web_stores WHERE store_id = ?", (store_id,))
            tx.execute("INSERT INTO web_stores (store_id, key_hash, created_at) VALUES (?, ?, ?)",
                       (store_id, sha256(key), now))
        return key

    def remember_pos_debit(self, debit_id: str, store_id: str, msisdn: str) -> None:
        """Which store made a debit, so that only it can read or cancel it."""
        self.store.execute(
            "INSERT INTO web_pos_debits (debit_id, store_id, msisdn, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (debit_id) DO NOTHING",
            (debit_id, store_id, msisdn, stamp(self.clock.now())),
        )

    def pos_debit_owner(self, debit_id: str, store_id: str) -> str | None:
        """The member of a debit this store made, or None."""
        rows = self.store.query(
            "SELECT msisdn FROM web_pos_debits WHERE debit_id = ? AND store_id = ?", (debit_id, store_id)
        )
        return rows[0][0] if rows else None

    def store_for_key(self, key: str) -> str | None:
        if not key or len(key) > 200:
            return None
        rows = self.store.query("SELECT store_id FROM web_stores WHERE key_hash = ?", (sha256(key),))
        return rows[0][0] if rows else None


def check_password_strength(password: str) -> None:
    if not PASSWORD_LENGTH_MIN <= len(password) <= PASSWORD_LENGTH_MAX:
        raise WeakPassword(f"a password has {PASSWORD_LENGTH_MIN} to {PASSWORD_LENGTH_MAX} characters")
    if password.isdigit() or password.isalpha():
        raise WeakPassword("a password mixes letters with digits or signs")
