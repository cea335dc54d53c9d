"""A thin connection wrapper so that the read models run on SQLite and on
PostgreSQL with the same SQL (written with `?` placeholders)."""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence


class Database:
    """`url` is an `accrual.settings.DatabaseUrl` (scheme, path or host...)."""

    def __init__(self, url: Any, read_only: bool = False):
        """`read_only`: a connection that cannot write (SQLite opened
        read-only, a PostgreSQL session whose transactions are read-only), for
        readers that must never take a write lock."""
        self.url = url
        self.is_postgres = url.is_postgres
        self.read_only = read_only
        if url.is_postgres:
            self._conn: Any = self._connect_postgres()
        elif read_only:
            self._conn = sqlite3.connect(f"{url.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                                         timeout=30, check_same_thread=False)
            self._conn.execute("PRAGMA cache_size=-16384")
        else:
            self._conn = sqlite3.connect(str(url.path), isolation_level=None, timeout=30, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")  # see accrual.storage._use_normal_sync
            self._conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: the read models' hot pages
            self._conn.execute("PRAGMA wal_autocheckpoint=20000")  # as accrual.storage.WAL_AUTOCHECKPOINT_PAGES

    def _connect_postgres(self) -> Any:
        import psycopg

        url = self.url
        conn = psycopg.connect(
            host=url.host, port=url.port, user=url.user, password=url.password, dbname=url.dbname,
            autocommit=True, connect_timeout=10,
        )
        if self.read_only:
            conn.execute("SET default_transaction_read_only = on")
        return conn

    def _connection(self) -> Any:
        """The connection, opened again if the server closed it (a restart,
        a failover, `pg_terminate_backend`): the statement that met the
        closed connection failed, and its caller tries again (accrual/
        outage.py); this one gets a new session."""
        if self.is_postgres and self._conn.closed:
            self._conn = self._connect_postgres()
        return self._conn

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.is_postgres else statement

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        if self.is_postgres:
            # Rows go in with COPY (`Transaction.insert`); psycopg pipelines
            # the statements of an `executemany` by itself.
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cursor:
                yield Transaction(self, cursor)
        else:
            cursor = self._conn.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(self, cursor)
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[Callable[[str, Sequence[Any]], list[tuple]]]:
        """Queries that all see the store as of one moment and block no
        writer (a long read, such as `accrual verify`): PostgreSQL's
        REPEATABLE READ, SQLite's read transaction on its write-ahead log."""
        if self.is_postgres:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield Transaction(self, cursor).query
            return
        cursor = self._conn.cursor()
        cursor.execute("BEGIN")  # deferred: the first read takes the snapshot, no lock is taken
        try:
            yield Transaction(self, cursor).query
        finally:
            cursor.execute("ROLLBACK")

    @contextmanager
    def relaxed_durability(self) -> Iterator[None]:
        """Commits that do not wait for the write-ahead log to reach the disk
        (PostgreSQL's `synchronous_commit = off`; SQLite's WAL commits do
        not wait already): for rebuilding read models, which a crash only
        sends back to an earlier position."""
        if not self.is_postgres:
            yield
            return
        self._conn.execute("SET synchronous_commit = off")
        try:
            yield
        finally:
            self._conn.execute("RESET synchronous_commit")

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple]:
        cursor = self._connection().cursor()
        try:
            cursor.execute(self.sql(statement), params)
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def close(self) -> None:
        self._conn.close()


class Transaction:
    def __init__(self, db: Database, cursor: Any):
        self.db = db
        self.cursor = cursor

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        self.cursor.execute(self.db.sql(statement), params)

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.cursor.executemany(self.db.sql(statement), rows)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """New rows: one COPY on PostgreSQL (one statement per row cost the
        server more than the rows), one `executemany` on SQLite."""
        if not rows:
            return
        if self.db.is_postgres:
            with self.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(columns))
            self.cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple]:
        self.cursor.execute(self.db.sql(statement), params)
        return [tuple(row) for row in self.cursor.fetchall()]

