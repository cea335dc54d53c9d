"""What enters the engine and what it answers: an inbound message after the
edge has parsed it, the inbox row that records its consumption, and the
report of a batch, a file or a tick, counted by outcome."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, NamedTuple

APPLIED, DUPLICATE, HELD, NOT_ELIGIBLE, REJECTED = "applied", "duplicate", "held", "not_eligible", "rejected"
CONFLICTING_DUPLICATE = "conflicting_duplicate"
INTERNAL_ERROR = "internal_error"
EXAMPLES_MAX = 20


@dataclass(frozen=True)
class Inbound:
    """One inbound message after the edge has parsed it.

    `key` is the idempotency key within the topic: the `event_id` of a valid
    message, `sha256:<hex of the bytes>` of one the edge rejected. `event` is
    the validated message (a `schemas` model) or None with `rejection` set.
    """

    topic: str
    key: str
    fingerprint: str
    original: bytes
    received_at: datetime
    event: Any = None
    rejection: tuple[str, str] | None = None
    event_id: str | None = None
    msisdn: str | None = None
    partition: int | None = None
    offset: int | None = None
    kafka_key: str | None = None
    # The fingerprint of the releases before `fingerprint` was versioned,
    # computed only when an inbox row holds one (schemas.intake).
    legacy_fingerprint: Callable[[], str] | None = None

    def has_fingerprint(self, stored: str) -> bool:
        """Whether a fingerprint in the inbox is this message's content: a
        redelivery of a message consumed by an older release is still a
        duplicate, not a conflict."""
        if stored == self.fingerprint:
            return True
        return self.legacy_fingerprint is not None and stored == self.legacy_fingerprint()


class InboxRow(NamedTuple):
    """A consumed message (or a command's idempotency key), saved in the
    transaction of the events it caused. (A tuple, so that recorders insert
    rows as they are.)"""

    topic: str
    key: str
    fingerprint: str
    outcome: str


@dataclass
class Report:
    """What a batch, a file or a tick did, counted by outcome."""

    outcomes: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    released: int = 0
    settled: int = 0
    expired_points: int = 0
    returned_transfers: int = 0
    examples: list = field(default_factory=list)  # the first rejections: (offset or line, topic, reason, detail)

    def count(self, outcome: str, reason: str | None = None) -> None:
        self.outcomes[outcome] += 1
        if reason is not None:
            self.rejected[reason] += 1

    def add(self, other: Report) -> None:
        self.outcomes.update(other.outcomes)
        self.rejected.update(other.rejected)
        self.released += other.released
        self.settled += other.settled
        self.expired_points += other.expired_points
        self.returned_transfers += other.returned_transfers
        self.examples.extend(other.examples[: max(0, EXAMPLES_MAX - len(self.examples))])
