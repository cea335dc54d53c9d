"""The personal account's own tables: credentials, one-time codes, sessions,
shop keys, rate-limit hits and the SMS outbox.

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
    """CREATE TABLE IF NOT EXISTS web_sms_outbox (
        sms_id TEXT PRIMARY KEY,
        seq BIGINT NOT NULL,
        msisdn TEXT NOT NULL,
        text TEXT NOT NULL,
        created_at TEXT NOT NULL)""",
)


# Columns added since the tables were first created: a store of an earlier
# release gets them on start-up (its sessions keep working; NULL is "not yet").
ADDED_COLUMNS = (("web_sessions", "last_seen_at", "TEXT"),)


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
            for statement in DDL:
                tx.execute(statement)
            for table, column, kind in ADDED_COLUMNS:
                if self.db.is_postgres:
                    tx.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")
                elif column not in {row[1] for row in tx.query(f"PRAGMA table_info({table})")}:
                    tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

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
