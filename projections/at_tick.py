"""The books as they stood right after a tick, from the log alone.

An auditor asks what a member had at a year's close. The read models answer
for now; this module answers for the moment the tick as-of D finished, by
reading the event log up to that tick's `ClosedDay` mark (engine/closed_day.py)
and nothing else: every balance is the sum of the effects its events state
(engine/effects.py), and a member's account is rebuilt at the last version it
had reached by then.

Reads go page by page through the notification log, filtered by topic in the
store, so memory holds one page and one integer per member.
"""
from __future__ import annotations

from datetime import date
from typing import Any, Callable
from uuid import UUID

from eventsourcing.utils import get_topic

from engine.account import MemberAccount
from engine.effects import NO_EFFECT
from engine.ids import member_id
from projections.log import closes, notifications

_OPENED = get_topic(MemberAccount.Opened)
_ENROLLED = get_topic(MemberAccount.MemberEnrolled)
# The member-account events that can move points (the others state NO_EFFECT).
_MOVING = tuple(
    get_topic(kind) for kind in vars(MemberAccount).values()
    if isinstance(kind, type) and issubclass(kind, MemberAccount.Event) and kind.__dict__.get("effect") is not NO_EFFECT
    and kind is not MemberAccount.Event
)


class NoSuchTick(LookupError):
    """No tick as-of that date is recorded in the log."""


def tick_position(app: Any, as_of: date) -> int:
    """The log position of the mark of the tick as-of `as_of`."""
    for close in closes(app):
        if close.as_of == as_of:
            return close.position
    raise NoSuchTick(f"no tick as-of {as_of.isoformat()} is recorded in the log")


def balances_at(app: Any, position: int, progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Every enrolled member's balance right after log position `position`
    (msisdn -> points, ordered by msisdn)."""
    msisdns: dict[UUID, str] = {}
    enrolled: set[UUID] = set()
    balances: dict[UUID, int] = {}
    mapper = app.mapper
    for notification in notifications(app, 0, position, (_OPENED, _ENROLLED, *_MOVING), progress):
        topic = notification.topic
        if topic == _OPENED:
            msisdns[notification.originator_id] = mapper.to_domain_event(notification).msisdn
        elif topic == _ENROLLED:
            enrolled.add(notification.originator_id)
        else:
            points = mapper.to_domain_event(notification).effect.points
            if points:
                balances[notification.originator_id] = balances.get(notification.originator_id, 0) + points
    return {msisdns[i]: balances.get(i, 0) for i in sorted(enrolled, key=msisdns.__getitem__)}


def account_at(app: Any, msisdn: str, position: int) -> MemberAccount | None:
    """The member's account as it was right after log position `position`,
    or None if it had no events by then."""
    account = member_id(msisdn)
    version = None
    for notification in notifications(app, 0, position, ()):
        if notification.originator_id == account:
            version = notification.originator_version
    if version is None:
        return None
    return app.repository.get(account, version=version)
