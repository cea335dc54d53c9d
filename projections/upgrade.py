"""Read-model columns added since an earlier release. A store written by that
release gets them when its projector starts (`Projector.create_tables`),
filled for the rows it already has, so that its read models are the rows a
rebuild would write (`accrual audit` compares the two) and no replay is
needed.

- `rm_history.occurred_utc` (issue 11): the row's moment as ISO text in UTC,
  by which the personal account's history is sorted and filtered in SQL.
  Filled from `occurred_at` with `tables.occurred_utc`, the function the
  projector writes it with. The column is the table's last, in a new table
  too, so both have the same columns in the same order.

- `rm_rejections`' dead-letter columns (issue 13): `status`, `attempts`
  (open and 1 for every row before: no dead letter was redriven then),
  `last_outcome`, `last_at`, `last_by` (NULL: no redrive), `source_key` (the
  Kafka record's key, read from the row's Rejection in the log: only a
  record from Kafka, with a partition, has one) and `received_utc` (from
  `received_at` with `tables.utc_text`, as the projector writes it). Marked
  done by the index on `received_utc`. `rm_redrives` is a new table.

The index on the column is created only once every row has it, so the
index says the fill is done: a later start-up does not read the table
again. On SQLite the whole upgrade is the start-up's one write transaction
(a second process starting at the same moment waits, then finds it done).
On PostgreSQL (start-ups are serialised by `accrual.runtime.schema_lock`)
the column is added with ADD COLUMN IF NOT EXISTS and filled in a
transaction per batch, only where it is still NULL: readers of the table
are not held by one long lock, and a start-up stopped half-way is finished
by the next.
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable, ContextManager

from projections.db import Transaction
from projections.tables import Names, occurred_utc, utc_text

FILL_BATCH_SIZE = 5000
Transactions = Callable[[], ContextManager[Transaction]]
KafkaKeys = Callable[[str], "str | None"]  # a rejection id -> the Kafka key of its record, from the log
# Added columns in the order of the DDL (tables.py): an upgraded table has
# the columns of a new one, in the same order.
_ADDED = {
    "history": ("occurred_utc TEXT",),
    "rejections": (
        "status TEXT NOT NULL DEFAULT 'open'",
        "attempts BIGINT NOT NULL DEFAULT 1",
        "last_outcome TEXT",
        "last_at TEXT",
        "last_by TEXT",
        "source_key TEXT",
        "received_utc TEXT",
    ),
}


def add_columns(tx: Transaction, names: Names) -> None:
    for table_name, columns in _ADDED.items():
        table = getattr(names, table_name)
        present = None if tx.db.is_postgres else {row[1] for row in tx.query(f"PRAGMA table_info({table})")}
        for column in columns:
            if present is None:
                tx.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column}")
            elif column.split()[0] not in present:
                tx.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


def fill(transaction: Transactions, names: Names, kafka_keys: KafkaKeys | None = None) -> int:
    """Fills the added columns of the rows that lack them, a batch in each
    `transaction()`, unless the fill was done (its index exists); returns
    how many rows were filled. Without `kafka_keys`, `source_key` stays NULL."""
    return _fill_history_column(transaction, names) + _fill_rejections(transaction, names, kafka_keys)


def _fill_rejections(transaction: Transactions, names: Names, kafka_keys: KafkaKeys | None) -> int:
    table = names.rejections
    with transaction() as tx:
        if _index_exists(tx, f"{table}_received"):
            return 0
        rows = tx.query(f"SELECT rejection_id, received_at, source_partition FROM {table} WHERE received_utc IS NULL")
    for start in range(0, len(rows), FILL_BATCH_SIZE):
        with transaction() as tx:
            tx.executemany(
                f"UPDATE {table} SET received_utc = ?, source_key = ? WHERE rejection_id = ?",
                [(utc_text(datetime.fromisoformat(at)),
                  kafka_keys(rejection_id) if kafka_keys is not None and partition is not None else None,
                  rejection_id)
                 for rejection_id, at, partition in rows[start : start + FILL_BATCH_SIZE]],
            )
    return len(rows)


def _fill_history_column(transaction: Transactions, names: Names) -> int:
    batch_size = FILL_BATCH_SIZE
    with transaction() as tx:
        if _index_exists(tx, f"{names.history}_by_moment"):
            return 0
    after: tuple[str, int] | None = None
    filled = 0
    while True:
        with transaction() as tx:
            after, count = _fill_history(tx, names.history, after, batch_size)
        filled += count
        if after is None:
            return filled


def _fill_history(tx: Transaction, table: str, after: tuple[str, int] | None,
                  batch_size: int) -> tuple[tuple[str, int] | None, int]:
    """`occurred_utc` of the next `batch_size` rows in key order after
    `after`, where it is NULL; the last key read (None at the end) and the
    rows filled."""
    where, params = ("WHERE (msisdn, version) > (?, ?) ", after) if after is not None else ("", ())
    rows = tx.query(
        f"SELECT msisdn, version, occurred_at, occurred_utc FROM {table} {where}ORDER BY msisdn, version LIMIT ?",
        (*params, batch_size),
    )
    missing = [(occurred_utc(at), msisdn, version) for msisdn, version, at, utc in rows if utc is None]
    tx.executemany(
        f"UPDATE {table} SET occurred_utc = ? WHERE msisdn = ? AND version = ? AND occurred_utc IS NULL", missing
    )
    last = (rows[-1][0], rows[-1][1]) if len(rows) == batch_size else None
    return last, len(missing)


def _index_exists(tx: Transaction, name: str) -> bool:
    if tx.db.is_postgres:
        return tx.query("SELECT to_regclass(?::text)", (name,))[0][0] is not None
    return bool(tx.query("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)))
