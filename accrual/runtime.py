"""The engine as the command line (and later the worker and the web app)
use it: the application, its read models, their projector and the tick's
agenda, over the store that `ACCRUAL_DATABASE_URL` names."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from accrual import collector
from accrual.follower import Follower
from accrual.intake import read_batches
from accrual.rebuild import rebuild
from accrual.settings import Settings
from accrual.storage import open_application
from engine.messages import Inbound, Report
from projections.chain import LogChain, Verdict
from projections.db import Database
from projections.projector import Projector
from projections.queries import Agenda, ReadModels
from projections.tables import ORDER_BY, Names

Progress = Callable[[int, int], None]
FOLLOWER_MIN_BYTES = 4 * 1024 * 1024  # about 20,000 messages
logger = logging.getLogger(__name__)


@contextmanager
def schema_lock(database: Any) -> Iterator[None]:
    """Serialises creating the tables: PostgreSQL's CREATE TABLE IF NOT
    EXISTS is not safe against a concurrent one (two workers starting on a
    new database). SQLite serialises writers by itself."""
    if not database.is_postgres:
        yield
        return
    import psycopg

    with psycopg.connect(host=database.host, port=database.port, user=database.user, password=database.password,
                         dbname=database.dbname, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SELECT pg_advisory_lock(7274010)")  # "accrual schema"
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(7274010)")


@dataclass(frozen=True)
class Difference:
    table: str
    key: str
    live: Any
    rebuilt: Any


class Runtime:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        with schema_lock(self.settings.database):
            self.app = open_application(self.settings)
            self.db = Database(self.settings.database)
            self.projector = Projector(self.app, self.db)
            self.projector.create_tables()
        self.app.on_saved = self.projector.follow
        self.reads = ReadModels(self.db)
        self.agenda = Agenda(self.db, self.app.rules, self.projector.catch_up)
        collector.settle()

    def close(self) -> None:
        try:
            self.projector.flush()
        finally:
            self.db.close()
        self.app.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes ----------------------------------------------------------------

    def apply(
        self,
        batches: Iterable[Sequence[Inbound]],
        on_batch: Callable[[int], None] | None = None,
        *,
        follower: bool = False,
    ) -> Report:
        """Applies batches of inbound messages, each in one transaction, and
        returns when the read models show them. The read models follow each
        saved batch in this process, or, with `follower` (a large file), in
        a process of their own (accrual/follower.py) while this one applies."""
        report = Report()
        self.projector.catch_up()
        alongside = Follower(self.settings).start() if follower else None
        if alongside is not None:
            self.app.on_saved = None
        try:
            for batch in batches:
                report.add(self.app.process(batch))
                if on_batch is not None:
                    on_batch(len(batch))
        finally:
            if alongside is not None:
                self.app.on_saved = self.projector.follow
                if not alongside.finish():
                    logger.warning("the read models' follower failed; catching up in this process")
        self.projector.catch_up()  # what the follower left, or the batches followed here
        return report

    def ingest(
        self, path: Path, received_at: datetime, on_bytes: Callable[[int], None] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> Report:
        """`accrual ingest`: a JSON Lines file in batches of the configured
        size. A large file has its read models written by a follower process
        meanwhile (below `FOLLOWER_MIN_BYTES`, starting one costs more than
        it saves)."""
        batches = read_batches(path, self.settings.batch_size, received_at, on_bytes=on_bytes)
        return self.apply(batches, on_batch, follower=path.stat().st_size >= FOLLOWER_MIN_BYTES)

    def tick(self, as_of: date) -> Report:
        return self.app.tick(as_of, self.agenda, chunk_size=self.settings.batch_size)

    # -- rebuilding and auditing ----------------------------------------------------

    def replay(self, progress: Progress | None = None) -> int:
        """Drops the read models and rebuilds them from the event log."""
        return rebuild(self.settings, self.projector, progress)

    def audit(self, progress: Progress | None = None) -> list[Difference]:
        """Rebuilds every read model from zero into scratch tables and lists
        each row where the live read model differs."""
        self.projector.catch_up()
        scratch = Projector(self.app, self.db, Names("audit_"), chain=False)  # the chain is the log's
        try:
            rebuild(self.settings, scratch, progress)
            differences: list[Difference] = []
            for table, order in ORDER_BY.items():
                live = self._rows(getattr(self.projector.names, table), order)
                rebuilt = self._rows(getattr(scratch.names, table), order)
                differences.extend(_compare(table, live, rebuilt))
            return differences
        finally:
            scratch.drop_tables()

    def verify(self, expect: tuple[int, bytes] | None = None) -> Verdict:
        """`accrual verify`: the hash chain recomputed from the stored events
        against its checkpoints (and an auditor's head at a position). Reads
        only: events the read models have not followed yet are hashed for
        the current head but not checked."""
        return LogChain(self.db, self.app.recorder.events_table_name).verify(expect)

    def _rows(self, table: str, order: str) -> dict[str, tuple]:
        width = len(order.split(","))
        rows = self.db.query(f"SELECT {order}, * FROM {table} ORDER BY {order}")
        return {"/".join(str(v) for v in row[:width]): row[width:] for row in rows}


def _compare(table: str, live: dict[str, tuple], rebuilt: dict[str, tuple]) -> list[Difference]:
    differences = []
    for key in sorted(set(live) | set(rebuilt)):
        if live.get(key) != rebuilt.get(key):
            differences.append(Difference(table, key, live.get(key), rebuilt.get(key)))
    return differences
