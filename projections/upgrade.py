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

from typing import Callable, ContextManager

from projections.db import Transaction
from projections.tables import Names, occurred_utc

FILL_BATCH_SIZE = 5000
Transactions = Callable[[], ContextManager[Transaction]]


def add_columns(tx: Transaction, names: Names) -> None:
    table = names.history
    if tx.db.is_postgres:
        tx.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS occurred_utc TEXT")
    elif "occurred_utc" not in {row[1] for row in tx.query(f"PRAGMA table_info({table})")}:
        tx.execute(f"ALTER TABLE {table} ADD COLUMN occurred_utc TEXT")


def fill(transaction: Transactions, names: Names) -> int:
    """Fills the added columns of the rows that lack them, a batch in each
    `transaction()`, unless the fill was done (its index exists); returns
    how many rows were filled."""
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
