"""A member's state as JSON, for the `members` table's changelog (a faust
Table keeps values as they travel: plain dicts, lists and strings).

The shape is the dataclasses' own fields, with dates and moments as ISO
8601 text; `FORMAT` is written with it so that a later release can read a
changelog of this one (a value of an unknown format is refused loudly,
never guessed)."""
from __future__ import annotations

from datetime import date, datetime
from typing import Any, Mapping

from notifier.member import DayCredit, HeldLot, MemberState, Reminder
from notifier.notification import Notification

FORMAT = 1


class StateFormatError(ValueError):
    """A stored state this release cannot read."""


def to_json(state: MemberState) -> dict[str, Any]:
    return {
        "format": FORMAT, "msisdn": state.msisdn, "version": state.version, "balance": state.balance,
        "lots": [[lot.lot_id, lot.lot_date.isoformat(), lot.expires_on.isoformat(), lot.points]
                 for lot in state.lots],
        "credits": [[c.day.isoformat(), c.rule, c.points] for c in state.credits],
        "reminded": [[r.expires_on.isoformat(), r.days] for r in state.reminded],
        "ticked_on": state.ticked_on.isoformat() if state.ticked_on else None,
        "waiting": [{"key": w.key, "kind": w.kind, "text": w.text, "not_before": w.not_before.isoformat()}
                    for w in state.waiting],
    }


def from_json(value: Mapping[str, Any]) -> MemberState:
    if value.get("format") != FORMAT:
        raise StateFormatError(f"a member state of format {value.get('format')!r}; this release reads {FORMAT}")
    msisdn = value["msisdn"]
    return MemberState(
        msisdn=msisdn, version=int(value["version"]), balance=int(value["balance"]),
        lots=tuple(HeldLot(int(i), date.fromisoformat(d), date.fromisoformat(e), int(p))
                   for i, d, e, p in value["lots"]),
        credits=tuple(DayCredit(date.fromisoformat(d), r, int(p)) for d, r, p in value["credits"]),
        reminded=tuple(Reminder(date.fromisoformat(e), int(days)) for e, days in value["reminded"]),
        ticked_on=date.fromisoformat(value["ticked_on"]) if value["ticked_on"] else None,
        waiting=tuple(Notification(w["key"], w["kind"], msisdn, w["text"], datetime.fromisoformat(w["not_before"]))
                      for w in value["waiting"]),
    )
