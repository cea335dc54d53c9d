"""A notification: one SMS to one member, with the key that makes its send
happen once (docs/notifications.md, "Each notification once")."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

CREDITS = "credits"
TRANSFER_OFFERED, TRANSFER_ACCEPTED = "transfer_offered", "transfer_accepted"
TRANSFER_DECLINED, TRANSFER_RETURNED = "transfer_declined", "transfer_returned"
EXPIRY_30, EXPIRY_7 = "expiry_30", "expiry_7"
KINDS = (CREDITS, TRANSFER_OFFERED, TRANSFER_ACCEPTED, TRANSFER_DECLINED, TRANSFER_RETURNED, EXPIRY_30, EXPIRY_7)


@dataclass(frozen=True, slots=True)
class Notification:
    key: str  # msisdn:kind:date or msisdn:kind:transfer id; the send is idempotent on it
    kind: str
    msisdn: str
    text: str
    not_before: datetime  # the earliest moment it may be sent (quiet hours move it to 09:00)

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind
        assert self.key.startswith(f"{self.msisdn}:{self.kind}:"), "the key names the member and the kind"
        assert self.not_before.tzinfo is not None, "moments are timezone-aware"


def key(msisdn: str, kind: str, about: date | str) -> str:
    """Made only of what the records say (never a clock reading or a
    counter), so a replay decides the same key again."""
    return f"{msisdn}:{kind}:{about.isoformat() if isinstance(about, date) else about}"
