"""The programme at a glance: the figures of the back-office dashboard, read
from the read models only (never the event log, never a write).

Per-day figures of points come from the books (`rm_books`, projections/
books.py), not from the history: the books hold a dozen rows per tick
whatever the number of members, while the history holds a row per movement
and has no index by date (its index leads with the msisdn), so a dashboard
read from it would scan every movement ever made on each load. The books'
day is the Moscow day a movement reached the log (a tick as-of D closes the
day that ends at 00:00 Moscow of D); a late event counts on the day it
arrived, as in the rollforward beside it, so the two add up. With a daily
tick a period of the books is one day; where ticks were further apart a row
spans the days since the previous tick (`DayRow.first_day`).

The Kafka side (lag per partition, throughput) is in web/dashboard_worker.py
and joins the figures with `Dashboard.with_worker`."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Mapping, Sequence

from engine.calendar import MOSCOW
from projections.books import BROKEN_DOWN, Books, Period, by_month, change
from projections.cohorts import BreakageReport, Cohorts
from projections.tables import Names, utc_text
from web.dashboard_worker import (
    PartitionLag, ThroughputSampler, WorkerStatus, kafka_settings, worker_lag, worker_status,
)

__all__ = ["Dashboard", "DayRow", "Members", "PartitionLag", "ThroughputSampler", "Daily", "WorkerStatus",
           "at_a_glance", "kafka_settings", "worker_lag", "worker_status"]

DAYS_DEFAULT = 90


@dataclass(frozen=True)
class Members:
    enrolled: int
    awaiting: int  # numbers whose events are held until they enroll


@dataclass(frozen=True)
class DayRow:
    """Figures of one Moscow day, or of the days one period of the books spans."""

    last_day: date
    first_day: date | None  # None: from the start of the log (the first period of the books)
    values: Mapping[str, int]
    open: bool = False  # the period no tick has closed yet: today so far

    @property
    def total(self) -> int:
        return sum(self.values.values())

    @property
    def days(self) -> int | None:
        """The days the row spans (1 with a daily tick); None for the first period of the books."""
        return (self.last_day - self.first_day).days + 1 if self.first_day is not None else None

    def as_dict(self) -> dict[str, Any]:
        return {"last_day": self.last_day.isoformat(),
                "first_day": self.first_day.isoformat() if self.first_day else None,
                "open": self.open, "values": dict(self.values)}


@dataclass(frozen=True)
class Daily:
    """A table of figures by day: `keys` are its columns (rules, purposes,
    reasons), in the order shown; every row has every key."""

    keys: tuple[str, ...]
    rows: tuple[DayRow, ...]

    def total(self, key: str | None = None) -> int:
        return sum(row.values[key] if key else row.total for row in self.rows)

    def as_dict(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "rows": [row.as_dict() for row in self.rows]}


@dataclass(frozen=True)
class Dashboard:
    today: date
    days: int
    since: date  # the first day of the per-day tables: today - days + 1
    members: Members
    outstanding: int  # points in the members' balances: the books' last closing + what moved since
    issued: Daily  # points issued by rule
    redeemed: Daily  # points redeemed by purpose (before cancellations give any back)
    rejections: Daily  # rejected messages by reason (only the days that had any)
    liability: tuple[Period, ...]  # the rollforward by month (projections.books.by_month)
    breakage: BreakageReport
    worker: WorkerStatus | None = field(default=None)

    def with_worker(self, status: WorkerStatus) -> Dashboard:
        return replace(self, worker=status)

    def months(self) -> list[tuple[date, Period]]:
        """The rollforward's rows with the month each is of (a row ends on the first day of the next month)."""
        return [(period.period_end - timedelta(days=1), period) for period in self.liability]

    def estimate_percent(self) -> str:
        """The breakage estimate's rate as the page writes it; '' while there is none."""
        return _percent(str(self.breakage.rate) if self.breakage.rate is not None else None)

    def cohorts(self) -> list[dict[str, Any]]:
        """The breakage report's rows, with the rate as the page writes it ('12,34 %')."""
        return [{**row, "rate_percent": _percent(row["breakage_rate"])} for row in self.breakage.rows()]

    def to_json(self) -> dict[str, Any]:
        return {
            "today": self.today.isoformat(), "days": self.days, "since": self.since.isoformat(),
            "members": {"enrolled": self.members.enrolled, "awaiting": self.members.awaiting},
            "outstanding": self.outstanding,
            "issued_by_rule": self.issued.as_dict(),
            "redeemed_by_purpose": self.redeemed.as_dict(),
            "rejections_by_reason": self.rejections.as_dict(),
            "liability_by_month": [period.as_dict() for period in self.liability],
            "breakage": self.breakage.as_dict(),
            "worker": self.worker.to_json() if self.worker is not None else None,
        }


def at_a_glance(db: Any, names: Names, today: date, *, days: int = DAYS_DEFAULT) -> Dashboard:
    """The dashboard's figures as of `today` (a Moscow date: the route passes
    its clock's; the figures read no clock). `db` is a read-only connection
    (`projections.db.Database`); `days` the length of the per-day tables."""
    assert days > 0, days
    since = today - timedelta(days=days - 1)
    books = Books(db, names)
    periods = books.periods()
    open_period = books.open_period()
    closing = periods[-1].closing if periods else 0
    return Dashboard(
        today=today, days=days, since=since,
        members=_members(db, names),
        outstanding=closing + change(open_period),
        issued=_by_day(periods, open_period, "issued", since, today),
        redeemed=_by_day(periods, open_period, "redeemed", since, today),
        rejections=_rejections(db, names, since, today),
        liability=tuple(by_month(periods)),
        breakage=Cohorts(db, names).report(),
    )


def _percent(ratio: str | None) -> str:
    if ratio is None:
        return ""
    return f"{Decimal(ratio) * 100:.2f}".replace(".", ",") + "\u00a0%"


def _members(db: Any, names: Names) -> Members:
    enrolled, everyone = db.query(f"SELECT COUNT(enrolled_at), COUNT(*) FROM {names.members}")[0]
    return Members(enrolled=int(enrolled), awaiting=int(everyone) - int(enrolled))


def _by_day(periods: Sequence[Period], open_period: Mapping[str, Mapping[str, int]], measure: str,
            since: date, today: date) -> Daily:
    """A row per period of the books whose closed day is within [since,
    today], and the open period as `today`."""
    rows: list[DayRow] = []
    previous: date | None = None  # the as-of date of the previous tick: the first day of the next period
    for period in periods:
        closed_day = period.period_end - timedelta(days=1)
        if since <= closed_day <= today:
            rows.append(DayRow(closed_day, previous, dict(period.movements.get(measure, {}))))
        previous = period.period_end
    rows.append(DayRow(today, previous, dict(open_period.get(measure, {})), open=True))
    keys = list(BROKEN_DOWN[measure])
    keys += sorted({key for row in rows for key in row.values} - set(keys))
    return Daily(tuple(keys), tuple(DayRow(r.last_day, r.first_day, {k: r.values.get(k, 0) for k in keys}, r.open)
                                    for r in rows))


def _rejections(db: Any, names: Names, since: date, today: date) -> Daily:
    """Rejected messages by reason and Moscow day of receipt. `received_at`
    is ISO text with the receiver's offset (UTC in practice), so the rows are
    counted in SQL by the hour and offset they were written with, and each
    hour is put on its Moscow day here (Moscow's offset is whole hours). The
    SQL bound is a day early so that any offset is safe; the exact bound is
    the Moscow date. There is no index on `received_at`: rejections are a
    small share of the messages, and the table is read once."""
    start = datetime.combine(since, datetime.min.time(), tzinfo=MOSCOW) - timedelta(days=1)
    counts: dict[date, dict[str, int]] = {}
    for hour, offset, reason, count in db.query(
        f"SELECT substr(received_at, 1, 13), substr(received_at, length(received_at) - 5), reason, COUNT(*) "
        f"FROM {names.rejections} WHERE received_at >= ? GROUP BY 1, 2, 3",
        (utc_text(start)[:13],),
    ):
        day = datetime.fromisoformat(f"{hour}:00{offset}").astimezone(MOSCOW).date()
        if since <= day <= today:
            found = counts.setdefault(day, {})
            found[reason] = found.get(reason, 0) + int(count)
    totals: dict[str, int] = {}
    for found in counts.values():
        for reason, count in found.items():
            totals[reason] = totals.get(reason, 0) + count
    keys = tuple(sorted(totals, key=lambda reason: (-totals[reason], reason)))  # the commonest first
    return Daily(keys, tuple(DayRow(day, day, {k: counts[day].get(k, 0) for k in keys}) for day in sorted(counts)))
