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
from functools import lru_cache
from importlib import resources
from typing import Any

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from web.clock import Clock
from web.limits import Bucket, Limit, Limits, TooManyRequests
from web.sms import SmsGateway
from web.store import WebStore, parse_stamp, stamp

__all__ = ["Auth", "Session", "TooManyRequests", "WeakPassword", "check_password_strength"]

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1 (minimum).
PASSWORDS = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16, type=Type.ID)
PASSWORD_LENGTH_MIN, PASSWORD_LENGTH_MAX = 8, 128

PURPOSES = ("login", "password", "confirm")  # sign in; set, change or restore the password; confirm a spend
CODE_DIGITS = 6
CODE_TTL = timedelta(minutes=5)
CODE_TRIES_MAX = 5
# Codes sent: per number and purpose (so that strangers asking for login codes
# cannot use up a member's password restore or spend confirmations), per
# client address, and per address a day (one address cannot spend the SMS of
# hundreds of numbers). Refused requests are counted apart (web.limits).
SENDS_PER_NUMBER = Limit(3, timedelta(minutes=10))
SENDS_PER_NUMBER_DAY = Limit(10, timedelta(days=1))
SENDS_PER_ADDRESS = Limit(20, timedelta(minutes=10))
SENDS_PER_ADDRESS_DAY = Limit(50, timedelta(days=1))
# Password checks: per number, 3 free failures, then each failure doubles the
# wait (1 s, 2 s, 4 s … up to 15 minutes); per client address (password
# spraying: one common password tried on many numbers); and for the whole
# service, a ceiling that also bounds the CPU spent on argon2.
LOGIN_FREE_FAILURES = 3
LOGIN_WAIT_MAX = timedelta(minutes=15)
_LOGIN_WAIT_DOUBLINGS_MAX = 10  # 2**10 s > 15 minutes; a higher count waits the same
_LOGIN_FAILURES_KEPT_MAX = 1_000
PASSWORD_TRIES_PER_ADDRESS = Limit(20, timedelta(minutes=10))
PASSWORD_TRIES_ALL = Limit(1_200, timedelta(minutes=1))
TRANSFER_OFFERS_PER_MEMBER = Limit(20, timedelta(hours=1))
SESSION_TTL = timedelta(hours=12)  # at most, from sign-in
SESSION_IDLE = timedelta(hours=1)  # without a request, a session ends
_SESSION_TOUCH = timedelta(minutes=1)  # last use is written at most this often (reads stay reads)

SMS_TEXT = {
    "login": "МТС Бонус: код для входа {code}. Никому не сообщайте его.",
    "password": "МТС Бонус: код для смены пароля {code}. Никому не сообщайте его.",
    "confirm": "МТС Бонус: код подтверждения операции {code}. Никому не сообщайте его.",
}

# A stand-in hash, verified when a number has no password, so that a known
# and an unknown number take the same time to refuse.
_STAND_IN_HASH = PASSWORDS.hash(secrets.token_urlsafe(16))


class WeakPassword(ValueError):
    pass


@dataclass(frozen=True)
class Session:
    msisdn: str
    kind: str  # "api" (bearer token) or "page" (cookie)
    via: str  # "password", "code" or "network" (X-MSISDN: must confirm spending with a code)
    csrf: str
    expires_at: datetime
    key: str = ""  # the SHA-256 of its token: which session this is (ending the others)

    @property
    def must_confirm(self) -> bool:
        return self.via == "network"


def login_wait(failures: int) -> timedelta:
    """How long a number waits after `failures` failed passwords in a row:
    nothing for the first free ones, then 1 s doubling up to 15 minutes
    (the exponent is capped first: 2 ** 60 seconds is no timedelta)."""
    if failures < LOGIN_FREE_FAILURES:
        return timedelta(0)
    doublings = min(failures - LOGIN_FREE_FAILURES, _LOGIN_WAIT_DOUBLINGS_MAX)
    return min(timedelta(seconds=2**doublings), LOGIN_WAIT_MAX)


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
        self.limits = Limits(store, clock)

    # -- one-time codes ------------------------------------------------------------------

    def send_code(self, msisdn: str, purpose: str, client: str) -> None:
        """A new 6-digit code for `purpose`, by SMS; earlier codes of the same
        number and purpose stop working. `client` is the caller's address key
        (web.limits.client_key)."""
        assert purpose in PURPOSES
        self.limits.take(
            Bucket(f"sms:{purpose}:{msisdn}", SENDS_PER_NUMBER),
            Bucket(f"sms-day:{purpose}:{msisdn}", SENDS_PER_NUMBER_DAY),
            Bucket(f"sms:address:{client}", SENDS_PER_ADDRESS),
            Bucket(f"sms-day:address:{client}", SENDS_PER_ADDRESS_DAY),
            client=client,
        )
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

    def check_password(self, msisdn: str, password: str, client: str) -> bool:
        """True if the number has this password. Refused (TooManyRequests)
        while the number waits after its failures (known number or not), or
        the client address or the service has used its tries.

        The try is counted as a failure before the (slow) argon2 check and
        forgiven after a success: parallel guesses for one number cannot all
        pass the wait, since each one's failure is already counted."""
        self.limits.take(
            Bucket(f"password:address:{client}", PASSWORD_TRIES_PER_ADDRESS),
            Bucket("password:all", PASSWORD_TRIES_ALL),
            client=client,
        )
        self._reserve_try(msisdn)
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
        return ok

    def _reserve_try(self, msisdn: str) -> None:
        reserve_try(self.store, self.clock.now(), msisdn)

    def set_password(self, msisdn: str, password: str, keep: Session | None = None) -> None:
        """Sets the number's password and ends its sessions, all but `keep`
        (the session that changed it; none when a lost password is restored)."""
        check_password_strength(password, msisdn)
        self._store_hash(msisdn, PASSWORDS.hash(password))
        self.end_sessions(msisdn, keep)

    def _store_hash(self, msisdn: str, hashed: str) -> None:
        now = stamp(self.clock.now())
        with self.store.transaction() as tx:
            tx.execute(
                "INSERT INTO web_credentials (msisdn, password_hash, password_set_at) VALUES (?, ?, ?) "
                "ON CONFLICT (msisdn) DO UPDATE SET password_hash = ?, password_set_at = ?",
                (msisdn, hashed, now, hashed, now),
            )
            tx.execute("DELETE FROM web_login_failures WHERE msisdn = ?", (msisdn,))

    def credentials(self, msisdn: str, db: Any = None) -> tuple[bool, tuple[str, str] | None]:
        """Whether the number has a password, and the agreement it accepted
        (version, when), in one query, for the pages and the API that show
        both; on `db` (a read-only connection) if given."""
        rows = (db or self.store).query(
            "SELECT password_hash, terms_version, terms_accepted_at FROM web_credentials WHERE msisdn = ?", (msisdn,)
        )
        if not rows:
            return False, None
        password_hash, version, accepted_at = rows[0]
        return bool(password_hash), ((version, accepted_at) if version else None)

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
        session = Session(msisdn, kind, via, secrets.token_urlsafe(24), now + SESSION_TTL, sha256(token))
        self.store.execute(
            "INSERT INTO web_sessions (token_hash, msisdn, kind, via, csrf, created_at, expires_at, last_seen_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (session.key, msisdn, kind, via, session.csrf, stamp(now), stamp(session.expires_at), stamp(now)),
        )
        return token, session

    @staticmethod
    def _session_row(token: str, kind: str, db: Any) -> tuple[str, tuple] | None:
        """The stored session of `token` on `db`: its key (the token's
        SHA-256) and (msisdn, via, csrf, expires_at, last use), or None."""
        if not token or len(token) > 200:
            return None
        key = sha256(token)
        rows = db.query(
            "SELECT msisdn, via, csrf, expires_at, COALESCE(last_seen_at, created_at) FROM web_sessions "
            "WHERE token_hash = ? AND kind = ?",
            (key, kind),
        )
        return (key, rows[0]) if rows else None

    def peek_session(self, token: str, kind: str, db: Any) -> Session | None:
        """The live session of `token` read on `db` (a read-only connection)
        when nothing needs writing: None if there is no such session, if it
        has ended (`session` deletes it) or if its last use is due to be
        written; the caller then asks `session`."""
        found = self._session_row(token, kind, db)
        if found is None:
            return None
        key, (msisdn, via, csrf, expires_at, last_seen_at) = found
        now = self.clock.now()
        if parse_stamp(expires_at) <= now or now - parse_stamp(last_seen_at) >= _SESSION_TOUCH:
            return None
        return Session(msisdn, kind, via, csrf, parse_stamp(expires_at), key)

    def session(self, token: str, kind: str) -> Session | None:
        """The live session of `token`: not past its 12 hours, not idle for
        an hour. Its last use is written at most once a minute."""
        found = self._session_row(token, kind, self.store)
        if found is None:
            return None
        key, (msisdn, via, csrf, expires_at, last_seen_at) = found
        now = self.clock.now()
        last_seen = parse_stamp(last_seen_at)
        if parse_stamp(expires_at) <= now or last_seen + SESSION_IDLE <= now:
            self.store.execute("DELETE FROM web_sessions WHERE token_hash = ?", (key,))
            return None
        if now - last_seen >= _SESSION_TOUCH:
            self.store.execute("UPDATE web_sessions SET last_seen_at = ? WHERE token_hash = ?", (stamp(now), key))
        return Session(msisdn, kind, via, csrf, parse_stamp(expires_at), key)

    def close_session(self, token: str) -> None:
        self.store.execute("DELETE FROM web_sessions WHERE token_hash = ?", (sha256(token),))

    def end_sessions(self, msisdn: str, keep: Session | None = None) -> int:
        """Signs the number out everywhere (API tokens and pages), except the
        session `keep`; returns how many sessions ended."""
        return self.store.execute(
            "DELETE FROM web_sessions WHERE msisdn = ? AND token_hash <> ?", (msisdn, keep.key if keep else "")
        )

    def take_transfer_offer(self, msisdn: str) -> None:
        """Counts a transfer offer of the member (TooManyRequests beyond 20 an
        hour): offers name other numbers, and each answer says something."""
        self.limits.take(Bucket(f"transfer:{msisdn}", TRANSFER_OFFERS_PER_MEMBER))

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


def reserve_try(store: WebStore, now: datetime, key: str) -> None:
    """Counts a failed password of `key` (a number, or "staff:<login>") now,
    or raises TooManyRequests if it is still waiting after its earlier
    failures. One transaction (the row locked on PostgreSQL), so two tries
    cannot both pass; a success deletes the row (`forgive`)."""
    with store.transaction() as tx:
        if store.db.is_postgres:
            tx.execute("INSERT INTO web_login_failures (msisdn, failures, last_at) VALUES (?, 0, ?) "
                       "ON CONFLICT (msisdn) DO NOTHING", (key, stamp(now)))
            rows = tx.query("SELECT failures, last_at FROM web_login_failures WHERE msisdn = ? FOR UPDATE", (key,))
        else:  # BEGIN IMMEDIATE already holds the write lock
            rows = tx.query("SELECT failures, last_at FROM web_login_failures WHERE msisdn = ?", (key,))
        failures = rows[0][0] if rows else 0
        if failures >= LOGIN_FREE_FAILURES:
            left = parse_stamp(rows[0][1]) + login_wait(failures) - now
            if left > timedelta(0):
                raise TooManyRequests(math.ceil(left.total_seconds()))
        tx.execute(
            "INSERT INTO web_login_failures (msisdn, failures, last_at) VALUES (?, ?, ?) "
            "ON CONFLICT (msisdn) DO UPDATE SET failures = ?, last_at = ?",
            (key, 1, stamp(now), min(failures + 1, _LOGIN_FAILURES_KEPT_MAX), stamp(now)),
        )


def forgive(store: WebStore, key: str) -> None:
    store.execute("DELETE FROM web_login_failures WHERE msisdn = ?", (key,))


def check_password_strength(password: str, msisdn: str = "") -> None:
    """ASVS 5.0 V6.2: 8 to 128 characters of any kind, no composition rules;
    not one of the common passwords of leaks, nor built on the number."""
    if not PASSWORD_LENGTH_MIN <= len(password) <= PASSWORD_LENGTH_MAX:
        raise WeakPassword(f"a password has {PASSWORD_LENGTH_MIN} to {PASSWORD_LENGTH_MAX} characters")
    if password.casefold() in common_passwords():
        raise WeakPassword("this password is one of the most common ones; choose another")
    if msisdn and msisdn[1:] in password:
        raise WeakPassword("a password does not contain the phone number")


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """web/data/common_passwords.txt, read once."""
    text = (resources.files("web.data") / "common_passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().casefold() for line in text.splitlines() if line.strip() and not line.startswith("#"))
