"""Lots: every credit forms a lot with a lot date and an expiry (rule 7).

A lot is a small list `[lot_id, lot_date, expires_on, remaining]` (dates as
ISO strings, so the aggregate's state stays plain JSON for snapshots). Debits
take points from the lot that expires first, ties to the lot credited first.

An allocation `[lot_id, points]` says what a debit took from a lot. Spending
records *portions* `[lot_id, points, lot_date, expires_on]`: allocations with
their lot's dates, because points that come back (a cancelled debit, a
declined transfer) or move on (an accepted transfer) keep their lot's expiry,
also after the lot itself emptied and left the state.
These functions are pure: the aggregate computes allocations with them in a
command and applies the recorded allocations in its events.
"""
from __future__ import annotations

LOT_ID, LOT_DATE, EXPIRES_ON, REMAINING = range(4)

Lot = list  # [lot_id: int, lot_date: str, expires_on: str, remaining: int]
Allocation = list  # [lot_id: int, points: int]
Portion = list  # [lot_id: int, points: int, lot_date: str, expires_on: str]


def balance_of(lots: list[Lot]) -> int:
    return sum(lot[REMAINING] for lot in lots)


def allocate(lots: list[Lot], points: int) -> list[Allocation]:
    """Which lots a debit of `points` takes from: first to expire first."""
    assert points >= 0
    allocations: list[Allocation] = []
    wanted = points
    for lot in sorted(lots, key=lambda lot: (lot[EXPIRES_ON], lot[LOT_ID])):
        if wanted == 0:
            break
        taken = min(wanted, lot[REMAINING])
        if taken:
            allocations.append([lot[LOT_ID], taken])
            wanted -= taken
    assert wanted == 0, "a debit never exceeds the balance"
    return allocations


def expired(lots: list[Lot], as_of: str) -> list[Allocation]:
    """Everything left in lots whose expiry is at or before `as_of`."""
    return [
        [lot[LOT_ID], lot[REMAINING]]
        for lot in sorted(lots, key=lambda lot: (lot[EXPIRES_ON], lot[LOT_ID]))
        if lot[EXPIRES_ON] <= as_of and lot[REMAINING] > 0
    ]


def take(lots: list[Lot], allocations: list[Allocation]) -> list[Lot]:
    """The lots after a debit; empty lots are dropped from the state."""
    by_id = {allocation[0]: allocation[1] for allocation in allocations}  # portions too
    remaining: list[Lot] = []
    for lot in lots:
        taken = by_id.pop(lot[LOT_ID], 0)
        assert 0 <= taken <= lot[REMAINING], "an allocation never exceeds its lot"
        if lot[REMAINING] - taken > 0:
            remaining.append([lot[LOT_ID], lot[LOT_DATE], lot[EXPIRES_ON], lot[REMAINING] - taken])
    assert not by_id, f"allocations name unknown lots: {sorted(by_id)}"
    return remaining


def portions(lots: list[Lot], allocations: list[Allocation]) -> list[Portion]:
    """The allocations with their lots' dates."""
    by_id = {lot[LOT_ID]: lot for lot in lots}
    return [[lot_id, points, by_id[lot_id][LOT_DATE], by_id[lot_id][EXPIRES_ON]] for lot_id, points in allocations]


def split_lapsed(portions: list[Portion], as_of: str) -> tuple[list[Portion], list[Portion]]:
    """(still valid, lapsed): a portion whose lot expired at or before
    `as_of` (00:00 Moscow of that date) cannot be credited any more."""
    valid = [p for p in portions if p[3] > as_of]
    lapsed = [p for p in portions if p[3] <= as_of]
    return valid, lapsed


def restore(lots: list[Lot], portions: list[Portion]) -> list[Lot]:
    """The lots after points went back to them: into the same lot, which is
    brought back with its dates if it had emptied."""
    restored = [list(lot) for lot in lots]
    by_id = {lot[LOT_ID]: lot for lot in restored}
    for lot_id, points, lot_date, expires_on in portions:
        assert points > 0
        lot = by_id.get(lot_id)
        if lot is None:
            lot = by_id[lot_id] = [lot_id, lot_date, expires_on, 0]
            restored.append(lot)
        assert (lot[LOT_DATE], lot[EXPIRES_ON]) == (lot_date, expires_on), "points go back to the same lot"
        lot[REMAINING] += points
    return restored
