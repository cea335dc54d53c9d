"""Lots: every credit forms a lot with a lot date and an expiry (rule 7).

Debits take points from the lot that expires first, ties to the lot credited
first. Three value objects say what moves where:

- `Lot`: a lot in the balance, with the points it still holds;
- `Allocation`: points a debit (a clawback, an expiry, a spend) took from a lot;
- `Portion`: points of a lot that travel with their lot's dates, because they
  may come back (a cancelled debit, a declined transfer) or move on (an
  accepted transfer) after the lot itself emptied and left the balance.

These functions are pure: the aggregate computes allocations with them in a
command; its events record the result, and `engine.effects` applies it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class Lot:
    lot_id: int
    lot_date: date
    expires_on: date
    remaining: int

    def __post_init__(self) -> None:
        assert self.remaining > 0, "a lot in the balance holds at least one point"
        assert self.expires_on > self.lot_date


@dataclass(frozen=True, slots=True)
class Allocation:
    lot_id: int
    points: int

    def __post_init__(self) -> None:
        assert self.points > 0, "an allocation takes at least one point"


@dataclass(frozen=True, slots=True)
class Portion:
    lot_id: int
    points: int
    lot_date: date
    expires_on: date

    def __post_init__(self) -> None:
        assert self.points > 0, "a portion holds at least one point"

    @property
    def allocation(self) -> Allocation:
        return Allocation(self.lot_id, self.points)

    def lapsed_by(self, day: date) -> bool:
        """Whether the lot expired at or before 00:00 Moscow of `day`, so
        that its points can no longer be credited."""
        return self.expires_on <= day


def _expiry_order(lot: Lot) -> tuple[date, int]:
    return lot.expires_on, lot.lot_id


def allocate(lots: list[Lot], points: int) -> tuple[Allocation, ...]:
    """Which lots a debit of `points` takes from: first to expire first."""
    assert points >= 0
    allocations: list[Allocation] = []
    wanted = points
    for lot in sorted(lots, key=_expiry_order):
        if wanted == 0:
            break
        taken = min(wanted, lot.remaining)
        allocations.append(Allocation(lot.lot_id, taken))
        wanted -= taken
    assert wanted == 0, "a debit never exceeds the balance"
    return tuple(allocations)


def expired(lots: list[Lot], as_of: date) -> tuple[Allocation, ...]:
    """Everything left in lots whose expiry is at or before `as_of`."""
    return tuple(
        Allocation(lot.lot_id, lot.remaining) for lot in sorted(lots, key=_expiry_order) if lot.expires_on <= as_of
    )


def portions(lots: list[Lot], allocations: tuple[Allocation, ...]) -> tuple[Portion, ...]:
    """The allocations with their lots' dates."""
    by_id = {lot.lot_id: lot for lot in lots}
    return tuple(
        Portion(a.lot_id, a.points, by_id[a.lot_id].lot_date, by_id[a.lot_id].expires_on) for a in allocations
    )


def split_lapsed(portions: tuple[Portion, ...], day: date) -> tuple[tuple[Portion, ...], tuple[Portion, ...]]:
    """(still valid, lapsed) at 00:00 Moscow of `day`."""
    valid = tuple(p for p in portions if not p.lapsed_by(day))
    lapsed = tuple(p for p in portions if p.lapsed_by(day))
    return valid, lapsed


def points_of(items: tuple[Allocation, ...] | tuple[Portion, ...]) -> int:
    return sum(item.points for item in items)
