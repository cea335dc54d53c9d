"""The changes a batch of events makes to the read models, gathered in memory
and written at the end of the batch with one statement per table.

Within a batch, most changes do not depend on their order (balance deltas,
new history and lot rows). Those that do are folded here to the state the
batch ends in, exactly as the events would have left it one by one:

- a card month: the spend adds up; a settlement sets its points and clears
  `dirty`; a spend after it (or in the month before, whose spend sets the
  rate) marks it `dirty` again (rule 5);
- an MGTS period: the same with bills;
- an MGTS account's link: the latest `linked_at` wins (ties: the later event);
- transfers and debits: created, then settled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from projections.books import Bookings
from projections.cohorts import CohortBookings
from projections.db import Transaction
from projections.tables import Names


def kopecks(amount: Decimal) -> int:
    return int(amount * 100)


@dataclass
class _Month:
    """A card month or an MGTS period as the batch leaves it."""

    added: int = 0  # kopecks
    has_spend: bool = False
    settled: tuple | None = None  # the last settlement in the batch: (points,) or (points, msisdn)
    dirty: int | None = None  # the flag the batch set last, if it set one
    mark_if_settled: bool = False  # dirty = 1 if it is settled in the table (and nothing later in the batch set it)


@dataclass
class Changes:
    new_members: list[tuple] = field(default_factory=list)
    members: dict[Any, list] = field(default_factory=dict)  # account id -> [balance delta, uncollected delta, version, at]
    enrolled: list[tuple] = field(default_factory=list)
    history: list[tuple] = field(default_factory=list)
    new_lots: dict[tuple[str, int], list] = field(default_factory=dict)
    lot_deltas: dict[tuple[str, int], int] = field(default_factory=dict)
    held: dict[tuple[str, str, str], tuple] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)
    card_months: dict[tuple[str, str], _Month] = field(default_factory=dict)
    mgts_periods: dict[tuple[str, str], _Month] = field(default_factory=dict)
    new_mgts_accounts: list[tuple] = field(default_factory=list)
    mgts_links: dict[str, tuple[str, str]] = field(default_factory=dict)  # account id -> (linked_at, msisdn)
    new_transfers: list[tuple] = field(default_factory=list)
    transfer_settlements: dict[str, tuple] = field(default_factory=dict)
    new_debits: list[tuple] = field(default_factory=list)
    cancelled_debits: list[str] = field(default_factory=list)
    rejections: list[tuple] = field(default_factory=list)
    redrives: list[tuple] = field(default_factory=list)  # (rejection id, attempt, by, at, outcome, reason, detail)
    dead_letter_states: dict[str, tuple] = field(default_factory=dict)  # id -> (status, attempts, outcome, at, by)
    books: Bookings = field(default_factory=Bookings)
    cohorts: CohortBookings = field(default_factory=CohortBookings)

    # -- members, lots, history ---------------------------------------------------

    def touch(self, e: Any, points: int = 0, uncollected: int = 0) -> None:
        entry = self.members.get(e.originator_id)
        if entry is None:
            self.members[e.originator_id] = [points, uncollected, e.originator_version, e.timestamp]
        else:
            entry[0] += points
            entry[1] += uncollected
            entry[2] = e.originator_version
            entry[3] = e.timestamp

    def open_lot(self, msisdn: str, lot_id: int, rule: str, lot_date: str, expires_on: str, points: int) -> None:
        self.new_lots[(msisdn, lot_id)] = [msisdn, lot_id, rule, lot_date, expires_on, points, points]

    def change_lot(self, msisdn: str, lot_id: int, points: int) -> None:
        new = self.new_lots.get((msisdn, lot_id))
        if new is not None:
            new[-1] += points
        else:
            self.lot_deltas[(msisdn, lot_id)] = self.lot_deltas.get((msisdn, lot_id), 0) + points

    def release(self, msisdn: str) -> None:
        self.released.add(msisdn)
        for key in [k for k in self.held if k[0] == msisdn]:
            del self.held[key]

    # -- card months and MGTS periods ----------------------------------------------------

    @staticmethod
    def _add(months: dict[tuple[str, str], _Month], key: tuple[str, str], amount: int) -> None:
        month = months.setdefault(key, _Month())
        month.added += amount
        month.has_spend = True
        month.dirty = 1
        month.mark_if_settled = False

    @staticmethod
    def _settle(months: dict[tuple[str, str], _Month], key: tuple[str, str], settled: tuple) -> None:
        month = months.setdefault(key, _Month())
        month.settled = settled
        month.dirty = 0
        month.mark_if_settled = False

    def card_spend(self, msisdn: str, month: str, following: str, amount: int) -> None:
        self._add(self.card_months, (msisdn, month), amount)
        after = self.card_months.setdefault((msisdn, following), _Month())
        if after.settled is not None:
            after.dirty = 1
        elif after.dirty is None:
            after.mark_if_settled = True

    def card_settled(self, msisdn: str, month: str, points: int) -> None:
        self._settle(self.card_months, (msisdn, month), (points,))

    def mgts_bill(self, mgts_account: str, period: str, amount: int) -> None:
        self._add(self.mgts_periods, (mgts_account, period), amount)

    def mgts_settled(self, mgts_account: str, period: str, points: int, msisdn: str) -> None:
        self._settle(self.mgts_periods, (mgts_account, period), (points, msisdn))

    def mgts_link(self, account_id: str, linked_at: str, msisdn: str) -> None:
        current = self.mgts_links.get(account_id)
        if current is None or current[0] <= linked_at:  # the table's rule: text order of linked_at
            self.mgts_links[account_id] = (linked_at, msisdn)

    # -- writing ----------------------------------------------------------------------------

    def write(self, tx: Transaction, names: Names) -> None:
        self._write_members(tx, names)
        self._write_months(tx, names)
        tx.insert(names.transfers, ("transfer_id", "sender", "recipient", "points", "offered_at", "expires_at",
                                    "status"), [(*t, "pending") for t in self.new_transfers])
        tx.executemany(
            f"UPDATE {names.transfers} SET status = ?, settled_at = ? WHERE transfer_id = ?",
            [(*settled, transfer_id) for transfer_id, settled in self.transfer_settlements.items()],
        )
        tx.insert(names.debits, ("debit_id", "msisdn", "purpose", "points", "reference", "created_at", "status"),
                  [(*d, "debited") for d in self.new_debits])
        tx.executemany(f"UPDATE {names.debits} SET status = 'cancelled' WHERE debit_id = ?",
                       [(d,) for d in self.cancelled_debits])
        tx.insert(names.rejections, ("rejection_id", "topic", "source_partition", "source_offset", "event_id",
                                     "msisdn", "reason", "detail", "original", "received_at", "source_key",
                                     "received_utc"), self.rejections)
        self._write_redrives(tx, names)
        self.books.write(tx, names)

    def attempt(self, rejection_id: str, attempt: int, by: str | None, at: str, outcome: str, reason: str | None,
                detail: str | None, status: str) -> None:
        """A redrive of a dead letter (or its refusal at a release): a row
        of its own, and the dead letter's state after its latest attempt."""
        self.redrives.append((rejection_id, attempt, by, at, outcome, reason, detail))
        self.dead_letter_states[rejection_id] = (status, attempt, outcome, at, by)

    def _write_redrives(self, tx: Transaction, names: Names) -> None:
        tx.insert(names.redrives, ("rejection_id", "attempt", "redriven_by", "attempted_at", "outcome", "reason",
                                   "detail"), self.redrives)
        tx.executemany(
            f"UPDATE {names.rejections} SET status = ?, attempts = ?, last_outcome = ?, last_at = ?, last_by = ? "
            "WHERE rejection_id = ?",
            [(*state, rejection_id) for rejection_id, state in self.dead_letter_states.items()],
        )

    def _write_members(self, tx: Transaction, names: Names) -> None:
        tx.insert(names.members, ("account_id", "msisdn", "version", "updated_at"), self.new_members)
        tx.executemany(
            f"UPDATE {names.members} SET balance = balance + ?, uncollected = uncollected + ?, "
            "version = ?, updated_at = ? WHERE account_id = ?",
            [(b, u, v, t.isoformat(), str(i)) for i, (b, u, v, t) in self.members.items()],
        )
        tx.executemany(f"UPDATE {names.members} SET enrolled_at = ?, channel = ? WHERE account_id = ?", self.enrolled)
        tx.insert(names.history, ("msisdn", "version", "kind", "points", "rule", "reason", "source_event_id",
                                  "lot_id", "lot_date", "expires_on", "occurred_at", "detail", "occurred_utc"),
                  self.history)
        tx.insert(names.lots, ("msisdn", "lot_id", "rule", "lot_date", "expires_on", "points", "remaining"),
                  list(self.new_lots.values()))
        tx.executemany(
            f"UPDATE {names.lots} SET remaining = remaining + ? WHERE msisdn = ? AND lot_id = ?",
            [(points, msisdn, lot_id) for (msisdn, lot_id), points in self.lot_deltas.items() if points],
        )
        self.cohorts.write(tx, names)  # after the lots: it looks up the dates of lots named by id
        tx.executemany(f"DELETE FROM {names.held} WHERE msisdn = ?", [(m,) for m in self.released])
        tx.insert(names.held, ("msisdn", "topic", "source_event_id", "occurred_at", "message"),
                  list(self.held.values()))

    def _write_months(self, tx: Transaction, names: Names) -> None:
        months = self.card_months
        tx.executemany(
            f"INSERT INTO {names.card_months} (msisdn, month, net_kopecks, dirty) VALUES (?, ?, ?, 1) "
            "ON CONFLICT (msisdn, month) DO UPDATE SET net_kopecks = "
            f"{names.card_months}.net_kopecks + excluded.net_kopecks, dirty = 1",
            [(*key, m.added) for key, m in months.items() if m.has_spend],
        )
        tx.executemany(
            f"UPDATE {names.card_months} SET settled_points = ?, dirty = ? WHERE msisdn = ? AND month = ?",
            [(m.settled[0], m.dirty, *key) for key, m in months.items() if m.settled is not None],
        )
        tx.executemany(
            f"UPDATE {names.card_months} SET dirty = 1 "
            "WHERE msisdn = ? AND month = ? AND settled_points IS NOT NULL AND dirty = 0",
            [key for key, m in months.items() if m.mark_if_settled],
        )
        self._write_mgts(tx, names)

    def _write_mgts(self, tx: Transaction, names: Names) -> None:
        tx.insert(names.mgts_accounts, ("account_id", "mgts_account"), self.new_mgts_accounts)
        tx.executemany(
            f"UPDATE {names.mgts_accounts} SET msisdn = ?, linked_at = ? "
            "WHERE account_id = ? AND (linked_at IS NULL OR linked_at <= ?)",
            [(msisdn, linked_at, account_id, linked_at) for account_id, (linked_at, msisdn) in self.mgts_links.items()],
        )
        periods = self.mgts_periods
        tx.executemany(
            f"INSERT INTO {names.mgts_periods} (mgts_account, period, total_kopecks, dirty) "
            "VALUES (?, ?, ?, 1) ON CONFLICT (mgts_account, period) DO UPDATE SET total_kopecks = "
            f"{names.mgts_periods}.total_kopecks + excluded.total_kopecks, dirty = 1",
            [(*key, p.added) for key, p in periods.items() if p.has_spend],
        )
        tx.executemany(
            f"UPDATE {names.mgts_periods} SET settled_points = ?, settled_for = ?, dirty = ? "
            "WHERE mgts_account = ? AND period = ?",
            [(*p.settled, p.dirty, *key) for key, p in periods.items() if p.settled is not None],
        )
