"""A member-to-member transfer (rule 10): offered by the sender, whose points
are held meanwhile; accepted by the recipient within the acceptance window,
declined, or returned to the sender when the window ran out. One aggregate per
transfer (its id comes from the caller's idempotency key), so accepting it and
crediting the recipient are saved together, once."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Iterable
from uuid import UUID

from eventsourcing.domain import Aggregate

from engine.errors import TransferExpiredError, TransferSettledError, UnknownTransferError
from engine.lots import Portion

PENDING, ACCEPTED, DECLINED, RETURNED = "pending", "accepted", "declined", "returned"


class MemberTransfer(Aggregate):
    class Offered(Aggregate.Created):
        class_version = 2
        sender: str
        recipient: str
        points: int
        portions: tuple[Portion, ...]  # the sender's points held, with their lots' dates
        idempotency_key: str
        offered_at: datetime
        expires_at: datetime

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["portions"] = tuple(
                Portion(i, p, date.fromisoformat(d), date.fromisoformat(e)) for i, p, d, e in state.pop("allocations")
            )

    def __init__(
        self, sender: str, recipient: str, points: int, portions: Iterable[Portion], idempotency_key: str,
        offered_at: datetime, expires_at: datetime,
    ) -> None:
        self.sender = sender
        self.recipient = recipient
        self.points = points
        self.portions = tuple(portions)
        self.idempotency_key = idempotency_key
        self.offered_at = offered_at
        self.expires_at = expires_at
        self.status = PENDING
        self.settled_at: datetime | None = None

    @classmethod
    def offer(
        cls, transfer_id: UUID, sender: str, recipient: str, points: int, portions: tuple[Portion, ...],
        idempotency_key: str, at: datetime, acceptance_hours: int,
    ) -> MemberTransfer:
        assert points > 0 and sender != recipient
        return cls._create(
            cls.Offered, id=transfer_id, sender=sender, recipient=recipient, points=points,
            portions=portions, idempotency_key=idempotency_key, offered_at=at,
            expires_at=at + timedelta(hours=acceptance_hours), timestamp=at,
        )

    # -- checks ---------------------------------------------------------------

    def check_recipient(self, recipient: str) -> None:
        """Only the recipient may answer; to anyone else the transfer does not exist."""
        if recipient != self.recipient:
            raise UnknownTransferError(f"no transfer {self.id} for {recipient}")

    def is_lapsed(self, at: datetime) -> bool:
        """The offer stands for `acceptance_hours` from the offer: [offered_at, expires_at)."""
        return at >= self.expires_at

    def already(self, status: str) -> bool:
        """True when the transfer was settled by the same action (a repeat);
        refuses when it was settled otherwise."""
        if self.status == status:
            return True
        if self.status != PENDING:
            raise TransferSettledError(f"transfer {self.id} is {self.status} already")
        return False

    # -- settling --------------------------------------------------------------

    def accept(self, at: datetime) -> None:
        assert self.status == PENDING
        if self.is_lapsed(at):
            raise TransferExpiredError(
                f"transfer {self.id} could be accepted until {self.expires_at.isoformat()}"
            )
        self.trigger_event(self.Accepted, timestamp=at)

    def decline(self, at: datetime) -> None:
        assert self.status == PENDING
        self.trigger_event(self.Declined, timestamp=at)

    def time_out(self, at: datetime) -> None:
        assert self.status == PENDING and self.is_lapsed(at)
        self.trigger_event(self.Returned, timestamp=at)

    class Accepted(Aggregate.Event):
        def apply(self, transfer: MemberTransfer) -> None:
            transfer.status, transfer.settled_at = ACCEPTED, self.timestamp

    class Declined(Aggregate.Event):
        def apply(self, transfer: MemberTransfer) -> None:
            transfer.status, transfer.settled_at = DECLINED, self.timestamp

    class Returned(Aggregate.Event):
        def apply(self, transfer: MemberTransfer) -> None:
            transfer.status, transfer.settled_at = RETURNED, self.timestamp
