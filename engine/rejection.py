"""A rejected inbound message, kept with its original bytes and a reason
(the dead letter of the contract). One aggregate per rejected message, so the
rejections read model can be rebuilt from the event log like any other.

A dead letter can be redriven (`engine.redrive`): its bytes applied again
under their own key. Each redrive is an event on the aggregate, so two
redrives of one dead letter conflict on its version and only one of them is
saved with the message's effects. Attempt 1 is the delivery; redrives are
attempts 2, 3, ... A redrive that applies settles the dead letter
(`redriven`); one rejected again leaves it `open`. A message a redrive held
(its member was not enrolled) can still be refused when it is released at
the enrollment: `Refused` opens the dead letter again."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from engine.errors import DeadLetterSettledError
from engine.ids import rejection_id

OPEN, REDRIVEN = "open", "redriven"
APPLIED, REJECTED = "applied", "rejected"  # the outcomes of a redrive


class Rejection(Aggregate):
    class Recorded(Aggregate.Created):
        topic: str
        partition: int | None
        offset: int | None
        key: str | None
        event_id: str | None
        msisdn: str | None
        reason: str
        detail: str
        original: str  # base64 of the original bytes

    def __init__(
        self, topic: str, partition: int | None, offset: int | None, key: str | None, event_id: str | None,
        msisdn: str | None, reason: str, detail: str, original: str,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.event_id = event_id
        self.msisdn = msisdn
        self.reason = reason
        self.detail = detail
        self.original = original
        self.status = OPEN
        self.attempts = 1  # the delivery

    @classmethod
    def record(cls, message_key: str, received_at: datetime, **fields: Any) -> Rejection:
        return cls._create(cls.Recorded, id=rejection_id(fields["topic"], message_key), timestamp=received_at, **fields)

    # -- redrives ----------------------------------------------------------------

    def check_open(self) -> None:
        if self.status == REDRIVEN:
            raise DeadLetterSettledError(f"dead letter {self.id} was applied by a redrive already")

    def redriven(self, by: str, at: datetime, outcome: str, reason: str | None = None,
                 detail: str | None = None) -> int:
        """Records a redrive's outcome; returns its attempt number."""
        assert self.status == OPEN and outcome in (APPLIED, REJECTED)
        assert (outcome == REJECTED) == (reason is not None), "a reason says why a redrive was rejected"
        self.trigger_event(self.Redriven, timestamp=at, attempt=self.attempts + 1, by=by, outcome=outcome,
                           reason=reason, detail=detail)
        return self.attempts

    def refused(self, at: datetime, reason: str, detail: str) -> None:
        """A message a redrive held was refused when its member enrolled."""
        self.trigger_event(self.Refused, timestamp=at, attempt=self.attempts + 1, reason=reason, detail=detail)

    class Redriven(Aggregate.Event):
        attempt: int
        by: str
        outcome: str  # "applied" | "rejected"
        reason: str | None  # when rejected again
        detail: str | None

        def apply(self, rejection: Rejection) -> None:
            rejection.attempts = self.attempt
            rejection.status = REDRIVEN if self.outcome == APPLIED else OPEN

    class Refused(Aggregate.Event):
        attempt: int
        reason: str
        detail: str

        def apply(self, rejection: Rejection) -> None:
            rejection.attempts = self.attempt
            rejection.status = OPEN
