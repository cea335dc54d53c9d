"""MGTS fixed-line accounts (rule 4): the linked msisdn, the bills of each
period, and what each period earned when it was settled on the 15th."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from eventsourcing.domain import Aggregate

from engine.calendar import midnight, settlement_date
from engine.ids import mgts_account_id
from engine.rules import RuleSet, points_for



@dataclass(frozen=True, slots=True)
class Link:
    linked_at: datetime
    msisdn: str


@dataclass(frozen=True, slots=True)
class Period:
    """A billing period: the bills' total, the points it has earned, and the
    total its last settlement saw (None: not settled yet)."""

    total: Decimal
    earned: int = 0
    settled_total: Decimal | None = None


class MgtsAccount(Aggregate):
    class_version = 2

    class Opened(Aggregate.Created):
        mgts_account: str

    def __init__(self, mgts_account: str):
        self.mgts_account = mgts_account
        self.msisdn: str | None = None  # the latest link, by occurred_at
        self.linked_at: datetime | None = None
        self.links: list[Link] = []  # in order of linked_at
        self.periods: dict[str, Period] = {}

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """A snapshot of version 1: links and periods as lists."""
        state["links"] = [Link(linked_at, msisdn) for linked_at, msisdn in state["links"]]
        state["periods"] = {p: Period(*entry) for p, entry in state["periods"].items()}

    @classmethod
    def open(cls, mgts_account: str, at: datetime) -> MgtsAccount:
        return cls._create(cls.Opened, id=mgts_account_id(mgts_account), mgts_account=mgts_account, timestamp=at)

    def link(self, source_event_id: str, msisdn: str, linked_at: datetime) -> None:
        """A later link replaces the earlier one; "later" is by `occurred_at`,
        so a link that arrives late does not undo a newer one. The history of
        links is kept: a period earns for the msisdn linked at its
        settlement moment."""
        self.trigger_event(self.Linked, source_event_id=source_event_id, msisdn=msisdn, linked_at=linked_at, timestamp=linked_at)

    class Linked(Aggregate.Event):
        source_event_id: str
        msisdn: str
        linked_at: datetime

        def apply(self, account: MgtsAccount) -> None:
            account.links.append(Link(self.linked_at, self.msisdn))
            account.links.sort(key=lambda link: link.linked_at)
            account.linked_at, account.msisdn = account.links[-1].linked_at, account.links[-1].msisdn

    def record_bill(self, source_event_id: str, period: str, amount: Decimal, occurred_at: datetime) -> None:
        self.trigger_event(self.BillRecorded, source_event_id=source_event_id, period=period, amount=amount, timestamp=occurred_at)

    class BillRecorded(Aggregate.Event):
        source_event_id: str
        period: str
        amount: Decimal

        def apply(self, account: MgtsAccount) -> None:
            period = account.periods.get(self.period) or Period(Decimal(0))
            account.periods[self.period] = replace(period, total=period.total + self.amount)

    def settlement_due(self, period: str, rules: RuleSet) -> datetime:
        return midnight(settlement_date(period, rules.mgts_settlement_day))

    def needs_settlement(self, period: str) -> bool:
        """A period with bills that its last settlement has not seen."""
        entry = self.periods.get(period)
        return entry is not None and entry.settled_total != entry.total

    def beneficiary(self, period: str, rules: RuleSet) -> str | None:
        """Rule 4: the msisdn linked at the settlement moment; if there was
        no link yet then, the settlement waited for one: the current link."""
        due = self.settlement_due(period, rules)
        at_settlement = [link.msisdn for link in self.links if link.linked_at <= due]
        return at_settlement[-1] if at_settlement else self.msisdn

    def settle(self, period: str, msisdn: str, enrolled_at: datetime, rules: RuleSet, at: datetime) -> int:
        """Settles the period for its beneficiary `msisdn` (enrolled at
        `enrolled_at`): floor(total / 5) minus what it already earned. A
        member enrolled after the settlement moment is not eligible: the
        period is closed with nothing credited. Returns the points to credit."""
        assert msisdn == self.beneficiary(period, rules)
        due = self.settlement_due(period, rules)
        assert due <= at, "an MGTS period is settled on the 15th of the month after"
        total, earned = self.periods[period].total, self.periods[period].earned
        eligible = enrolled_at <= due
        points = points_for(total, rules.mgts_rubles_per_point) if eligible else earned
        self.trigger_event(
            self.PeriodSettled,
            period=period,
            msisdn=msisdn,
            total=total,
            eligible=eligible,
            points=points,
            points_before=earned,
            timestamp=at,
        )
        assert points >= earned, "bills only add to a period"
        return points - earned

    class PeriodSettled(Aggregate.Event):
        period: str
        msisdn: str
        total: Decimal
        eligible: bool
        points: int
        points_before: int

        def apply(self, account: MgtsAccount) -> None:
            entry = account.periods[self.period]
            account.periods[self.period] = replace(entry, earned=self.points, settled_total=self.total)
