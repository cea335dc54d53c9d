"""Storage adapters: the eventsourcing recorders for SQLite and PostgreSQL,
extended with the inbox of processed message keys, which is written in the
same transaction as the events of a batch (so a redelivered message is a
duplicate whether a crash came before or after the commit)."""
from __future__ import annotations

from operator import itemgetter
from typing import Any, Sequence
from uuid import UUID

from eventsourcing.persistence import StoredEvent
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
AGGREGATES_PAGE = 400  # aggregates read per query by `select_snapshots_and_events`
# What rebuilding each aggregate needs: its latest snapshot (None if it has
# none) and its stored events after that snapshot, in order.
Records = dict[UUID, tuple[StoredEvent | None, list[StoredEvent]]]
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

    def select_snapshots_and_events(
        self, originator_ids: Sequence[UUID], snapshots: Any = None, page: int = AGGREGATES_PAGE
    ) -> Records:
        """For each aggregate that exists, its latest snapshot (from the
        recorder `snapshots`, if any) and its events after it: two queries a
        page, so that a tick does not load its accounts one by one."""
        found: Records = {}
        for start in range(0, len(originator_ids), page):
            by_hex = {i.hex: i for i in originator_ids[start : start + page]}
            latest = _latest_snapshots(snapshots, by_hex) if snapshots is not None else {}
            after = [(h, latest[i].originator_version if i in latest else 0) for h, i in by_hex.items()]
            with self.datastore.transaction(commit=False) as c:
                c.execute(
                    f"WITH k(id, after) AS (VALUES {','.join(['(?,?)'] * len(after))}) "
                    "SELECT e.originator_id, e.originator_version, e.topic, e.state "
                    f"FROM k JOIN {self.events_table_name} e "
                    "ON e.originator_id = k.id AND e.originator_version > k.after",
                    [value for pair in after for value in pair],
                )
                events = by_originator(c.fetchall(), by_hex)
            found.update(records(by_hex.values(), latest, events))
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


def _latest_snapshots(snapshots: Any, by_hex: dict[str, UUID]) -> dict[UUID, StoredEvent]:
    table = snapshots.events_table_name
    with snapshots.datastore.transaction(commit=False) as c:
        c.execute(
            f"WITH k(id) AS (VALUES {','.join(['(?)'] * len(by_hex))}) "
            "SELECT s.originator_id, s.originator_version, s.topic, s.state "
            f"FROM k JOIN {table} s ON s.originator_id = k.id AND s.originator_version = "
            f"(SELECT MAX(originator_version) FROM {table} WHERE originator_id = k.id)",
            list(by_hex),
        )
        return {by_hex[row[0]]: StoredEvent(by_hex[row[0]], row[1], row[2], row[3]) for row in c.fetchall()}


def records(ids: Any, latest: dict[UUID, StoredEvent], events: dict[UUID, list[StoredEvent]]) -> Records:
    """A page's aggregates that exist: each one's snapshot (or None) and later events."""
    return {i: (latest.get(i), events.get(i, [])) for i in ids if i in latest or i in events}


def by_originator(rows: list[Any], ids: dict[Any, UUID]) -> dict[UUID, list[StoredEvent]]:
    """Stored events grouped by aggregate, each group in version order.
    `ids`: the aggregate id of each value the rows key them by."""
    rows.sort(key=_ID_AND_VERSION)  # linear: the index gives them in this order already
    events: dict[UUID, list[StoredEvent]] = {}
    key = group = None
    for row in rows:
        if row[0] != key:
            key = row[0]
            group = events[ids[key]] = []
        group.append(StoredEvent(ids[key], row[1], row[2], bytes(row[3])))
    return events


_ID_AND_VERSION = itemgetter(0, 1)


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
