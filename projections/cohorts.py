"""Breakage: what became of the points of each cohort of lots.

IFRS 15 B42 asks for the expected breakage (the points that will never be
redeemed), estimated from how past points were used and updated as the
estimate changes. A cohort is the lots whose lot date falls in one month.
For each cohort the read model `rm_cohorts` keeps the points of each flow
(`FLOWS`), attributed by the lot they came from or went back to; the report
derives what was redeemed, what is in flight between members, what was
clawed back, what expired and what is still outstanding.

Points move between members with their lots' dates (rule 10), so a transfer
keeps points in their cohort. Points whose lot expired while they were held
for a transfer or a cancelled order come back to no one: they count as
expired (`transfer_lapsed`, `restored_lapsed`).

The loyalty team's adjustments (issue 13) are flows of their own: a credit's
lot is in the cohort of its lot date (`adjusted_in`), a debit takes from the
cohorts of the lots it draws from (`adjusted_out`). They are not "issued":
the breakage rate is expired ÷ issued, issued by the programme's rules, so
that the estimate learns how members use what the rules give them, not how
often staff corrected someone. (Points an adjustment credited that later
expire are still counted as expired: a lot is a lot.)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Iterable

from engine.calendar import shift_month
from projections.db import Database, Transaction
from projections.tables import Names

# The flows kept per cohort. Each is attributed to the lot it names.
FLOWS = ("issued", "redeemed", "restored", "restored_lapsed", "transferred_out", "transferred_in", "returned",
         "transfer_lapsed", "clawed_back", "expired", "adjusted_in", "adjusted_out")

RECENT_CLOSED = 12  # closed cohorts the estimate learns from: the latest twelve


@dataclass
class CohortBookings:
    """A batch's flows: by lot date when the event names it, otherwise by
    (member, lot id), whose lot date the write looks up in `rm_lots`."""

    dated: dict[tuple[str, str], int] = field(default_factory=dict)  # (cohort, flow) -> points
    undated: dict[tuple[str, int, str], int] = field(default_factory=dict)  # (msisdn, lot id, flow) -> points

    def dated_flow(self, lot_date: str, flow: str, points: int) -> None:
        if points:
            key = (lot_date[:7], flow)
            self.dated[key] = self.dated.get(key, 0) + points

    def lot_flow(self, msisdn: str, lot_id: int, flow: str, points: int) -> None:
        if points:
            key = (msisdn, lot_id, flow)
            self.undated[key] = self.undated.get(key, 0) + points

    def write(self, tx: Transaction, names: Names) -> None:
        """After the batch's lots are written (a lot may open and expire in one batch)."""
        upsert = (f" ON CONFLICT (cohort, flow) DO UPDATE SET points = {names.cohorts}.points + excluded.points")
        tx.executemany(
            f"INSERT INTO {names.cohorts} (cohort, flow, points) VALUES (?, ?, ?)" + upsert,
            [(cohort, flow, points) for (cohort, flow), points in self.dated.items()],
        )
        tx.executemany(
            f"INSERT INTO {names.cohorts} (cohort, flow, points) SELECT substr(lot_date, 1, 7), ?, ? "
            f"FROM {names.lots} WHERE msisdn = ? AND lot_id = ?" + upsert,
            [(flow, points, msisdn, lot_id) for (msisdn, lot_id, flow), points in self.undated.items()],
        )


def book_line(bookings: CohortBookings, msisdn: str, kind: str, points: int, lot_date: str | None,
              detail: dict[str, Any]) -> None:
    """The cohort flows of one history line: an accrual's points to its lot's
    cohort; the lots another line took or gave back (in its `detail`) to
    theirs."""
    if kind == "accrued":
        assert lot_date is not None, "an accrual opens a lot"
        bookings.dated_flow(lot_date, "issued", points)
        return
    if kind == "adjusted":  # either way: the line's lots say which cohorts
        for entry in detail.get("lots", ()):
            _flow(bookings, msisdn, entry, "adjusted_in" if points > 0 else "adjusted_out")
        return
    flows = _FLOWS_OF.get(kind)
    if flows is None:
        return
    main, lapsed = flows
    for entry in detail.get("lots", ()):
        _flow(bookings, msisdn, entry, main)
    for entry in detail.get("lapsed", ()):
        _flow(bookings, msisdn, entry, lapsed)


_FLOWS_OF = {
    "redeemed": ("redeemed", None),
    "restored": ("restored", "restored_lapsed"),
    "transfer_out": ("transferred_out", None),
    "transfer_in": ("transferred_in", "transfer_lapsed"),
    "transfer_returned": ("returned", "transfer_lapsed"),
    "clawed_back": ("clawed_back", None),
    "expired": ("expired", None),
}


def _flow(bookings: CohortBookings, msisdn: str, entry: list, flow: str | None) -> None:
    assert flow is not None, "only restorations and transfers have lapsed lots"
    if len(entry) == 4:  # [lot_id, points, lot_date, expires_on]: a portion names its date
        bookings.dated_flow(entry[2], flow, entry[1])
    else:  # [lot_id, points]: an allocation of the member's own lot
        bookings.lot_flow(msisdn, entry[0], flow, entry[1])


def fill_from_history(tx: Transaction, names: Names, page: int = 20_000) -> None:
    """Cohorts for a store whose read models were built before them: the
    same flows, read from the history lines (and, for lots a line names by id
    only, the lot's date from `rm_lots`), page by page. The caller holds the
    projector's position; cohorts that have any row are left alone."""
    if tx.query(f"SELECT 1 FROM {names.cohorts} LIMIT 1"):
        return
    kinds = ("accrued", "adjusted", *_FLOWS_OF)
    marks = ", ".join("?" * len(kinds))
    after: tuple[str, int] = ("", -1)
    while True:
        rows = tx.query(
            f"SELECT msisdn, version, kind, points, lot_date, detail FROM {names.history} "
            f"WHERE kind IN ({marks}) AND (msisdn > ? OR (msisdn = ? AND version > ?)) ORDER BY msisdn, version LIMIT ?",
            (*kinds, after[0], after[0], after[1], page),
        )
        if not rows:
            return
        bookings = CohortBookings()
        for msisdn, _, kind, points, lot_date, detail in rows:
            book_line(bookings, msisdn, kind, int(points), lot_date, json.loads(detail))
        bookings.write(tx, names)
        after = (rows[-1][0], int(rows[-1][1]))


# -- the report -------------------------------------------------------------------


@dataclass(frozen=True)
class Cohort:
    """One month of lot dates and what became of its points."""

    month: str  # YYYY-MM
    flows: dict[str, int]

    @property
    def issued(self) -> int:
        return self.flows.get("issued", 0)

    @property
    def redeemed(self) -> int:
        """Spent for good: debits less what cancelled debits gave back (or
        would have, had the lot not expired meanwhile)."""
        f = self.flows.get
        return f("redeemed", 0) - f("restored", 0) - f("restored_lapsed", 0)

    @property
    def in_transfer(self) -> int:
        """Held for transfers members have not answered yet."""
        f = self.flows.get
        return f("transferred_out", 0) - f("transferred_in", 0) - f("returned", 0) - f("transfer_lapsed", 0)

    @property
    def transferred(self) -> int:
        """Points of the cohort that moved to another member (and kept their lot date)."""
        return self.flows.get("transferred_in", 0)

    @property
    def clawed_back(self) -> int:
        return self.flows.get("clawed_back", 0)

    @property
    def expired(self) -> int:
        f = self.flows.get
        return f("expired", 0) + f("transfer_lapsed", 0) + f("restored_lapsed", 0)

    @property
    def adjusted(self) -> int:
        """What the loyalty team's adjustments added (+) or took (−), net."""
        f = self.flows.get
        return f("adjusted_in", 0) - f("adjusted_out", 0)

    @property
    def outstanding(self) -> int:
        return self.issued + self.adjusted - self.redeemed - self.in_transfer - self.clawed_back - self.expired

    def closed_by(self, last_tick: date | None) -> bool:
        """Every lot of the cohort has expired or been used: a tick as-of the
        first day of the 13th month after it has run (a lot dated on the last
        day of the month expires by then), so nothing can come back to it."""
        return last_tick is not None and last_tick.isoformat()[:7] >= shift_month(self.month, 13)


@dataclass(frozen=True)
class BreakageReport:
    cohorts: list[Cohort]
    last_tick: date | None
    learned_from: list[str]  # the closed cohorts the estimate's rate comes from
    rate: Decimal | None  # their expired / issued

    METHOD = (
        "rate of a closed cohort = expired / issued; estimate for an open cohort = the pooled rate of the "
        f"latest {RECENT_CLOSED} closed cohorts (their expired / their issued) x its issued points, less what "
        "has expired already, between 0 and its outstanding points; none while no cohort is closed"
    )

    def rows(self) -> list[dict[str, Any]]:
        result = []
        for cohort in self.cohorts:
            closed = cohort.closed_by(self.last_tick)
            row: dict[str, Any] = {
                "cohort": cohort.month, "closed": closed, "issued": cohort.issued, "redeemed": cohort.redeemed,
                "transferred": cohort.transferred, "in_transfer": cohort.in_transfer,
                "clawed_back": cohort.clawed_back, "expired": cohort.expired, "adjusted": cohort.adjusted,
                "outstanding": cohort.outstanding,
                "breakage_rate": str(_ratio(cohort.expired, cohort.issued)) if closed and cohort.issued else None,
                "expected_breakage": None,
            }
            if not closed and self.rate is not None:
                expected = int((self.rate * cohort.issued).to_integral_value(ROUND_HALF_EVEN)) - cohort.expired
                row["expected_breakage"] = min(max(expected, 0), cohort.outstanding)
            result.append(row)
        return result

    def as_dict(self) -> dict[str, Any]:
        return {
            "last_tick": self.last_tick.isoformat() if self.last_tick else None,
            "method": self.METHOD,
            "estimate": {"rate": str(self.rate) if self.rate is not None else None, "learned_from": self.learned_from},
            "cohorts": self.rows(),
        }


def _ratio(part: int, whole: int) -> Decimal:
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"), ROUND_HALF_EVEN)


class Cohorts:
    """The cohorts as the read models hold them."""

    def __init__(self, db: Database, names: Names | None = None):
        self.db = db
        self.names = names or Names()

    def all(self) -> list[Cohort]:
        flows: dict[str, dict[str, int]] = {}
        for cohort, flow, points in self.db.query(
            f"SELECT cohort, flow, points FROM {self.names.cohorts} ORDER BY cohort, flow"
        ):
            flows.setdefault(cohort, {})[flow] = int(points)
        return [Cohort(month, found) for month, found in flows.items()]

    def report(self) -> BreakageReport:
        rows = self.db.query(f"SELECT MAX(as_of) FROM {self.names.closes}")
        last_tick = date.fromisoformat(rows[0][0]) if rows and rows[0][0] else None
        return breakage(self.all(), last_tick)


def breakage(cohorts: Iterable[Cohort], last_tick: date | None) -> BreakageReport:
    cohorts = list(cohorts)
    closed = [c for c in cohorts if c.closed_by(last_tick) and c.issued][-RECENT_CLOSED:]
    issued = sum(c.issued for c in closed)
    rate = _ratio(sum(c.expired for c in closed), issued) if issued else None
    return BreakageReport(cohorts, last_tick, [c.month for c in closed], rate)
