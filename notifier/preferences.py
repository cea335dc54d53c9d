"""A member's choices in Settings: which groups of notifications to get.
Three switches a member understands, not one per kind of message."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from notifier import notification as n

CREDITS, TRANSFERS, EXPIRY = "credits", "transfers", "expiry"
GROUP_OF = {
    n.CREDITS: CREDITS,
    n.TRANSFER_OFFERED: TRANSFERS, n.TRANSFER_ACCEPTED: TRANSFERS,
    n.TRANSFER_DECLINED: TRANSFERS, n.TRANSFER_RETURNED: TRANSFERS,
    n.EXPIRY_30: EXPIRY, n.EXPIRY_7: EXPIRY,
}


@dataclass(frozen=True, slots=True)
class Preferences:
    off: frozenset[str] = frozenset()  # the groups turned off; everything else is on (the default)

    def __post_init__(self) -> None:
        assert self.off <= {CREDITS, TRANSFERS, EXPIRY}, f"unknown groups: {sorted(self.off)}"

    def allows(self, kind: str) -> bool:
        return GROUP_OF[kind] not in self.off

    @classmethod
    def from_record(cls, value: Mapping[str, Any] | None) -> Preferences:
        """From `loyalty.member-preferences.v1` (None: a tombstone, the
        defaults); groups this version does not know are ignored."""
        groups = set((value or {}).get("off") or ()) & {CREDITS, TRANSFERS, EXPIRY}
        return cls(frozenset(groups))


EVERYTHING_ON = Preferences()
