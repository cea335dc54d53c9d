"""What the notifier reads of a record of `loyalty.points-events.v1`.

Its own value objects rather than `schemas.PointsEventMessage`, so the
core's tests need no broker, and fields that records of earlier releases do
not have (`lots`; `counterpart`, `transfer_points` and `deadline`, the
transfers' fields) are optional, never guessed."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Mapping

# event_type values the notifier acts on
ACCRUED, ADJUSTED = "PointsAccrued", "PointsAdjusted"
TRANSFER_RETURNED = "TransferReturned"  # reason: declined | timed_out
# the news of a transfer on the other member's key: the recipient's account records the offer, the
# sender's the acceptance (engine.account); `points` 0, the points offered in `transfer_points`
TRANSFER_OFFERED, TRANSFER_ACCEPTED = "TransferOfferReceived", "TransferAccepted"
DECLINED, TIMED_OUT = "declined", "timed_out"


@dataclass(frozen=True, slots=True)
class LotChange:
    """One lot an event touched: `points` signed, + opened or given back,
    − drawn (spent, held for a transfer, clawed back, expired)."""

    lot_id: int
    lot_date: date
    expires_on: date
    points: int


@dataclass(frozen=True, slots=True)
class PointsEvent:
    msisdn: str
    account_version: int
    event_type: str
    points: int
    rule: str | None
    reason: str | None
    source_event_id: str | None  # a transfer's id, for transfer records
    occurred_at: datetime
    balance_after: int
    lots: tuple[LotChange, ...] = ()
    counterpart: str | None = None  # the other member of a transfer
    deadline: datetime | None = None  # a transfer offer's deadline
    transfer_points: int | None = None  # the points a transfer offered

    @property
    def is_credit(self) -> bool:
        """Earned points, for the daily summary: an accrual or a positive
        adjustment; not what the member brought about (transfers, cancels)."""
        return self.event_type == ACCRUED or (self.event_type == ADJUSTED and self.points > 0)

    @classmethod
    def from_record(cls, value: Mapping[str, Any]) -> PointsEvent:
        """From the JSON value of a record (`json.loads`); fields a record
        does not have yet are empty."""
        deadline = value.get("deadline")
        return cls(
            msisdn=value["msisdn"], account_version=int(value["account_version"]), event_type=value["event_type"],
            points=int(value["points"]), rule=value.get("rule"), reason=value.get("reason"),
            source_event_id=value.get("source_event_id"),
            occurred_at=datetime.fromisoformat(value["occurred_at"]), balance_after=int(value["balance_after"]),
            lots=tuple(
                LotChange(int(c["lot_id"]), date.fromisoformat(c["lot_date"]), date.fromisoformat(c["expires_on"]),
                          int(c["points"]))
                for c in value.get("lots") or ()
            ),
            counterpart=value.get("counterpart"),
            deadline=datetime.fromisoformat(deadline) if deadline else None,
            transfer_points=value.get("transfer_points"),
        )
