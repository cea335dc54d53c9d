"""The notifier's test language: a member's points events as the topic
would carry them, and a notifier that runs the core's decisions over a
member's state the way the faust application will (events in, ticks of a
clock the test moves, what is sent collected by key)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from engine.calendar import MOSCOW
from notifier import decide
from notifier.events import ACCRUED, TRANSFER_ACCEPTED, TRANSFER_OFFERED, TRANSFER_RETURNED, LotChange, PointsEvent
from notifier.member import MemberState
from notifier.notification import Notification
from notifier.preferences import EVERYTHING_ON, Preferences

ANNA, BORIS = "79160000001", "79160000002"


def at(text: str) -> datetime:
    """'2026-12-02 23:30' in Moscow time."""
    return datetime.fromisoformat(text).replace(tzinfo=MOSCOW)


@dataclass
class Member:
    """One member's records on `loyalty.points-events.v1`, in account order."""

    msisdn: str
    version: int = 1  # AccountOpened
    balance: int = 0
    next_lot_id: int = 1
    records: list[PointsEvent] = field(default_factory=list)

    def _record(self, event_type: str, points: int, when: str, lots: tuple[LotChange, ...] = (), **kw) -> PointsEvent:
        self.version += 1
        self.balance += points
        record = PointsEvent(self.msisdn, self.version, event_type, points, kw.pop("rule", None), kw.pop("reason", None),
                             kw.pop("source_event_id", None), at(when), self.balance, lots, **kw)
        self.records.append(record)
        return record

    def credit(self, points: int, rule: str, when: str, expires_on: str = "2027-12-01") -> PointsEvent:
        lot = LotChange(self.next_lot_id, at(when).date(), date.fromisoformat(expires_on), points)
        self.next_lot_id += 1
        return self._record(ACCRUED, points, when, (lot,), rule=rule)

    def spend(self, lot: LotChange, points: int, when: str) -> PointsEvent:
        drawn = LotChange(lot.lot_id, lot.lot_date, lot.expires_on, -points)
        return self._record("PointsRedeemed", -points, when, (drawn,), reason="order")

    def offered(self, transfer_id: str, points: int, sender: str, when: str, deadline: str) -> PointsEvent:
        """The record on the recipient's key (the account's TransferOfferReceived)."""
        return self._record(TRANSFER_OFFERED, 0, when, reason="offered", source_event_id=transfer_id,
                            counterpart=sender, deadline=at(deadline), transfer_points=points)

    def accepted(self, transfer_id: str, points: int, recipient: str, when: str) -> PointsEvent:
        """The record on the sender's key (the account's TransferAccepted)."""
        return self._record(TRANSFER_ACCEPTED, 0, when, reason="accepted", source_event_id=transfer_id,
                            counterpart=recipient, transfer_points=points)

    def returned(self, transfer_id: str, points: int, reason: str, recipient: str | None, when: str) -> PointsEvent:
        return self._record(TRANSFER_RETURNED, points, when, reason=reason, source_event_id=transfer_id,
                            counterpart=recipient)


@dataclass
class Notifier:
    """One member's slice of the notifier: its state, its preferences, and
    every notification it sent, in order."""

    msisdn: str
    preferences: Preferences = EVERYTHING_ON
    state: MemberState = field(init=False)
    sent: list[Notification] = field(default_factory=list)
    delayed: list[Notification] = field(default_factory=list)
    suppressed: list[Notification] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = MemberState(self.msisdn)

    def _take(self, decision: decide.Decision) -> list[Notification]:
        self.state = decision.state
        self.sent += decision.send
        self.delayed += decision.delayed
        self.suppressed += decision.suppressed
        return list(decision.send)

    def event(self, record: PointsEvent, when: str | None = None) -> list[Notification]:
        """A record processed at `when` (default: the moment it occurred)."""
        return self._take(decide.on_event(self.state, record, self.preferences,
                                          at(when) if when else record.occurred_at))

    def tick(self, when: str) -> list[Notification]:
        return self._take(decide.on_tick(self.state, self.preferences, at(when)))

    def days(self, first: str, count: int, times: tuple[str, ...] = ("08:00", "10:00", "16:30")) -> None:
        """The timer on `count` days from `first` (a date), at `times`: before,
        at and after the daily run."""
        for n in range(count):
            day = date.fromisoformat(first) + timedelta(days=n)
            for time in times:
                self.tick(f"{day} {time}")

    def texts(self) -> list[str]:
        return [n.text for n in self.sent]

    def keys(self) -> list[str]:
        return [n.key for n in self.sent]
