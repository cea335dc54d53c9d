"""A closed day: the mark a tick leaves in the log when it has done its work.

The books (projections/books.py) close at each tick. A tick as-of D closes the
day that ends at 00:00 Moscow of D; its `ClosedDay` is recorded after all its
settlements, returns and expiries, so that, in log order, every movement of
points before the mark belongs to the period it closes and every movement
after it to the next one. A late event is booked in the period in which it
arrived, and a closed period never changes: this is how an accountant treats
a late invoice, and it makes each period's figures a sum over the log alone.

One mark per date (its id comes from the date), so a tick run twice, or by two
processes at once, closes the day once.
"""
from __future__ import annotations

from datetime import date, datetime

from eventsourcing.domain import Aggregate

from engine.ids import closed_day_id


class ClosedDay(Aggregate):
    class Closed(Aggregate.Created):
        as_of: date  # the tick's date: the day before it is the day closed
        at: datetime  # 00:00 Moscow of `as_of`

    def __init__(self, as_of: date, at: datetime) -> None:
        self.as_of = as_of
        self.at = at

    @classmethod
    def close(cls, as_of: date, at: datetime) -> ClosedDay:
        return cls._create(cls.Closed, id=closed_day_id(as_of), as_of=as_of, at=at, timestamp=at)
