"""The PostgreSQL recorder with the inbox (imported only when the store is
PostgreSQL, so the embedded mode does not load psycopg)."""
from __future__ import annotations

from typing import Any, Sequence

from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.sql import SQL, Identifier

from accrual.storage import INBOX_DDL


class PostgresInboxRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self.sql_create_statements.append(SQL(INBOX_DDL))

    def _insert_events(self, curs: Any, stored_events: Sequence[Any], **kwargs: Any) -> None:
        rows = kwargs.get("inbox")
        if rows and not stored_events:  # else with the events, below
            self._insert_inbox(curs, rows)
        super()._insert_events(curs, stored_events, **kwargs)

    def _insert_stored_events(self, curs: Any, stored_events: Sequence[Any], **kwargs: Any) -> None:
        # The inbox rows go in after the events table's lock (which the
        # library takes to serialise writers) and after the events, as one
        # statement: a writer racing another for the same key then fails at
        # once, on the last statement before the pipeline's sync, which the
        # library turns into an IntegrityError (and the batch runs again).
        # Before the lock it waited on the other's uncommitted row, and a
        # failure followed by more queued statements could surface as
        # "pipeline aborted" instead.
        super()._insert_stored_events(curs, stored_events, **kwargs)
        rows = kwargs.get("inbox")
        if rows:
            with curs.connection.cursor() as inbox_cursor:
                self._insert_inbox(inbox_cursor, rows)

    @staticmethod
    def _insert_inbox(curs: Any, rows: Sequence[tuple[str, str, str, str]]) -> None:
        columns = list(zip(*rows))
        curs.execute(
            "INSERT INTO inbox SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])",
            [list(column) for column in columns],
        )

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
