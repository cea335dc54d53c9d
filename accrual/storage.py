"""Storage adapters: the eventsourcing recorders for SQLite and PostgreSQL,
extended with the inbox of processed message keys, which is written in the
same transaction as the events of a batch (so a redelivered message is a
duplicate whether a crash came before or after the commit)."""
from __future__ import annotations

from typing import Any, Sequence
from uuid import UUID

from eventsourcing.sqlite import SQLiteApplicationRecorder

from accrual.settings import DatabaseUrl, Settings
from engine.application import AccrualApplication
from engine.rules import load_rules

INBOX_DDL = (  # the same on SQLite and PostgreSQL
    "CREATE TABLE IF NOT EXISTS inbox ("
    " topic TEXT NOT NULL,"
    " message_key TEXT NOT NULL,"
    " fingerprint TEXT NOT NULL,"
    " outcome TEXT NOT NULL,"
    " PRIMARY KEY (topic, message_key))"
)
_LOOKUP_CHUNK = 400
# Checkpoint the WAL every ~80 MiB rather than SQLite's 4 MiB: batches
# rewrite scattered B-tree pages, and a page written by many commits between
# two checkpoints is copied back once.
WAL_AUTOCHECKPOINT_PAGES = 20000


class SQLiteInboxRecorder(SQLiteApplicationRecorder):
    def __init__(self, datastore: Any, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name)
        _use_normal_sync(datastore.pool)

    def select_existing(self, originator_ids: Sequence[Any]) -> set[Any]:
        """Which of these aggregates have events already (one query, so a
        batch does not look up every new member one by one)."""
        found: set[Any] = set()
        by_hex = {i.hex: i for i in originator_ids}
        hexes = list(by_hex)
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(hexes), _LOOKUP_CHUNK):
                chunk = hexes[start : start + _LOOKUP_CHUNK]
                c.execute(
                    f"SELECT originator_id FROM {self.events_table_name} "
                    f"WHERE originator_version = 1 AND originator_id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                found.update(by_hex[row[0]] for row in c.fetchall())
        return found

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), INBOX_DDL]

    def _insert_events(self, c: Any, stored_events: Sequence[Any], **kwargs: Any) -> Sequence[int] | None:
        # One executemany instead of the library's insert per event. The
        # writer holds SQLite's write lock for the transaction and the table
        # has no AUTOINCREMENT, so the rows get consecutive rowids ending at
        # last_insert_rowid(): those are the notification ids.
        notification_ids: list[int] = []
        if stored_events:
            c.executemany(
                self.insert_events_statement,
                [
                    (s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
                     s.originator_version, s.topic, s.state)
                    for s in stored_events
                ],
            )
            c.execute("SELECT last_insert_rowid()")
            last = c.fetchone()[0]
            notification_ids = list(range(last - len(stored_events) + 1, last + 1))
        rows = kwargs.get("inbox")
        if rows:
            c.executemany("INSERT INTO inbox VALUES (?,?,?,?)", rows)
        return notification_ids

    def select_inbox(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        found: dict[tuple[str, str], str] = {}
        by_topic: dict[str, list[str]] = {}
        for topic, key in dict.fromkeys(keys):
            by_topic.setdefault(topic, []).append(key)
        with self.datastore.transaction(commit=False) as c:
            for topic, message_keys in by_topic.items():
                for start in range(0, len(message_keys), _LOOKUP_CHUNK):
                    chunk = message_keys[start : start + _LOOKUP_CHUNK]
                    c.execute(
                        "SELECT message_key, fingerprint FROM inbox "
                        f"WHERE topic = ? AND message_key IN ({','.join('?' * len(chunk))})",
                        [topic, *chunk],
                    )
                    for row in c.fetchall():
                        found[(topic, row[0])] = row[1]
        return found


def _use_normal_sync(pool: Any) -> None:
    """WAL with synchronous=NORMAL: a commit survives the process being
    killed at any point (the WAL is written before COMMIT returns); only an
    operating-system crash or power loss can lose the last commits, never
    corrupt the store, and a re-ingest or redelivery brings them back."""
    create = pool._create_connection

    def create_connection() -> Any:
        connection = create()
        connection._sqlite_conn.execute("PRAGMA synchronous=NORMAL")
        connection._sqlite_conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        return connection

    pool._create_connection = create_connection


def eventsourcing_env(database: DatabaseUrl, cache_size: int) -> dict[str, str]:
    env = {"AGGREGATE_CACHE_MAXSIZE": str(cache_size)}
    if database.is_postgres:
        env.update(
            PERSISTENCE_MODULE="eventsourcing.postgres",
            APPLICATION_RECORDER_TOPIC="accrual.storage_postgres:PostgresInboxRecorder",
            POSTGRES_DBNAME=database.dbname,
            POSTGRES_HOST=database.host,
            POSTGRES_PORT=str(database.port),
            POSTGRES_USER=database.user,
            POSTGRES_PASSWORD=database.password,
            POSTGRES_POOL_SIZE="4",
            POSTGRES_MAX_OVERFLOW="4",
            POSTGRES_CONNECT_TIMEOUT="10",
            POSTGRES_LOCK_TIMEOUT="30",
        )
    else:
        assert database.path is not None
        database.path.parent.mkdir(parents=True, exist_ok=True)
        env.update(
            PERSISTENCE_MODULE="eventsourcing.sqlite",
            APPLICATION_RECORDER_TOPIC="accrual.storage:SQLiteInboxRecorder",
            SQLITE_DBNAME=str(database.path),
            SQLITE_LOCK_TIMEOUT="30",
        )
    return env


def open_application(settings: Settings) -> AccrualApplication:
    return AccrualApplication(
        env=eventsourcing_env(settings.database, settings.cache_size),
        rules=load_rules(settings.rules_file),
    )
