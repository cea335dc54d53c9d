"""The member account: one aggregate per msisdn.

It holds the member's lots (rule 7), the monthly usage figure (rule 2), the
monthly card spend and what each card month earned (rule 5), events held
until enrollment (rule 1), what clawbacks could not collect (rule 8), and the
member's debits (rule 10: catalogue orders, shop discounts), so that a debit
can be cancelled back into the lots it came from.

Commands compute what happens with the pure helpers (`lots`, `rules`,
`calendar`) and then trigger one event that records only the result; the
events' `apply` methods only assign, so replay needs no clock and no rules.
Every event's timestamp is a moment of the programme (the source event's
`occurred_at` or the tick's moment), never the wall clock.
"""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from eventsourcing.domain import Aggregate

from engine import lots as lotbook
from engine.calendar import add_months, midnight, month_of, moscow_date, settlement_date, shift_month
from engine.errors import AlreadyEnrolledError, InsufficientPointsError, NotEnrolledError
from engine.ids import member_id
from engine.rules import RuleSet, points_for

USAGE, SHOP, MGTS, CARD, BALLYPLUS = "usage", "shop", "mgts", "card", "ballyplus"
BEFORE_ENROLLMENT = "before_enrollment"
TRANSFER = "transfer"  # the rule of a lot received from another member
DEBITED, CANCELLED = "debited", "cancelled"
OUT, IN = "out", "in"  # the two sides of a member-to-member transfer

_NET, _SETTLED = 0, 1  # positions in a card month: [net spend, points settled or None]


class MemberAccount(Aggregate):
    class Opened(Aggregate.Created):
        msisdn: str

    def __init__(self, msisdn: str):
        self.msisdn = msisdn
        self.enrolled_at: datetime | None = None
        self.channel: str | None = None
        self.held: list[dict[str, Any]] = []
        self.lots: list[lotbook.Lot] = []
        self.next_lot_id = 1
        self.balance = 0
        self.uncollected = 0
        self.usage_months: dict[str, Decimal] = {}
        self.card_months: dict[str, list] = {}
        self.debits: dict[str, dict[str, Any]] = {}

    @classmethod
    def open(cls, msisdn: str, at: datetime) -> MemberAccount:
        return cls._create(cls.Opened, id=member_id(msisdn), msisdn=msisdn, timestamp=at)

    # -- rule 1: membership ------------------------------------------------

    @property
    def is_enrolled(self) -> bool:
        return self.enrolled_at is not None

    def earns_at(self, moment: datetime) -> bool:
        """Only what happens at or after the enrollment time earns points."""
        return self.enrolled_at is not None and moment >= self.enrolled_at

    def enroll(self, source_event_id: str, enrolled_at: datetime, channel: str) -> list[dict[str, Any]]:
        """Opens the member's participation; returns the events held until now,
        in arrival order, for the caller to apply as if they arrived now."""
        self.check_not_enrolled(enrolled_at)
        held = list(self.held)
        self.trigger_event(
            self.MemberEnrolled,
            source_event_id=source_event_id,
            enrolled_at=enrolled_at,
            channel=channel,
            released=len(held),
            timestamp=enrolled_at,
        )
        return held

    def check_not_enrolled(self, enrolled_at: datetime) -> None:
        if self.enrolled_at is not None:
            raise AlreadyEnrolledError(
                f"member {self.msisdn} is enrolled since {self.enrolled_at.isoformat()}; "
                f"the enrollment at {enrolled_at.isoformat()} changes nothing"
            )

    class MemberEnrolled(Aggregate.Event):
        source_event_id: str
        enrolled_at: datetime
        channel: str
        released: int

        def apply(self, account: MemberAccount) -> None:
            account.enrolled_at = self.enrolled_at
            account.channel = self.channel
            account.held = []

    def hold(self, topic: str, source_event_id: str, occurred_at: datetime, message: dict[str, Any]) -> None:
        """An event for a member who is not enrolled yet: kept, not credited."""
        assert not self.is_enrolled
        self.trigger_event(
            self.EventHeld, topic=topic, source_event_id=source_event_id, message=message, timestamp=occurred_at
        )

    class EventHeld(Aggregate.Event):
        topic: str
        source_event_id: str
        message: dict

        def apply(self, account: MemberAccount) -> None:
            account.held.append({"topic": self.topic, "message": self.message})

    def record_not_eligible(self, source_event_id: str, kind: str, occurred_at: datetime) -> None:
        """An event from before the enrollment time: recorded, earns nothing."""
        self.trigger_event(
            self.NotEligible, source_event_id=source_event_id, kind=kind, reason=BEFORE_ENROLLMENT, timestamp=occurred_at
        )

    class NotEligible(Aggregate.Event):
        source_event_id: str
        kind: str
        reason: str

    # -- rule 2: communication services -------------------------------------

    def charge_usage(
        self, source_event_id: str, occurred_at: datetime, service: str, amount: Decimal, rules: RuleSet
    ) -> int:
        """Credits the increase of the month's floor(total / 5)."""
        month = month_of(occurred_at)
        before = self.usage_months.get(month, Decimal(0))
        rate = rules.usage_rubles_per_point
        points = points_for(before + amount, rate) - points_for(before, rate)
        basis = {"month": month, "service": service, "amount": amount}
        if points == 0:
            self.trigger_event(self.UsageCounted, source_event_id=source_event_id, basis=basis, timestamp=occurred_at)
        else:
            self._accrue(USAGE, points, moscow_date(occurred_at), rules, occurred_at, source_event_id, basis)
        return points

    class UsageCounted(Aggregate.Event):
        """A charge that did not lift the month's figure to a new whole point."""

        source_event_id: str
        basis: dict

        def apply(self, account: MemberAccount) -> None:
            account._count_usage(self.basis)

    def _count_usage(self, basis: dict) -> None:
        month = basis["month"]
        self.usage_months[month] = self.usage_months.get(month, Decimal(0)) + basis["amount"]

    # -- rules 3, 4, 6: credits decided elsewhere or at once -----------------

    def credit_receipt(
        self, source_event_id: str, receipt: str, points: int, occurred_at: datetime, rules: RuleSet
    ) -> None:
        if points > 0:
            basis = {"receipt_id": receipt}
            self._accrue(SHOP, points, moscow_date(occurred_at), rules, occurred_at, source_event_id, basis)

    def credit_mgts(
        self, mgts_account: str, period: str, points: int, rules: RuleSet, at: datetime
    ) -> None:
        settled_on = settlement_date(period, rules.mgts_settlement_day)
        basis = {"mgts_account": mgts_account, "period": period}
        self._accrue(MGTS, points, settled_on, rules, at, None, basis)

    def credit_ballyplus(
        self, source_event_id: str, partner_points: int, occurred_at: datetime, rules: RuleSet
    ) -> None:
        points = partner_points * rules.ballyplus_points_per_partner_point
        basis = {"partner_points": partner_points}
        self._accrue(BALLYPLUS, points, moscow_date(occurred_at), rules, occurred_at, source_event_id, basis)

    # -- rule 5: card spend and monthly settlement --------------------------

    def record_card_spend(
        self, source_event_id: str, occurred_at: datetime, card_id: str, amount: Decimal, kind: str
    ) -> None:
        """A purchase (positive amount) or refund (negative) in its month."""
        self.trigger_event(
            self.CardSpendRecorded,
            source_event_id=source_event_id,
            month=month_of(occurred_at),
            card_id=card_id,
            kind=kind,
            amount=amount,
            timestamp=occurred_at,
        )

    class CardSpendRecorded(Aggregate.Event):
        source_event_id: str
        month: str
        card_id: str
        kind: str
        amount: Decimal

        def apply(self, account: MemberAccount) -> None:
            month = account.card_months.setdefault(self.month, [Decimal(0), None])
            month[_NET] += self.amount

    def card_spend(self, month: str) -> Decimal:
        """spend(M): purchases minus refunds of the month, floored at 0."""
        entry = self.card_months.get(month)
        return max(entry[_NET], Decimal(0)) if entry else Decimal(0)

    def card_points_settled(self, month: str) -> int | None:
        entry = self.card_months.get(month)
        return entry[_SETTLED] if entry else None

    def settle_card_month(self, month: str, rules: RuleSet, at: datetime) -> int:
        """Settles (or re-settles) month M: floor(spend(M) / rate(spend(M-1)))
        minus what M already earned is credited or clawed back. Returns the
        difference."""
        settled_on = settlement_date(month, rules.card_settlement_day)
        assert midnight(settled_on) <= at, "a card month is settled on the 25th of the month after"
        spend, previous_spend = self.card_spend(month), self.card_spend(shift_month(month, -1))
        rate = rules.card_rubles_per_point(previous_spend)
        points = points_for(spend, rate)
        before = self.card_points_settled(month) or 0
        self.trigger_event(
            self.CardMonthSettled,
            month=month,
            spend=spend,
            previous_month_spend=previous_spend,
            rubles_per_point=rate,
            points=points,
            points_before=before,
            timestamp=at,
        )
        basis = {"month": month, "spend": spend, "rubles_per_point": rate}
        if points > before:
            self._accrue(CARD, points - before, settled_on, rules, at, None, basis)
        elif points < before:
            self.claw_back(before - points, "card_resettlement", None, at, basis)
        return points - before

    class CardMonthSettled(Aggregate.Event):
        month: str
        spend: Decimal
        previous_month_spend: Decimal
        rubles_per_point: Decimal
        points: int
        points_before: int

        def apply(self, account: MemberAccount) -> None:
            entry = account.card_months.setdefault(self.month, [Decimal(0), None])
            entry[_SETTLED] = self.points

    # -- rule 7 and 8: lots, expiry, clawbacks ------------------------------

    def _accrue(
        self,
        rule: str,
        points: int,
        lot_date: date,
        rules: RuleSet,
        at: datetime,
        source_event_id: str | None,
        basis: dict,
    ) -> None:
        assert points > 0, "a credit adds at least one point"
        self.trigger_event(
            self.PointsAccrued,
            rule=rule,
            points=points,
            lot_id=self.next_lot_id,
            lot_date=lot_date.isoformat(),
            expires_on=add_months(lot_date, rules.expiry_months).isoformat(),
            source_event_id=source_event_id,
            basis=basis,
            timestamp=at,
        )

    class PointsAccrued(Aggregate.Event):
        rule: str
        points: int
        lot_id: int
        lot_date: str
        expires_on: str
        source_event_id: str | None
        basis: dict

        def apply(self, account: MemberAccount) -> None:
            account.lots.append([self.lot_id, self.lot_date, self.expires_on, self.points])
            account.next_lot_id = self.lot_id + 1
            account.balance += self.points
            if self.rule == USAGE:
                account._count_usage(self.basis)

    def claw_back(self, points_due: int, reason: str, source_event_id: str | None, at: datetime, basis: dict) -> None:
        """Takes back what is due, up to the balance, first-to-expire lots
        first; what the balance cannot cover is recorded as uncollected."""
        assert points_due > 0
        points = min(points_due, self.balance)
        self.trigger_event(
            self.PointsClawedBack,
            points=points,
            points_due=points_due,
            uncollected=points_due - points,
            allocations=lotbook.allocate(self.lots, points),
            reason=reason,
            source_event_id=source_event_id,
            basis=basis,
            timestamp=at,
        )

    class PointsClawedBack(Aggregate.Event):
        points: int
        points_due: int
        uncollected: int
        allocations: list
        reason: str
        source_event_id: str | None
        basis: dict

        def apply(self, account: MemberAccount) -> None:
            account._debit(self.allocations, self.points)
            account.uncollected += self.uncollected

    def expire(self, as_of: date) -> int:
        """Removes the points left in lots whose expiry is at or before the
        tick (rule 9 runs this after settlements). Returns the points removed."""
        allocations = lotbook.expired(self.lots, as_of.isoformat())
        points = sum(points for _, points in allocations)
        if points:
            self.trigger_event(
                self.PointsExpired,
                points=points,
                allocations=allocations,
                as_of=as_of.isoformat(),
                timestamp=midnight(as_of),
            )
        return points

    class PointsExpired(Aggregate.Event):
        points: int
        allocations: list
        as_of: str

        def apply(self, account: MemberAccount) -> None:
            account._debit(self.allocations, self.points)

    def _debit(self, allocations: list, points: int) -> None:
        assert sum(allocation[1] for allocation in allocations) == points
        self.lots = lotbook.take(self.lots, allocations)
        self.balance -= points
        assert self.balance >= 0, "the balance is never negative"

    def _restore(self, portions: list, points: int) -> None:
        assert sum(portion[1] for portion in portions) == points
        self.lots = lotbook.restore(self.lots, portions)
        self.balance += points

    # -- rule 10: spending ------------------------------------------------------

    def check_enrolled(self) -> None:
        if not self.is_enrolled:
            raise NotEnrolledError(f"{self.msisdn} is not an enrolled member")

    def check_covers(self, points: int) -> None:
        """Spending never takes the balance below zero."""
        if points > self.balance:
            raise InsufficientPointsError(
                f"{self.msisdn} has {self.balance} points; {points} cannot be spent"
            )

    def _debit_records(self) -> dict[str, dict[str, Any]]:
        return self.__dict__.setdefault("debits", {})  # snapshots from before rule 10 have none

    def debit(self, debit_id: str) -> dict[str, Any] | None:
        return self._debit_records().get(debit_id)

    def redeem(
        self, debit_id: str, points: int, purpose: str, reference: dict, idempotency_key: str, at: datetime
    ) -> None:
        """A catalogue order or a shop discount: takes `points`, first-to-expire
        lots first, and remembers which lots, for a cancellation."""
        assert points > 0 and self.debit(debit_id) is None
        self.check_enrolled()
        self.check_covers(points)
        self.trigger_event(
            self.PointsRedeemed,
            debit_id=debit_id,
            points=points,
            purpose=purpose,
            reference=reference,
            idempotency_key=idempotency_key,
            allocations=lotbook.portions(self.lots, lotbook.allocate(self.lots, points)),
            timestamp=at,
        )

    class PointsRedeemed(Aggregate.Event):
        debit_id: str
        points: int
        purpose: str
        reference: dict
        idempotency_key: str
        allocations: list  # portions: [lot_id, points, lot_date, expires_on]

        def apply(self, account: MemberAccount) -> None:
            account._debit(self.allocations, self.points)
            account._debit_records()[self.debit_id] = {
                "purpose": self.purpose,
                "points": self.points,
                "reference": self.reference,
                "allocations": self.allocations,
                "status": DEBITED,
                "balance_after": account.balance,
                "created_at": self.timestamp.isoformat(),
            }

    def cancel(self, debit_id: str, at: datetime) -> None:
        """Gives a debit's points back to the lots they came from, with their
        expiry dates. Points of a lot whose expiry has passed by `at` are not
        given back: they would have expired in the balance (`lapsed`)."""
        debit = self.debit(debit_id)
        assert debit is not None and debit["status"] == DEBITED
        valid, lapsed = lotbook.split_lapsed(debit["allocations"], moscow_date(at).isoformat())
        self.trigger_event(
            self.PointsRestored,
            debit_id=debit_id,
            points=sum(portion[1] for portion in valid),
            purpose=debit["purpose"],
            reference=debit["reference"],
            allocations=valid,
            lapsed=lapsed,
            timestamp=at,
        )

    class PointsRestored(Aggregate.Event):
        debit_id: str
        points: int
        purpose: str
        reference: dict
        allocations: list
        lapsed: list

        def apply(self, account: MemberAccount) -> None:
            account._restore(self.allocations, self.points)
            debit = account._debit_records()[self.debit_id]
            debit["status"] = CANCELLED
            debit["balance_after"] = account.balance

    def send_transfer(self, transfer_id: str, recipient: str, points: int, at: datetime) -> list:
        """Holds `points` for a transfer offered to `recipient`: they leave the
        balance now, first-to-expire lots first. Returns the portions taken."""
        assert points > 0
        self.check_enrolled()
        self.check_covers(points)
        portions = lotbook.portions(self.lots, lotbook.allocate(self.lots, points))
        self.trigger_event(
            self.PointsTransferred,
            direction=OUT,
            transfer_id=transfer_id,
            counterpart=recipient,
            points=points,
            status="held",
            allocations=portions,
            lapsed=[],
            timestamp=at,
        )
        return portions

    def receive_transfer(self, transfer_id: str, sender: str, portions: list, at: datetime) -> int:
        """An accepted transfer: one new lot per sender lot, each with the
        sender lot's dates (so its expiry). Portions whose expiry passed while
        the transfer was pending are not credited. Returns the points credited."""
        self.check_enrolled()
        valid, lapsed = lotbook.split_lapsed(portions, moscow_date(at).isoformat())
        received = [
            [self.next_lot_id + n, points, lot_date, expires_on]
            for n, (_, points, lot_date, expires_on) in enumerate(valid)
        ]
        points = sum(portion[1] for portion in received)
        self.trigger_event(
            self.PointsTransferred,
            direction=IN,
            transfer_id=transfer_id,
            counterpart=sender,
            points=points,
            status="accepted",
            allocations=received,
            lapsed=lapsed,
            timestamp=at,
        )
        return points

    class PointsTransferred(Aggregate.Event):
        """Both sides of a transfer: `out` holds the sender's points (from the
        lots in `allocations`); `in` credits the recipient with new lots
        (`allocations` names the new lot ids, with the sender lots' dates)."""

        direction: str
        transfer_id: str
        counterpart: str
        points: int
        status: str
        allocations: list
        lapsed: list

        def apply(self, account: MemberAccount) -> None:
            if self.direction == OUT:
                account._debit(self.allocations, self.points)
                return
            for lot_id, points, lot_date, expires_on in self.allocations:
                account.lots.append([lot_id, lot_date, expires_on, points])
                account.next_lot_id = lot_id + 1
            account.balance += self.points

    def take_back_transfer(
        self, transfer_id: str, recipient: str, portions: list, reason: str, at: datetime
    ) -> int:
        """A transfer declined or timed out: the held points go back to the
        sender's same lots, except those whose expiry has passed meanwhile."""
        valid, lapsed = lotbook.split_lapsed(portions, moscow_date(at).isoformat())
        points = sum(portion[1] for portion in valid)
        self.trigger_event(
            self.TransferReturned,
            transfer_id=transfer_id,
            counterpart=recipient,
            points=points,
            reason=reason,
            allocations=valid,
            lapsed=lapsed,
            timestamp=at,
        )
        return points

    class TransferReturned(Aggregate.Event):
        transfer_id: str
        counterpart: str
        points: int
        reason: str  # "declined" | "timed_out"
        allocations: list
        lapsed: list

        def apply(self, account: MemberAccount) -> None:
            account._restore(self.allocations, self.points)
