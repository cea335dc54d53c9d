"""One leader per store: the worker that holds the lock runs the jobs that
must run once (the outbound publisher, the daily tick). The lock belongs to
a session (a PostgreSQL connection, or an open file for SQLite), so it is
released when the process dies, however it dies, and another worker takes
over at its next try."""
from __future__ import annotations

import fcntl
import hashlib
from typing import Any


LOCK_APPLICATION_NAME = "accrual-leader-lock"  # the lock's session in pg_stat_activity


class Leadership:
    def __init__(self, database: Any, name: str):
        self.database = database
        self.name = name
        self._conn: Any = None
        self._file: Any = None
        self.held = False

    def try_acquire(self) -> bool:
        if self.held:
            return True
        if self.database.is_postgres:
            import psycopg

            if self._conn is None or self._conn.closed:
                d = self.database
                self._conn = psycopg.connect(host=d.host, port=d.port, user=d.user, password=d.password,
                                             dbname=d.dbname, autocommit=True, connect_timeout=10,
                                             application_name=LOCK_APPLICATION_NAME)
            key = int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:8], "big", signed=True)
            self.held = bool(self._conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0])
        else:
            path = f"{self.database.path}.{self.name}.lock"
            self._file = self._file or open(path, "a+")
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.held = True
            except BlockingIOError:
                self.held = False
        return self.held

    def release(self) -> None:
        self.held = False
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def still_held(self) -> bool:
        """False when the session holding the lock is gone (the database
        restarted, the connection broke): stop leading, try again later."""
        if not self.held or self._conn is None:
            return self.held
        try:
            self._conn.execute("SELECT 1")
            return True
        except Exception:
            self.release()
            return False
