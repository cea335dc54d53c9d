"""The auditor's export: every movement of points booked in a range of closed
periods, with its member, rule or reason, source event id, lots, log
position and the period it is booked in (docs/books.md).

Read from the log, page by page: the positions of the ticks' marks first
(`projections.log.closes`), then the member-account events of the
chosen periods, each turned into its history line by the projector's own
handlers (so the export says what the read models say, line for line). The
members' numbers come from the read models through the projector's bounded
lookup. Memory holds a page, whatever the range.
"""
from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from datetime import date
from typing import Any, Callable, Iterator

from eventsourcing.utils import get_topic

from engine.account import MemberAccount
from engine.ids import member_id
from projections.books import MEASURES
from projections.log import Close, pages
from projections.projector import Projector

PAGE = 5_000
COLUMNS = ("position", "period_end", "msisdn", "version", "occurred_at", "kind", "measure", "rule", "reason",
           "points", "source_event_id", "lot_id", "lots")
_MEMBER_TOPICS = tuple(
    get_topic(kind) for kind in vars(MemberAccount).values()
    if isinstance(kind, type) and issubclass(kind, (MemberAccount.Event, MemberAccount.Opened))
    and kind is not MemberAccount.Event
)


@dataclass(frozen=True)
class Selection:
    """The closed periods whose `period_end` is within [since, until], as a
    range of log positions: after `start`, up to and including `stop`."""

    periods: list[Close]
    start: int
    stop: int

    @property
    def empty(self) -> bool:
        return not self.periods


def select(marks: list[Close], since: date | None, until: date | None) -> Selection:
    chosen = [i for i, c in enumerate(marks) if (since is None or c.as_of >= since) and (until is None or c.as_of <= until)]
    if not chosen:
        return Selection([], 0, 0)
    first, last = chosen[0], chosen[-1]
    # log order and dates can disagree (a past date ticked late): the range is the log's
    periods = marks[first:last + 1]
    return Selection(periods, marks[first - 1].position if first else 0, marks[last].position)


def movements(
    app: Any, projector: Projector, selection: Selection, progress: Callable[[int, int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """The movements of the selected periods in log order, as rows of `COLUMNS`."""
    if selection.empty:
        return
    ends = [c.position for c in selection.periods]
    for page in pages(app, selection.start, selection.stop, _MEMBER_TOPICS, progress, size=PAGE):
        positions = {(n.originator_id, n.originator_version): int(n.id) for n in page}
        events = [app.mapper.to_domain_event(n) for n in page]
        for (msisdn, version, kind, points, rule, reason, source, lot_id, _lot_date, _expires, occurred_at,
             detail, *_) in projector.history_of(events):
            if not points:
                continue
            position = positions[(member_id(msisdn), version)]
            yield {
                "position": position,
                "period_end": selection.periods[bisect.bisect_left(ends, position)].as_of.isoformat(),
                "msisdn": msisdn, "version": version, "occurred_at": occurred_at, "kind": kind,
                "measure": MEASURES[kind][0], "rule": rule, "reason": reason, "points": points,
                "source_event_id": source, "lot_id": lot_id,
                "lots": json.dumps(json.loads(detail).get("lots", []), separators=(",", ":")),
            }
