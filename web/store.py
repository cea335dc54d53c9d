"""The personal account's own tables: credentials, one-time codes, sessions,
shop keys, rate-limit hits and the SMS outbox; and the console's staff
accounts, their sessions, adjustment requests and the audit log.

This is access-control state, not programme data: it is not event-sourced,
no balance depends on it, and `accrual replay` leaves it alone. It lives in
the same database as the event log (SQLite or PostgreSQL, through
`projections.db.Database`, `?` placeholders). Every secret in it is stored
hashed (argon2id for passwords, SHA-256 for random tokens and shop keys, a
salted SHA-256 for the short-lived codes); the SMS outbox is the exception,
as it holds the text that would have been sent (development only).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

from projections.db import Database, Transaction

DDL = (
    """CREATE TABLE IF NOT EXISTS web_credentials (
        msisdn TEXT PRIMARY KEY,
        password_hash TEXT,
        password_set_at TEXT,
        terms_version TEXT,
        terms_accepted_at TEXT)""",
    """CREATE TABLE IF NOT EXISTS web_otps (
        otp_id TEXT PRIMARY KEY,
        msisdn TEXT NOT NULL,
        purpose TEXT NOT NULL,
        salt TEXT NOT NULL,
        code_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        spent_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS web_otps_by_msisdn ON web_otps (msisdn, purpose, created_at)",
    """CREATE TABLE IF NOT EXISTS web_sessions (
        token_hash TEXT PRIMARY KEY,
        msisdn TEXT NOT NULL,
        kind TEXT NOT NULL,
        via TEXT NOT NULL,
        csrf TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        last_seen_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS web_sessions_by_msisdn ON web_sessions (msisdn)",
    """CREATE TABLE IF NOT EXISTS web_stores (
        store_id TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS web_pos_debits (
        debit_id TEXT PRIMARY KEY,
        store_id TEXT NOT NULL,
        msisdn TEXT NOT NULL,
        created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS web_rate_hits (
        bucket TEXT NOT NULL,
        at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS web_rate_hits_by_bucket ON web_rate_hits (bucket, at)",
    """CREATE TABLE IF NOT EXISTS web_login_failures (
        msisdn TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        last_at TEXT NOT NULL)""",
    # The loyalty team's console (web.staff, web.console, docs/console.md).
    """CREATE TABLE IF NOT EXISTS ops_staff (
        login TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        must_change_password INTEGER NOT NULL,
        totp_secret TEXT NOT NULL,
        totp_last_step BIGINT,
        created_at TEXT NOT NULL,
        disabled_at TEXT)""",
    """CREATE TABLE IF NOT EXISTS ops_sessions (
        token_hash TEXT PRIMARY KEY,
        login TEXT NOT NULL,
        kind TEXT NOT NULL,
        csrf TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        last_seen_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS ops_sessions_by_login ON ops_sessions (login)",
    """CREATE TABLE IF NOT EXISTS ops_adjustments (
        adjustment_id TEXT PRIMARY KEY,
        msisdn TEXT NOT NULL,
        points BIGINT NOT NULL,
        reason TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        requested_at TEXT NOT NULL,
        status TEXT NOT NULL,
        decided_by TEXT,
        decided_at TEXT,
        refusal TEXT,
        balance_after BIGINT,
        UNIQUE (requested_by, idempotency_key))""",
    "CREATE INDEX IF NOT EXISTS ops_adjustments_by_status ON ops_adjustments (status, requested_at)",
    """CREATE TABLE IF NOT EXISTS ops_audit (
        audit_id TEXT PRIMARY KEY,
        at TEXT NOT NULL,
        login TEXT NOT NULL,
        role TEXT NOT NULL,
        address TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS ops_audit_by_at ON ops_audit (at)",
    """CREATE TABLE IF NOT EXISTS web_notification_preferences (
        msisdn TEXT PRIMARY KEY,
        off TEXT NOT NULL,
        version BIGINT NOT NULL,
        updated_at TEXT NOT NULL,
        published_version BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS web_sms_outbox (
        sms_id TEXT PRIMARY KEY,
        seq BIGINT NOT NULL,
        msisdn TEXT NOT NULL,
        text TEXT NOT NULL,
        created_at TEXT NOT NULL)""",
)


# Columns added since the tables were first created: a store of an earlier
# release gets them on start-up (its sessions keep working; NULL is "not yet").
ADDED_COLUMNS = (
    ("web_sessions", "last_seen_at", "TEXT"),
    ("web_sms_outbox", "idempotency_key", "TEXT"),  # the notifier's keys (docs/notifications.md); NULL: a code
)
# Indexes on added columns: made after the columns exist. Both engines let a
# UNIQUE index hold any number of NULLs, so keyless messages are unaffected.
ADDED_INDEXES = (
    "CREATE UNIQUE INDEX IF NOT EXISTS web_sms_outbox_by_key ON web_sms_outbox (idempotency_key)",
)


def stamp(moment: datetime) -> str:
    """One text form for every stored time (UTC, microseconds), so that
    comparisons in SQL are comparisons of times."""
    assert moment.tzinfo is not None, "times are timezone-aware"
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def parse_stamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


class WebStore:
    """The tables above on a connection of their own. One connection serves
    the web process's threads, one statement or transaction at a time."""

    def __init__(self, url: Any):
        self.db = Database(url)
        self._lock = threading.RLock()

    def close(self) -> None:
        self.db.close()

    def create_tables(self) -> None:
        with self.transaction() as tx:
            if self.db.is_postgres:  # web processes starting together: one creates, the others wait and see
                tx.execute("SELECT pg_advisory_xact_lock(hashtext('accrual web tables'))")
            for statement in DDL:
                tx.execute(statement)
            for table, column, kind in ADDED_COLUMNS:
                if self.db.is_postgres:
                    tx.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")
                elif column not in {row[1] for row in tx.query(f"PRAGMA table_info({table})")}:
                    tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            for statement in ADDED_INDEXES:
                tx.execute(statement)
            self._append_only(tx)

    def _append_only(self, tx: Transaction) -> None:
        """The staff audit log refuses UPDATE and DELETE from the
        application's role: a trigger on each engine (docs/console.md)."""
        if self.db.is_postgres:
            if tx.query("SELECT 1 FROM pg_trigger WHERE tgname = 'ops_audit_append_only'"):
                return
            tx.execute(
                "CREATE OR REPLACE FUNCTION ops_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION 'ops_audit is append-only'; END $$"
            )
            tx.execute("CREATE TRIGGER ops_audit_append_only BEFORE UPDATE OR DELETE ON ops_audit "
                       "FOR EACH ROW EXECUTE FUNCTION ops_audit_append_only()")
        else:
            for verb in ("UPDATE", "DELETE"):
                tx.execute(f"CREATE TRIGGER IF NOT EXISTS ops_audit_no_{verb.lower()} BEFORE {verb} ON ops_audit "
                           "BEGIN SELECT RAISE(ABORT, 'ops_audit is append-only'); END")

    def query(self, statement: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self.db.query(statement, params)

    def execute(self, statement: str, params: tuple = ()) -> int:
        """One statement in its own transaction; returns the rows it changed."""
        with self.transaction() as tx:
            tx.execute(statement, params)
            return tx.cursor.rowcount

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._lock, self.db.transaction() as tx:
            yield tx
