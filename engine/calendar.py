"""Programme calendar: every calendar rule is read in Europe/Moscow time.

Months, lot dates, expiry dates and settlement moments are computed here and
nowhere else, so "which month is this event in" has one answer.
"""
from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

MOSCOW = ZoneInfo("Europe/Moscow")


def moscow_date(moment: datetime) -> date:
    """The calendar date of an aware moment in Moscow."""
    assert moment.tzinfo is not None, "moments are always time-zone aware"
    return moment.astimezone(MOSCOW).date()


def month_of(moment: datetime) -> str:
    """The programme month (`YYYY-MM`) of an aware moment, in Moscow."""
    day = moscow_date(moment)
    return f"{day.year:04d}-{day.month:02d}"


def month_start(month: str) -> date:
    year, number = month.split("-")
    return date(int(year), int(number), 1)


def shift_month(month: str, months: int) -> str:
    start = month_start(month)
    index = start.year * 12 + (start.month - 1) + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def add_months(day: date, months: int) -> date:
    """`day` moved by whole calendar months; a day that does not exist in the
    target month (the 29th of February, the 31st of April) moves to the 1st of
    the month after, as RULES.md 7 says."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = index // 12, index % 12 + 1
    try:
        return date(year, month, day.day)
    except ValueError:
        following = index + 1
        return date(following // 12, following % 12 + 1, 1)


def midnight(day: date) -> datetime:
    """00:00 Moscow time of a calendar date: the moment of a tick, an expiry
    or a settlement."""
    return datetime.combine(day, time(0, 0), tzinfo=MOSCOW)


def settlement_date(month: str, day_of_following_month: int) -> date:
    """The day a month is settled on: `day_of_following_month` of the month
    after `month` (the 15th for MGTS, the 25th for cards)."""
    return month_start(shift_month(month, 1)).replace(day=day_of_following_month)


__all__ = [
    "MOSCOW",
    "add_months",
    "midnight",
    "month_of",
    "month_start",
    "moscow_date",
    "settlement_date",
    "shift_month",
]
