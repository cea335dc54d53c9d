"""Reading the event log itself, page by page, for the auditors' commands
that must not take today's read models' word for it (projections/at_tick.py,
projections/export.py). The store filters by topic; memory holds one page."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Callable, Iterator

from eventsourcing.utils import get_topic

from engine.closed_day import ClosedDay

PAGE = 10_000


def pages(app: Any, after: int, stop: int | None, topics: tuple[str, ...],
          progress: Callable[[int, int], None] | None = None, size: int = PAGE) -> Iterator[list[Any]]:
    """The notifications after position `after` up to `stop` (the end of the
    log if None), of these `topics` (all if empty), a page at a time;
    `progress(done, total)` in positions after each page."""
    recorder = app.recorder
    last = stop if stop is not None else (recorder.max_notification_id() or 0)
    position = after
    while position < last:
        page = recorder.select_notifications(start=position, limit=size, stop=last, topics=topics,
                                             inclusive_of_start=False)
        if not page:
            return
        yield list(page)
        position = int(page[-1].id)
        if progress is not None:
            progress(position - after, last - after)


def notifications(app: Any, after: int, stop: int | None, topics: tuple[str, ...],
                  progress: Callable[[int, int], None] | None = None) -> Iterator[Any]:
    for page in pages(app, after, stop, topics, progress):
        yield from page


@dataclass(frozen=True)
class Close:
    """A tick's mark (engine/closed_day.py) and where it is in the log."""

    position: int
    as_of: date


def closes(app: Any) -> list[Close]:
    """The ticks' marks in log order."""
    return [Close(int(n.id), app.mapper.to_domain_event(n).as_of)
            for n in notifications(app, 0, None, (get_topic(ClosedDay.Closed),))]
