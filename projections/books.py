"""The books: the points liability rolled forward from one closed period to
the next.

Under IFRS 15 (B39–B43) and ASC 606 the points members hold are a liability
of the operator. The books close at each tick (engine/closed_day.py): every
movement of points recorded in the log belongs to the period closed by the
first `ClosedDay` recorded after it, in log order. A period is named by its
tick's as-of date; movements after the last close are in the period `open`.

The read model keeps, per period, the points of each kind of movement
(`measure`), broken down by rule or purpose (`detail`), in the table `books`,
and the closes in log order in `closes`. Each history line of the read models
is one movement, so the books are written where the history is
(`Changes.book`), and a store of an earlier release gets them from its
history (`fill_from_history`).

A period's row: `opening` (the previous row's `closing`), the movements, and
`closing` = `opening` + issued − clawed back − expired − redeemed + restored
− transferred out + transferred in + returned + adjusted: the sum of all
balances right after the tick that closed it. `adjusted` (issue 13, the
loyalty team's corrections) is the one measure kept with its sign: credits
+, debits −, netted in the period; the export lists each adjustment.

A store of an earlier release needs no change of its tables for it: a
measure is a row, not a column, and such a store has no adjustment to fill
(`fill_from_history` books any "adjusted" lines it finds all the same).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Iterable

from engine.account import BALLYPLUS, CARD, MGTS, SHOP, USAGE
from engine.calendar import shift_month
from projections.db import Database, Transaction
from projections.tables import Names

OPEN = "open"  # the period no tick has closed yet

# How a history line's kind is booked: its measure, and the sign the measure
# has in the rollforward. A line of any other kind moves no points.
MEASURES: dict[str, tuple[str, int]] = {
    "accrued": ("issued", +1),
    "clawed_back": ("clawed_back", -1),
    "expired": ("expired", -1),
    "redeemed": ("redeemed", -1),
    "restored": ("restored", +1),
    "transfer_out": ("transferred_out", -1),
    "transfer_in": ("transferred_in", +1),
    "transfer_returned": ("returned", +1),
    "adjusted": ("adjusted", +1),
}
# Measures that move points either way: kept signed, not as positive amounts.
SIGNED = frozenset({"adjusted"})
SIGNS = dict(MEASURES.values())
# Measures shown broken down, with the keys every row has (others that occur
# are shown too): issued by rule, redeemed by purpose.
BROKEN_DOWN = {"issued": (USAGE, SHOP, MGTS, CARD, BALLYPLUS), "redeemed": ("order", "pos")}
ORDER = ("issued", "clawed_back", "expired", "redeemed", "restored", "transferred_out", "transferred_in",
         "returned", "adjusted")


def booking(kind: str, rule: str | None, reason: str | None, points: int) -> tuple[str, str, int] | None:
    """(measure, detail, points as a positive amount, or signed for a
    `SIGNED` measure) of a history line, or None for a line that moves no
    points."""
    if points == 0:
        return None
    measure, sign = MEASURES[kind]  # a kind that moves points and is not booked is a defect: fail loudly
    if measure in SIGNED:
        return measure, "", points
    assert points * sign > 0, f"a {kind} line moves points the other way ({points})"
    detail = (rule or "") if measure == "issued" else (reason or "") if measure == "redeemed" else ""
    return measure, detail, abs(points)


@dataclass
class Bookings:
    """The movements of one batch of the log, split where the batch closes a
    period: `closed` are the periods it closed, in log order, each with what
    the batch booked in it before its close; `open` what came after."""

    closed: list[tuple[str, dict[tuple[str, str], int]]] = field(default_factory=list)
    open: dict[tuple[str, str], int] = field(default_factory=dict)

    def book(self, kind: str, rule: str | None, reason: str | None, points: int) -> None:
        entry = booking(kind, rule, reason, points)
        if entry is not None:
            measure, detail, amount = entry
            self.open[(measure, detail)] = self.open.get((measure, detail), 0) + amount

    def close(self, as_of: str) -> None:
        self.closed.append((as_of, self.open))
        self.open = {}

    def write(self, tx: Transaction, names: Names) -> None:
        for as_of, sums in self.closed:
            # The periods' rows so far were the open period's; this close names them.
            tx.execute(f"UPDATE {names.books} SET period = ? WHERE period = ?", (as_of, OPEN))
            _add(tx, names, as_of, sums)
            tx.execute(
                f"INSERT INTO {names.closes} (seq, as_of) SELECT COALESCE(MAX(seq), 0) + 1, ? FROM {names.closes}",
                (as_of,),
            )
        _add(tx, names, OPEN, self.open)


def _add(tx: Transaction, names: Names, period: str, sums: dict[tuple[str, str], int]) -> None:
    tx.executemany(
        f"INSERT INTO {names.books} (period, measure, detail, points) VALUES (?, ?, ?, ?) "
        f"ON CONFLICT (period, measure, detail) DO UPDATE SET points = {names.books}.points + excluded.points",
        [(period, measure, detail, points) for (measure, detail), points in sums.items()],
    )


def fill_from_history(tx: Transaction, names: Names) -> None:
    """Books for a store whose read models were built before the books
    existed: every movement of its history goes to the open period (its
    ticks left no mark in the log, so the first tick of this release closes
    all of them). The caller holds the projector's position, so the history
    is not growing meanwhile; books that have any row are left alone."""
    if tx.query(f"SELECT 1 FROM {names.books} LIMIT 1"):
        return
    bookings = Bookings()
    for kind, rule, reason, points in tx.query(
        f"SELECT kind, rule, reason, SUM(points) FROM {names.history} WHERE points <> 0 GROUP BY kind, rule, reason"
    ):
        bookings.book(kind, rule, reason, int(points))
    _add(tx, names, OPEN, bookings.open)


# -- the report -------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """One row of the rollforward: a period of the books (or a month of them)."""

    period_end: date  # the as-of date of the tick that closed it (by month: the first day of the next month)
    ticks: int  # the closes it spans
    opening: int
    movements: dict[str, dict[str, int]]  # measure -> detail -> points ("" for a measure not broken down)
    closing: int

    def total(self, measure: str) -> int:
        return sum(self.movements.get(measure, {}).values())

    def change(self) -> int:
        return change(self.movements)

    def as_dict(self, point_value: Decimal | None = None) -> dict[str, Any]:
        """The row as the JSON report prints it; with `point_value`, every
        figure also in rubles (text, two decimals), under `rub`."""
        row: dict[str, Any] = {"period_end": self.period_end.isoformat(), "ticks": self.ticks,
                               "opening": self.opening}
        for measure in ORDER:
            if measure in BROKEN_DOWN:
                row[measure] = dict(self.movements.get(measure, {}))
            else:
                row[measure] = self.total(measure)
        row["closing"] = self.closing
        if point_value is not None:
            row["rub"] = {key: _rubles(value, point_value) for key, value in row.items()
                          if key not in ("period_end", "ticks")}
        return row

    def columns(self) -> list[tuple[str, int]]:
        """The row as flat (column, points) pairs, for CSV and tables."""
        flat = [("opening", self.opening)]
        for measure in ORDER:
            if measure in BROKEN_DOWN:
                flat += [(f"{measure}_{detail}", points) for detail, points in self.movements[measure].items()]
            else:
                flat.append((measure, self.total(measure)))
        return flat + [("closing", self.closing)]


def _rubles(value: Any, point_value: Decimal) -> Any:
    if isinstance(value, dict):
        return {key: _rubles(v, point_value) for key, v in value.items()}
    return str((point_value * value).quantize(Decimal("0.01")))


class Books:
    """The books as the read models hold them."""

    def __init__(self, db: Database, names: Names | None = None):
        self.db = db
        self.names = names or Names()

    def closes(self) -> list[date]:
        """The as-of dates of the ticks that closed the books, in log order."""
        return [date.fromisoformat(as_of) for (as_of,) in
                self.db.query(f"SELECT as_of FROM {self.names.closes} ORDER BY seq")]

    def periods(self) -> list[Period]:
        """One row per closed period, in the order they closed."""
        sums: dict[str, dict[str, dict[str, int]]] = {}
        for period, measure, detail, points in self.db.query(
            f"SELECT period, measure, detail, points FROM {self.names.books} WHERE period <> ?", (OPEN,)
        ):
            sums.setdefault(period, {}).setdefault(measure, {})[detail] = int(points)
        rows, opening = [], 0
        for as_of in self.closes():
            movements = complete(sums.get(as_of.isoformat(), {}))
            row = Period(as_of, 1, opening, movements, opening + change(movements))
            rows.append(row)
            opening = row.closing
        return rows

    def open_period(self) -> dict[str, dict[str, int]]:
        """What has moved since the last close."""
        sums: dict[str, dict[str, int]] = {}
        for measure, detail, points in self.db.query(
            f"SELECT measure, detail, points FROM {self.names.books} WHERE period = ?", (OPEN,)
        ):
            sums.setdefault(measure, {})[detail] = int(points)
        return complete(sums)


def change(movements: dict[str, dict[str, int]]) -> int:
    """What these movements did to the sum of all balances."""
    return sum(SIGNS[measure] * sum(details.values()) for measure, details in movements.items())


def complete(movements: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Every measure present, the broken-down ones with all their usual keys."""
    result: dict[str, dict[str, int]] = {}
    for measure in ORDER:
        found = movements.get(measure, {})
        if measure in BROKEN_DOWN:
            keys = list(BROKEN_DOWN[measure]) + sorted(set(found) - set(BROKEN_DOWN[measure]))
            result[measure] = {key: found.get(key, 0) for key in keys}
        else:
            result[measure] = {"": sum(found.values())}
    return result


def by_month(periods: Iterable[Period]) -> list[Period]:
    """The tick periods gathered by the month of the day each closed (a tick
    as-of D closes the day before D): one row per month, ending on the first
    day of the next month, its opening the first tick's, its closing the
    last one's."""
    rows: list[Period] = []
    for period in periods:
        closed_day = period.period_end - timedelta(days=1)
        end = date.fromisoformat(shift_month(f"{closed_day.year:04d}-{closed_day.month:02d}", 1) + "-01")
        if rows and rows[-1].period_end == end:
            last = rows[-1]
            rows[-1] = Period(end, last.ticks + period.ticks, last.opening,
                              _merge(last.movements, period.movements), period.closing)
        else:
            rows.append(Period(end, period.ticks, period.opening, period.movements, period.closing))
    return rows


def _merge(a: dict[str, dict[str, int]], b: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    merged = {measure: dict(details) for measure, details in a.items()}
    for measure, details in b.items():
        target = merged.setdefault(measure, {})
        for detail, points in details.items():
            target[detail] = target.get(detail, 0) + points
    return merged


def within(periods: Iterable[Period], since: date | None, until: date | None) -> list[Period]:
    """The rows whose `period_end` is within [since, until]."""
    return [p for p in periods if (since is None or p.period_end >= since) and (until is None or p.period_end <= until)]
