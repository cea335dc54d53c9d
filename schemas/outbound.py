"""Models of what the engine publishes (JSON values on Kafka).

| topic                      | model                |
|----------------------------|----------------------|
| ``loyalty.points-events.v1`` | :class:`PointsEventMessage` |
| ``loyalty.balances.v1``      | :class:`BalanceMessage`     |
| ``loyalty.dead-letter.v1``   | :class:`DeadLetterMessage`  |

Serialise with ``model.model_dump_json()``; read back with
``Model.model_validate_json(value)``. Unknown extra fields are ignored when
reading, so consumers tolerate fields added later. All moments are aware
datetimes.
"""
from __future__ import annotations

import base64
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from .msisdn import Msisdn

if TYPE_CHECKING:
    from .intake import MessageRejected

__all__ = [
    "POINTS_EVENTS_TOPIC",
    "BALANCES_TOPIC",
    "DEAD_LETTER_TOPIC",
    "PointsEventMessage",
    "LotChange",
    "BalanceMessage",
    "DeadLetterMessage",
]

POINTS_EVENTS_TOPIC = "loyalty.points-events.v1"
BALANCES_TOPIC = "loyalty.balances.v1"
DEAD_LETTER_TOPIC = "loyalty.dead-letter.v1"


_CONFIG = ConfigDict(
    frozen=True,
    extra="ignore",
    # Every field is always written, so the serialisation schema lists them all
    # as required (optional ones as nullable).
    json_schema_serialization_defaults_required=True,
)


class LotChange(BaseModel):
    """What one points event did to one of the member's lots.

    `points` is signed: + a lot opened with that many points (`opened`) or
    points back into a lot they were taken from (`returned`: a cancelled
    debit, a declined transfer; the lot may have emptied meanwhile and comes
    back), − points drawn from the lot (`taken`: spending, a transfer sent,
    an expiry, a clawback, a debit adjustment). A lot keeps its id, lot date
    and expiry for its whole life, so a subscriber that adds up the changes
    of each (msisdn, lot_id) knows every member's lots and what is left in
    each, without asking the engine."""

    model_config = _CONFIG

    lot_id: Annotated[int, Field(strict=True, ge=1, description="Numbered from 1 within the member's account.")]
    lot_date: date
    expires_on: date
    points: Annotated[int, Field(strict=True, description="Signed: + opened or returned, − taken.")]
    change: Literal["opened", "returned", "taken"]


class PointsEventMessage(BaseModel):
    """One domain event of a member account (key: msisdn), in account order.

    `lots` lists the lots the event changed, always written (empty for an
    event that moves no lot): first the draws, then the returns, then the
    new lots. Their points add up to `points`, the change of the balance
    (what a clawback could not collect moves no lot and is not in `points`
    either). `lot_date` and `expires_on` stay as before: a credit's new lot.
    Records written before `lots` was added read as having none.

    A transfer's records name the other member (`counterpart`); the news
    of a transfer on the other member's key (`TransferOfferReceived` on the
    recipient's, `TransferAccepted` on the sender's) moves no points
    (`points` 0) and says the points offered in `transfer_points`, an offer
    also its `deadline`. Null on every other record."""

    model_config = _CONFIG

    msisdn: Msisdn
    account_version: Annotated[int, Field(strict=True, ge=0)]
    event_type: Annotated[str, Field(min_length=1, examples=["PointsAccrued"])]
    points: Annotated[int, Field(strict=True)]
    rule: str | None = None
    reason: str | None = None
    source_event_id: str | None = None
    occurred_at: AwareDatetime
    lot_date: date | None = None
    expires_on: date | None = None
    balance_after: Annotated[int, Field(strict=True)]
    lots: tuple[LotChange, ...] = ()
    counterpart: Annotated[
        Msisdn | None, Field(description="The other member of a transfer (the recipient, to the sender; the sender, "
                                         "to the recipient).")
    ] = None
    transfer_points: Annotated[
        int | None, Field(strict=True, ge=1, description="The points a transfer offered: on TransferOfferReceived "
                                                        "and TransferAccepted, whose own `points` are 0.")
    ] = None
    deadline: Annotated[
        AwareDatetime | None, Field(description="Until when a transfer offer can be accepted (not included): on "
                                                "TransferOfferReceived.")
    ] = None


class BalanceMessage(BaseModel):
    """The latest balance of a member (compacted topic, key: msisdn)."""

    model_config = _CONFIG

    msisdn: Msisdn
    balance: Annotated[int, Field(strict=True, ge=0)]
    as_of_version: Annotated[int, Field(strict=True, ge=0)]
    updated_at: AwareDatetime


class DeadLetterMessage(BaseModel):
    """A rejected inbound message (key: the source message's key)."""

    model_config = _CONFIG

    source_topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    reason: str
    detail: str
    event_id: str | None = None
    original_base64: Annotated[
        str, Field(description="The original message bytes, base64-encoded (RFC 4648).")
    ]
    received_at: AwareDatetime

    @classmethod
    def from_rejection(
        cls,
        rejection: MessageRejected,
        *,
        source_topic: str,
        original: bytes | str,
        partition: int | None = None,
        offset: int | None = None,
        key: str | None = None,
        received_at: datetime | None = None,
    ) -> DeadLetterMessage:
        """The dead letter for a :class:`~schemas.intake.MessageRejected`."""
        if isinstance(original, str):
            original = original.encode("utf-8", "surrogatepass")
        return cls(
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key=key,
            reason=rejection.reason,
            detail=rejection.detail,
            event_id=rejection.event_id,
            original_base64=base64.b64encode(original).decode("ascii"),
            received_at=received_at or datetime.now(timezone.utc),
        )

    def original_bytes(self) -> bytes:
        """The original message bytes."""
        return base64.b64decode(self.original_base64, validate=True)
