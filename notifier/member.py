"""A member's state in the notifier: what it knows of the member's points
(the balance, the lots, folded from the lot changes of every event) and
what it has still to say or has said (credits not yet announced, expiry
dates reminded, the last daily run, notifications waiting for the
morning). One value per member in the `members` table, keyed by msisdn."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

from engine.calendar import moscow_date
from notifier.events import LotChange, PointsEvent
from notifier.notification import Notification

REMINDER_DAYS = (30, 7)


@dataclass(frozen=True, slots=True)
class HeldLot:
    lot_id: int
    lot_date: date
    expires_on: date
    points: int  # what is left in it, > 0


@dataclass(frozen=True, slots=True)
class DayCredit:
    """Points earned on a Moscow day by one rule, not yet announced."""

    day: date
    rule: str
    points: int


@dataclass(frozen=True, slots=True)
class Reminder:
    """An expiry date reminded `days` (30 or 7) before."""

    expires_on: date
    days: int


@dataclass(frozen=True, slots=True)
class MemberState:
    msisdn: str
    version: int = 0  # the last account version folded in: a record at or below it is a repeat
    balance: int = 0
    lots: tuple[HeldLot, ...] = ()  # by lot id
    credits: tuple[DayCredit, ...] = ()  # by day, then rule
    reminded: tuple[Reminder, ...] = ()
    ticked_on: date | None = None  # the day of the last daily run
    waiting: tuple[Notification, ...] = ()  # decided in quiet hours, sent at 09:00

    def expiring(self) -> dict[date, int]:
        """Points by expiry date, earliest first."""
        by_date: dict[date, int] = {}
        for lot in sorted(self.lots, key=lambda lot: lot.expires_on):
            by_date[lot.expires_on] = by_date.get(lot.expires_on, 0) + lot.points
        return by_date

    def was_reminded(self, expires_on: date, days: int) -> bool:
        return Reminder(expires_on, days) in self.reminded

    def credits_of(self, day: date) -> dict[str, int]:
        return {c.rule: c.points for c in self.credits if c.day == day}


def fold(state: MemberState, event: PointsEvent) -> MemberState:
    """The state after one points event; a repeat (a version folded in
    already: a redelivery, or a replay over a kept state) changes nothing."""
    assert event.msisdn == state.msisdn
    if event.account_version <= state.version:
        return state
    credits = state.credits
    if event.is_credit and event.points > 0:
        credits = _add_credit(credits, DayCredit(moscow_date(event.occurred_at), event.rule or "other", event.points))
    return replace(state, version=event.account_version, balance=event.balance_after,
                   lots=apply_lot_changes(state.lots, event.lots), credits=credits)


def apply_lot_changes(lots: tuple[HeldLot, ...], changes: tuple[LotChange, ...]) -> tuple[HeldLot, ...]:
    """Lots after the changes: a drawn lot shrinks and leaves when empty; a
    lot points return to comes back with its dates; a new lot joins.

    A draw can be larger than what the state holds of a lot only when the
    state never saw the lot opened: records of a release before `lots`
    carry none, so a notifier reading a topic that began before it knows
    only the lots opened since. Such a lot leaves the state (it is empty by
    the engine's account too, or holds points this state cannot date) and
    the rest goes on; the engine's lots read model stays the reference."""
    held = {lot.lot_id: lot for lot in lots}
    for change in changes:
        before = held.get(change.lot_id)
        left = (before.points if before else 0) + change.points
        if left > 0:
            held[change.lot_id] = HeldLot(change.lot_id, change.lot_date, change.expires_on, left)
        else:
            held.pop(change.lot_id, None)
    return tuple(held[i] for i in sorted(held))


def _add_credit(credits: tuple[DayCredit, ...], credit: DayCredit) -> tuple[DayCredit, ...]:
    merged = {(c.day, c.rule): c.points for c in credits}
    merged[(credit.day, credit.rule)] = merged.get((credit.day, credit.rule), 0) + credit.points
    return tuple(DayCredit(day, rule, points) for (day, rule), points in sorted(merged.items()))

