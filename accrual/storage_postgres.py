"""The PostgreSQL recorder with the inbox (imported only when the store is
PostgreSQL, so the embedded mode does not load psycopg).

A unit of work's events and inbox rows go in with binary COPY rather than
the library's INSERT of an unnest'ed composite array: the rows cross the
wire in PostgreSQL's own format and the server neither parses nor unpacks
an array, which is most of a batch's time under the events table's lock.
"""
from __future__ import annotations

import time
from typing import Any, Sequence
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from accrual.metrics import STORE_COMMIT_SECONDS
from accrual.storage import INBOX_DDL, Records, by_originator, records

_INBOX_TYPES = ["text"] * 4  # an inbox row: topic, message_key, fingerprint, outcome
AGGREGATES_PAGE = 500  # a tick's step of accounts in one page


class PostgresInboxRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self.sql_create_statements.append(SQL(INBOX_DDL))
        table = Identifier(self.datastore.schema, self.events_table_name)
        self.copy_events_statement = SQL(
            "COPY {table} (notification_id, originator_id, originator_version, topic, state) FROM STDIN (FORMAT BINARY)"
        ).format(table=table)
        self.event_types = ["int8", self.datastore.originator_id_type, "int8", "text", "bytea"]
        self.copy_inbox_statement = SQL(
            "COPY inbox (topic, message_key, fingerprint, outcome) FROM STDIN (FORMAT BINARY)"
        )
        self.notification_sequence: str | None = None  # found at the first insert (the table may not exist yet)

    # -- writing a unit of work --------------------------------------------------------

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[Any], **kwargs: Any) -> Sequence[int] | None:
        """The events and the inbox rows (kwarg `inbox`) in one transaction;
        returns the events' notification ids, in order (None without events,
        as the library). A second writer of the same aggregate version or
        inbox key gets an IntegrityError at once: COPY runs outside
        psycopg's pipeline mode, so the failing statement is the last one sent.

        Timed from the lock to the commit (see docs/operations.md, "Growing
        from one machine to many")."""
        inbox = kwargs.get("inbox") or ()
        if not stored_events and not inbox:
            return None
        notification_ids = None
        with self.datastore.get_connection() as conn:
            started = time.perf_counter()
            try:
                with conn.transaction(), conn.cursor() as curs:
                    if stored_events:
                        notification_ids = self._copy_events(curs, stored_events)
                    if inbox:
                        # After the events and their lock: a writer racing
                        # another for the same key fails on the committed
                        # row rather than waiting on an uncommitted one.
                        self._copy_inbox(curs, inbox)
            finally:
                STORE_COMMIT_SECONDS.observe(time.perf_counter() - started)
        return notification_ids

    def _copy_events(self, curs: Any, stored_events: Sequence[Any]) -> list[int]:
        # The library's EXCLUSIVE lock on the events table serialises the
        # writers from here to the commit, so notification ids commit in the
        # order they are taken (the projector and the publisher follow the
        # log by id). COPY cannot return them, so they are taken first from
        # the table's sequence and written with the rows.
        self._lock_table(curs)
        self._notify_channel(curs)
        notification_ids = self._next_notification_ids(curs, len(stored_events))
        with curs.copy(self.copy_events_statement) as copy:
            copy.set_types(self.event_types)
            for notification_id, s in zip(notification_ids, stored_events, strict=True):
                copy.write_row((notification_id, s.originator_id, s.originator_version, s.topic, s.state))
        return notification_ids

    def _next_notification_ids(self, curs: Any, count: int) -> list[int]:
        """`count` consecutive ids from the events table's sequence, in one
        step rather than a nextval per row: under the table's lock no other
        writer draws from it (and a rollback leaves a gap, as the library's
        INSERT does)."""
        if self.notification_sequence is None:
            curs.execute(
                "SELECT pg_get_serial_sequence(%s, 'notification_id') AS name",
                (Identifier(self.datastore.schema, self.events_table_name).as_string(curs.connection),),
            )
            self.notification_sequence = curs.fetchone()["name"]
        curs.execute("SELECT setval(%s::regclass, nextval(%s::regclass) + %s - 1) AS last",
                     (self.notification_sequence, self.notification_sequence, count))
        last = curs.fetchone()["last"]
        return list(range(last - count + 1, last + 1))

    def _copy_inbox(self, curs: Any, rows: Sequence[tuple[str, str, str, str]]) -> None:
        with curs.copy(self.copy_inbox_statement) as copy:
            copy.set_types(_INBOX_TYPES)
            for row in rows:
                copy.write_row(row)

    # -- reading ------------------------------------------------------------------------

    def select_snapshots_and_events(
        self, originator_ids: Sequence[UUID], snapshots: Any = None, page: int = AGGREGATES_PAGE
    ) -> Records:
        """For each aggregate that exists, its latest snapshot (from the
        recorder `snapshots`, if any) and its events after it: two queries a
        page, so that a tick does not load its accounts one by one."""
        found: Records = {}
        for start in range(0, len(originator_ids), page):
            ids = list(originator_ids[start : start + page])
            latest = self._latest_snapshots(snapshots, ids) if snapshots is not None else {}
            events = self._events_after(ids, [latest[i].originator_version if i in latest else 0 for i in ids])
            found.update(records(ids, latest, events))
        return found

    # Rows name their aggregate by its position in the page (WITH ORDINALITY)
    # rather than by its uuid: no uuid is parsed per row, and rows group and
    # sort on small integers.

    @staticmethod
    def _latest_snapshots(snapshots: Any, ids: list[UUID]) -> dict[UUID, StoredEvent]:
        statement = SQL(
            "SELECT k.n, s.originator_version, s.topic, s.state FROM unnest(%s::uuid[]) WITH ORDINALITY AS k(id, n) "
            "CROSS JOIN LATERAL (SELECT originator_version, topic, state FROM {table} "
            "WHERE originator_id = k.id ORDER BY originator_version DESC LIMIT 1) AS s"
        ).format(table=Identifier(snapshots.datastore.schema, snapshots.events_table_name))
        with snapshots.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            # Binary results: a state crosses the wire as stored, not as hex.
            curs.execute(statement, (ids,), binary=True)
            return {ids[n - 1]: StoredEvent(ids[n - 1], version, topic, state)
                    for n, version, topic, state in curs.fetchall()}

    def _events_after(self, ids: list[UUID], versions: list[int]) -> dict[UUID, list[StoredEvent]]:
        statement = SQL(
            "SELECT k.n, e.originator_version, e.topic, e.state "
            "FROM unnest(%s::uuid[], %s::bigint[]) WITH ORDINALITY AS k(id, after, n) "
            "JOIN {table} e ON e.originator_id = k.id AND e.originator_version > k.after"
        ).format(table=Identifier(self.datastore.schema, self.events_table_name))
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(statement, (ids, versions), binary=True)
            return by_originator(curs.fetchall(), dict(enumerate(ids, start=1)))

    def select_inbox(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        found: dict[tuple[str, str], str] = {}
        unique = list(dict.fromkeys(keys))
        if not unique:
            return found
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                "SELECT i.topic, i.message_key, i.fingerprint FROM inbox i "
                "JOIN unnest(%s::text[], %s::text[]) AS k(topic, message_key) "
                "ON i.topic = k.topic AND i.message_key = k.message_key",
                ([t for t, _ in unique], [k for _, k in unique]),
            )
            for row in curs.fetchall():
                found[(row["topic"], row["message_key"])] = row["fingerprint"]
        return found

    def select_existing(self, originator_ids: Sequence[Any]) -> set[Any]:
        if not originator_ids:
            return set()
        statement = SQL("SELECT originator_id FROM {table} WHERE originator_version = 1 AND originator_id = ANY(%s)")
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement.format(table=Identifier(self.events_table_name)), (list(originator_ids),))
            return {row["originator_id"] for row in curs.fetchall()}
