"""Redriving a dead letter: its original bytes parsed again as on delivery
and applied under their own (topic, key), with the same rules as a first
delivery (`handlers.receive`), in one unit of work with the redrive's event
on the `Rejection`.

Why it is applied exactly once: the redrive's event takes the dead letter's
next version, so of two redrives saved at once one conflicts and runs again
(`AccrualApplication.run`), finds the dead letter settled and is refused
with `already_redriven`. Why a redelivery of the message stays a duplicate:
the inbox row the delivery wrote for its key is kept as it is (a redrive
writes no inbox row for that key, so it never conflicts with it either).

The key a dead letter was recorded under is its event_id (a rule refusal,
an `internal_error`, a refusal at a release) or the hash of its bytes (a
message the edge rejected, a conflicting duplicate); the aggregate's id says
which, being made from it (`ids.rejection_id`).
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from engine import handlers
from engine.errors import RuleRefusal, UnknownDeadLetterError
from engine.ids import rejection_id
from engine.intake import reparse
from engine.messages import CONFLICTING_DUPLICATE, DUPLICATE, Inbound
from engine.rejection import APPLIED, REJECTED, Rejection
from engine.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Redrive:
    """What a redrive did. `attempt`: 2 for the first redrive (attempt 1 is
    the delivery). `applied_as`: what the rules made of the message when it
    applied (applied, held, not_eligible, or duplicate when its key was
    consumed with the same content meanwhile, so nothing was applied again:
    then `duplicate`)."""

    rejection_id: str
    attempt: int
    outcome: str  # "applied" | "rejected"
    reason: str | None = None  # when rejected again
    detail: str | None = None
    applied_as: str | None = None
    duplicate: bool = False


def redrive_dead_letter(uow: UnitOfWork, dead_letter_id: UUID, by: str, at: datetime) -> Redrive:
    rejection = uow.get(dead_letter_id)
    if not isinstance(rejection, Rejection):
        raise UnknownDeadLetterError(f"no dead letter {dead_letter_id}")
    rejection.check_open()
    message = reparse(
        rejection.topic, base64.b64decode(rejection.original), at,
        partition=rejection.partition, offset=rejection.offset, kafka_key=rejection.key,
    )
    own_key = message.key if rejection_id(message.topic, message.key) == rejection.id else _hash_key(message)
    assert rejection_id(message.topic, own_key) == rejection.id, "a dead letter is keyed by its event_id or its bytes"
    try:
        applied_as = _apply(uow, message, own_key)
    except RuleRefusal as refusal:
        attempt = rejection.redriven(by, at, REJECTED, refusal.reason, refusal.detail)
        return Redrive(str(rejection.id), attempt, REJECTED, refusal.reason, refusal.detail)
    attempt = rejection.redriven(by, at, APPLIED)
    return Redrive(str(rejection.id), attempt, APPLIED, applied_as=applied_as, duplicate=applied_as == DUPLICATE)


def _apply(uow: UnitOfWork, message: Inbound, own_key: str) -> str:
    """As `handlers.receive`, but the rejection is raised, not recorded, and
    the dead letter's own inbox row is not written again."""
    if message.rejection is not None:
        raise _Refusal(*message.rejection)
    if own_key != message.key:
        # A conflicting duplicate: its key was consumed with other content.
        known = uow.seen([(message.topic, message.key)]).get((message.topic, message.key))
        if known is not None:
            if message.has_fingerprint(known):
                return DUPLICATE
            raise _Refusal(CONFLICTING_DUPLICATE, f"event_id {message.key!r} was already received on "
                                                  f"{message.topic} with other content")
        outcome = handlers.apply(uow, message.topic, message.event)
        uow.consume(message.topic, message.key, message.fingerprint, outcome)
        return outcome
    return handlers.apply(uow, message.topic, message.event)


class _Refusal(RuleRefusal):
    """The edge's or the inbox's refusal, as a rule's."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _hash_key(message: Inbound) -> str:
    return "sha256:" + hashlib.sha256(message.original).hexdigest()
