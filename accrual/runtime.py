"""The engine as the command line (and later the worker and the web app)
use it: the application, its read models, their projector and the tick's
agenda, over the store that `ACCRUAL_DATABASE_URL` names."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any, Callable, Iterable, Iterator, Sequence

from accrual import collector
from accrual.settings import Settings
from accrual.storage import open_application
from engine.messages import Inbound, Report
from projections.db import Database
from projections.projector import Projector
from projections.queries import Agenda, ReadModels
from projections.tables import ORDER_BY, Names

Progress = Callable[[int, int], None]


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

    def apply(self, batches: Iterable[Sequence[Inbound]], on_batch: Callable[[int], None] | None = None) -> Report:
        """Applies batches of inbound messages, each in one transaction; the
        read models follow each saved batch."""
        report = Report()
        self.projector.catch_up()
        for batch in batches:
            report.add(self.app.process(batch))  # the projector follows each saved batch
            if on_batch is not None:
                on_batch(len(batch))
        self.projector.flush()
        return report

    def tick(self, as_of: date) -> Report:
        return self.app.tick(as_of, self.agenda, chunk_size=self.settings.batch_size)

    # -- rebuilding and auditing ----------------------------------------------------

    def replay(self, progress: Progress | None = None) -> int:
        """Drops the read models and rebuilds them from the event log."""
        self.projector.drop_tables()
        self.projector.create_tables()
        return self.projector.catch_up(progress)

    def audit(self, progress: Progress | None = None) -> list[Difference]:
        """Rebuilds every read model from zero into scratch tables and lists
        each row where the live read model differs."""
        self.projector.catch_up()
        scratch = Projector(self.app, self.db, Names("audit_"))
        scratch.drop_tables()
        scratch.create_tables()
        try:
            scratch.catch_up(progress)
            differences: list[Difference] = []
            for table, order in ORDER_BY.items():
                live = self._rows(getattr(self.projector.names, table), order)
                rebuilt = self._rows(getattr(scratch.names, table), order)
                differences.extend(_compare(table, live, rebuilt))
            return differences
        finally:
            scratch.drop_tables()

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
