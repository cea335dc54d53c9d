"""The notifier's hours, all in Moscow time: nothing is sent from 22:00 to
09:00 (a message waits for the morning), and the daily run (the credit
summary and the expiry reminders) is at 10:00, inside the day."""
from __future__ import annotations

from datetime import datetime, time, timedelta

from engine.calendar import MOSCOW

QUIET_FROM, QUIET_UNTIL = time(22, 0), time(9, 0)
DAILY_RUN = time(10, 0)


def not_before(at: datetime) -> datetime:
    """The first moment at or after `at` outside quiet hours: 23:30 -> 09:00
    the next morning; 08:59 -> 09:00 the same morning; 21:59 stays."""
    local = at.astimezone(MOSCOW)
    if QUIET_UNTIL <= local.time() < QUIET_FROM:
        return at
    morning = local.date() + timedelta(days=1) if local.time() >= QUIET_FROM else local.date()
    return datetime.combine(morning, QUIET_UNTIL, tzinfo=MOSCOW)


def is_daily_run_due(at: datetime) -> bool:
    return at.astimezone(MOSCOW).time() >= DAILY_RUN
