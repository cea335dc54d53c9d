"""The loyalty team's staff: accounts, roles, signing in with a password and
a TOTP code, and their sessions (docs/console.md).

Staff are not members. Their accounts, sessions and tokens live in tables of
their own (`ops_staff`, `ops_sessions`), so a member's token is unknown to the
console and a staff token unknown to the member API. A staff session ends
after 30 minutes without a request (and 12 hours after sign-in at most); an
account created or reset by `accrual operators` must change its password
before it can do anything else.

What each role may do is one table, `PERMISSIONS`; every console route names
the permission it needs (web.api_ops, web.pages_ops), and the role table test
walks every route for every role.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2.exceptions import InvalidHashError, VerificationError

from web import totp
from web.auth import PASSWORDS, WeakPassword, check_password_strength, forgive, reserve_try, sha256
from web.clock import Clock
from web.limits import Bucket, Limit, Limits, TooManyRequests
from web.store import WebStore, parse_stamp, stamp

OPERATOR, SUPERVISOR, AUDITOR = "operator", "supervisor", "auditor"
ROLES = (OPERATOR, SUPERVISOR, AUDITOR)

# What each role may do. An operator looks members up and asks for
# adjustments; a supervisor also decides others' requests, redrives dead
# letters and reads the programme's figures and the audit log; an auditor
# reads everything and changes nothing.
PERMISSIONS: dict[str, frozenset[str]] = {
    OPERATOR: frozenset({"members.read", "adjustments.read", "adjustments.request"}),
    SUPERVISOR: frozenset({"members.read", "adjustments.read", "adjustments.request", "adjustments.decide",
                           "dead_letters.read", "dead_letters.redrive", "programme.read", "audit.read"}),
    AUDITOR: frozenset({"members.read", "adjustments.read", "dead_letters.read", "programme.read", "audit.read"}),
}

LOGIN_PATTERN = re.compile(r"^[a-z][a-z0-9._-]{2,31}$")
SESSION_TTL = timedelta(hours=12)
SESSION_IDLE = timedelta(minutes=30)
_SESSION_TOUCH = timedelta(minutes=1)  # last use written at most this often
INITIAL_PASSWORD_BYTES = 12  # 16 characters of base64url, shown once
# As for members (web.auth): per address and for the whole console, besides
# the per-login doubling wait of web.auth.reserve_try.
SIGN_INS_PER_ADDRESS = Limit(20, timedelta(minutes=10))
SIGN_INS_ALL = Limit(600, timedelta(minutes=1))
_STAND_IN_HASH = PASSWORDS.hash(secrets.token_urlsafe(16))


class StaffError(ValueError):
    """A staff account command that cannot be done; `reason` is machine-readable."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class SignInRefused(Exception):
    """Wrong login, password or code, or a disabled account: one answer for all."""


@dataclass(frozen=True)
class StaffMember:
    login: str
    role: str
    must_change_password: bool
    created_at: str
    disabled_at: str | None


@dataclass(frozen=True)
class NewCredentials:
    """What `accrual operators add|reset` prints once."""

    login: str
    role: str
    password: str
    totp_secret: str

    @property
    def totp_uri(self) -> str:
        return totp.provisioning_uri(self.totp_secret, self.login)


@dataclass(frozen=True)
class StaffSession:
    login: str
    role: str
    kind: str  # "api" (bearer token) or "page" (cookie)
    csrf: str
    key: str  # the SHA-256 of its token
    must_change_password: bool

    def may(self, permission: str) -> bool:
        return not self.must_change_password and permission in PERMISSIONS.get(self.role, frozenset())


def check_login(login: str) -> str:
    if not LOGIN_PATTERN.match(login):
        raise StaffError("invalid_login", "a login has 3 to 32 characters: a-z first, then a-z, 0-9, '.', '_', '-'")
    return login


def _spend_time(password: str) -> None:
    """An argon2 check that fails, as for a wrong password."""
    try:
        PASSWORDS.verify(_STAND_IN_HASH, password[:128])
    except (VerificationError, InvalidHashError):
        pass


def _failure_key(login: str) -> str:
    return f"staff:{login}"


class Staff:
    def __init__(self, store: WebStore, clock: Clock):
        self.store = store
        self.clock = clock
        self.limits = Limits(store, clock)

    # -- accounts (accrual operators) ----------------------------------------------------------

    def add(self, login: str, role: str) -> NewCredentials:
        check_login(login)
        if role not in ROLES:
            raise StaffError("invalid_role", f"a role is one of {', '.join(ROLES)}, not {role!r}")
        credentials = NewCredentials(login, role, secrets.token_urlsafe(INITIAL_PASSWORD_BYTES), totp.new_secret())
        with self.store.transaction() as tx:
            if tx.query("SELECT 1 FROM ops_staff WHERE login = ?", (login,)):
                raise StaffError("login_taken", f"{login} has an account already (`accrual operators reset` "
                                                "gives it new credentials)")
            tx.execute(
                "INSERT INTO ops_staff (login, role, password_hash, must_change_password, totp_secret, created_at) "
                "VALUES (?, ?, ?, 1, ?, ?)",
                (login, role, PASSWORDS.hash(credentials.password), credentials.totp_secret,
                 stamp(self.clock.now())),
            )
        return credentials

    def reset(self, login: str) -> NewCredentials:
        """A new initial password and a new TOTP secret (a lost password, a
        lost phone), to be changed at the next sign-in; sessions end, and a
        disabled account is enabled again."""
        member = self.get(check_login(login))
        if member is None:
            raise StaffError("unknown_login", f"no staff account {login}")
        credentials = NewCredentials(login, member.role, secrets.token_urlsafe(INITIAL_PASSWORD_BYTES),
                                     totp.new_secret())
        with self.store.transaction() as tx:
            tx.execute(
                "UPDATE ops_staff SET password_hash = ?, must_change_password = 1, totp_secret = ?, "
                "totp_last_step = NULL, disabled_at = NULL WHERE login = ?",
                (PASSWORDS.hash(credentials.password), credentials.totp_secret, login),
            )
            tx.execute("DELETE FROM ops_sessions WHERE login = ?", (login,))
        forgive(self.store, _failure_key(login))
        return credentials

    def disable(self, login: str) -> None:
        with self.store.transaction() as tx:
            tx.execute("UPDATE ops_staff SET disabled_at = ? WHERE login = ? AND disabled_at IS NULL",
                       (stamp(self.clock.now()), check_login(login)))
            changed = tx.cursor.rowcount
            tx.execute("DELETE FROM ops_sessions WHERE login = ?", (login,))
        if not changed and self.get(login) is None:
            raise StaffError("unknown_login", f"no staff account {login}")

    def get(self, login: str) -> StaffMember | None:
        rows = self.store.query(
            "SELECT login, role, must_change_password, created_at, disabled_at FROM ops_staff WHERE login = ?",
            (login,),
        )
        return StaffMember(rows[0][0], rows[0][1], bool(rows[0][2]), rows[0][3], rows[0][4]) if rows else None

    def all(self) -> list[StaffMember]:
        rows = self.store.query(
            "SELECT login, role, must_change_password, created_at, disabled_at FROM ops_staff ORDER BY login"
        )
        return [StaffMember(login, role, bool(must), created, disabled) for login, role, must, created, disabled in rows]

    # -- signing in ------------------------------------------------------------------------------

    def sign_in(self, login: str, password: str, code: str, client: str, kind: str) -> tuple[str, StaffSession]:
        """A new session if the login, the password and the TOTP code are
        right and the account is enabled; SignInRefused otherwise, whatever
        was wrong. TooManyRequests while the login waits after failures
        (counted before the slow password check, forgiven after a success),
        or the address or the console has used its tries. A code is good
        once: its step must be later than the last one this login used."""
        self.limits.take(
            Bucket(f"staff-sign-in:address:{client}", SIGN_INS_PER_ADDRESS),
            Bucket("staff-sign-in:all", SIGN_INS_ALL),
            client=client,
        )
        if not LOGIN_PATTERN.match(login):  # no such login can exist; the same work as a wrong password
            _spend_time(password)
            raise SignInRefused()
        reserve_try(self.store, self.clock.now(), _failure_key(login))
        rows = self.store.query(
            "SELECT password_hash, totp_secret, disabled_at FROM ops_staff WHERE login = ?", (login,)
        )
        stored, secret, disabled = rows[0] if rows else (None, None, None)
        try:
            password_ok = PASSWORDS.verify(stored or _STAND_IN_HASH, password[:128]) and stored is not None
        except (VerificationError, InvalidHashError):
            password_ok = False
        if not password_ok or disabled is not None or secret is None:
            raise SignInRefused()
        step = totp.matching_step(secret, code, self.clock.now())
        if step is None or not self._spend_step(login, step):
            raise SignInRefused()
        forgive(self.store, _failure_key(login))
        return self._open_session(login, kind)

    def _spend_step(self, login: str, step: int) -> bool:
        """Records that `login` used the code of `step`; False if it used
        this step or a later one already (a replayed or older code)."""
        with self.store.transaction() as tx:
            tx.execute(
                "UPDATE ops_staff SET totp_last_step = ? WHERE login = ? "
                "AND (totp_last_step IS NULL OR totp_last_step < ?)",
                (step, login, step),
            )
            return tx.cursor.rowcount == 1

    def _open_session(self, login: str, kind: str) -> tuple[str, StaffSession]:
        token = secrets.token_urlsafe(32)
        now = self.clock.now()
        key, csrf = sha256(token), secrets.token_urlsafe(24)
        self.store.execute(
            "INSERT INTO ops_sessions (token_hash, login, kind, csrf, created_at, expires_at, last_seen_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, login, kind, csrf, stamp(now), stamp(now + SESSION_TTL), stamp(now)),
        )
        session = self.session(token, kind)
        assert session is not None
        return token, session

    def session(self, token: str, kind: str) -> StaffSession | None:
        """The live session of `token`: its account enabled, not past its 12
        hours, not idle for 30 minutes. The role and whether the password
        must change are read with it, so a change applies at once."""
        if not token or len(token) > 200:
            return None
        key = sha256(token)
        rows = self.store.query(
            "SELECT s.login, s.csrf, s.expires_at, s.last_seen_at, st.role, st.must_change_password, st.disabled_at "
            "FROM ops_sessions s JOIN ops_staff st ON st.login = s.login WHERE s.token_hash = ? AND s.kind = ?",
            (key, kind),
        )
        if not rows:
            return None
        login, csrf, expires_at, last_seen_at, role, must_change, disabled = rows[0]
        now = self.clock.now()
        last_seen = parse_stamp(last_seen_at)
        if disabled is not None or parse_stamp(expires_at) <= now or last_seen + SESSION_IDLE <= now:
            self.store.execute("DELETE FROM ops_sessions WHERE token_hash = ?", (key,))
            return None
        if now - last_seen >= _SESSION_TOUCH:
            self.store.execute("UPDATE ops_sessions SET last_seen_at = ? WHERE token_hash = ?", (stamp(now), key))
        return StaffSession(login, role, kind, csrf, key, bool(must_change))

    def sign_out(self, session: StaffSession) -> None:
        self.store.execute("DELETE FROM ops_sessions WHERE token_hash = ?", (session.key,))

    def change_password(self, session: StaffSession, current: str, new: str, client: str) -> None:
        """The signed-in person's own password, checked against the current
        one (counted like a sign-in failure when wrong). Other sessions of
        the login end; this one stays, now free to do what its role may."""
        reserve_try(self.store, self.clock.now(), _failure_key(session.login))
        rows = self.store.query("SELECT password_hash FROM ops_staff WHERE login = ?", (session.login,))
        try:
            ok = bool(rows) and PASSWORDS.verify(rows[0][0], current[:128])
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok:
            raise SignInRefused()
        forgive(self.store, _failure_key(session.login))
        check_password_strength(new)
        if session.login in new.casefold():
            raise WeakPassword("a password does not contain the login")
        if secrets.compare_digest(current.encode(), new.encode()):
            raise WeakPassword("the new password is the current one; choose another")
        with self.store.transaction() as tx:
            tx.execute("UPDATE ops_staff SET password_hash = ?, must_change_password = 0 WHERE login = ?",
                       (PASSWORDS.hash(new), session.login))
            tx.execute("DELETE FROM ops_sessions WHERE login = ? AND token_hash <> ?", (session.login, session.key))


__all__ = ["AUDITOR", "OPERATOR", "PERMISSIONS", "ROLES", "SUPERVISOR", "NewCredentials", "SignInRefused", "Staff",
           "StaffError", "StaffMember", "StaffSession", "TooManyRequests", "WeakPassword", "check_login"]
