"""The member account: one aggregate per msisdn.

It holds the member's lots (rule 7), the monthly usage figure (rule 2), the
monthly card spend and what each card month earned (rule 5), events held
until enrollment (rule 1), what clawbacks could not collect (rule 8), and the
member's debits (rule 10: catalogue orders, shop discounts), so that a debit
can be cancelled back into the lots it came from, and the balance after each
adjustment the loyalty team applied (issue 13), so that a repeated request
is answered as the first was.

Commands compute what happens with the pure helpers (`lots`, `rules`,
`calendar`) and then trigger one event that records only the result. Every
event states its `effect` on the points (`engine.effects`): `apply` takes
that effect, then `record` keeps what else the event says. So replay needs
no clock and no rules, and the read models and the publisher read the same
effect instead of doing the arithmetic again. Every event's timestamp is a
moment of the programme (the source event's `occurred_at` or the tick's
moment), never the wall clock.

Stored shapes: version 2 of the events and of the snapshots holds value
objects (`Lot`, `Allocation`, `Portion`, `CardMonth`, ...) where version 1
held positional lists; the `upcast_v1_v2` methods read version 1. Version 3
of the snapshots adds the adjustments (`upcast_v2_v3`: none before).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from eventsourcing.domain import Aggregate

from engine import lots as lotbook
from engine.calendar import add_months, midnight, month_of, moscow_date, settlement_date, shift_month
from engine.effects import NO_EFFECT, Effect, credit, debit, give_back
from engine.errors import AlreadyEnrolledError, InsufficientPointsError, InvalidAmountError, NotEnrolledError
from engine.ids import member_id
from engine.lots import Allocation, Lot, Portion
from engine.rules import RuleSet, points_for

USAGE, SHOP, MGTS, CARD, BALLYPLUS = "usage", "shop", "mgts", "card", "ballyplus"
BEFORE_ENROLLMENT = "before_enrollment"
TRANSFER = "transfer"  # the rule of a lot received from another member
DEBITED, CANCELLED = "debited", "cancelled"
OUT, IN = "out", "in"  # the two sides of a member-to-member transfer
ADJUSTMENT = "adjustment"  # the rule of a lot a staff adjustment opens, and the reason every adjustment gives


@dataclass(frozen=True, slots=True)
class HeldMessage:
    """An inbound message kept until the member enrolls (rule 1)."""

    topic: str
    message: dict


@dataclass(frozen=True, slots=True)
class CardMonth:
    """A month of card spend: purchases minus refunds, and the points its
    last settlement gave (None: not settled yet)."""

    net: Decimal
    settled: int | None = None

    @property
    def spend(self) -> Decimal:
        """spend(M), floored at 0."""
        return max(self.net, Decimal(0))


@dataclass(frozen=True, slots=True)
class DebitRecord:
    """A debit as the account remembers it, so that it can be cancelled
    back into the lots it came from."""

    purpose: str
    points: int
    reference: dict
    portions: tuple[Portion, ...]
    status: str  # DEBITED | CANCELLED
    balance_after: int
    created_at: datetime


def _portions(items: list) -> tuple[Portion, ...]:
    """Version-1 portions: [lot_id, points, lot_date, expires_on]."""
    return tuple(Portion(i, p, date.fromisoformat(d), date.fromisoformat(e)) for i, p, d, e in items)


def _allocations(items: list) -> tuple[Allocation, ...]:
    """Version-1 allocations: [lot_id, points]."""
    return tuple(Allocation(i, p) for i, p in items)


class MemberAccount(Aggregate):
    class_version = 3

    class Event(Aggregate.Event):
        @property
        def effect(self) -> Effect:
            raise NotImplementedError(f"{type(self).__qualname__} does not state its effect on the points")

        def apply(self, account: MemberAccount) -> None:
            effect = self.effect
            if effect is not NO_EFFECT:
                account.lots = effect.apply_to(account.lots)
                account.balance += effect.points
                account.uncollected += effect.uncollected
                for lot in effect.opened:
                    account.next_lot_id = max(account.next_lot_id, lot.lot_id + 1)
                assert account.balance >= 0, "the balance is never negative"
            self.record(account)

        def record(self, account: MemberAccount) -> None:
            """What the event keeps beside the points."""

    class Opened(Aggregate.Created):
        msisdn: str
        effect = NO_EFFECT

    def __init__(self, msisdn: str):
        self.msisdn = msisdn
        self.enrolled_at: datetime | None = None
        self.channel: str | None = None
        self.held: list[HeldMessage] = []
        self.lots: list[Lot] = []
        self.next_lot_id = 1
        self.balance = 0
        self.uncollected = 0
        self.usage_months: dict[str, Decimal] = {}
        self.card_months: dict[str, CardMonth] = {}
        self.debits: dict[str, DebitRecord] = {}
        self.adjustments: dict[str, int] = {}  # adjustment id -> the balance right after it

    @classmethod
    def open(cls, msisdn: str, at: datetime) -> MemberAccount:
        return cls._create(cls.Opened, id=member_id(msisdn), msisdn=msisdn, timestamp=at)

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """A snapshot of version 1: lots, card months, held events and debits
        as lists and dicts."""
        state["lots"] = [Lot(i, date.fromisoformat(d), date.fromisoformat(e), r) for i, d, e, r in state["lots"]]
        state["held"] = [HeldMessage(h["topic"], h["message"]) for h in state["held"]]
        state["card_months"] = {m: CardMonth(net, settled) for m, (net, settled) in state["card_months"].items()}
        state["debits"] = {  # snapshots from before rule 10 have none
            debit_id: DebitRecord(
                purpose=d["purpose"], points=d["points"], reference=d["reference"],
                portions=_portions(d["allocations"]), status=d["status"], balance_after=d["balance_after"],
                created_at=datetime.fromisoformat(d["created_at"]),
            )
            for debit_id, d in state.get("debits", {}).items()
        }

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        """A snapshot from before adjustments (issue 13) has none."""
        state["adjustments"] = {}

    # -- rule 1: membership ------------------------------------------------

    @property
    def is_enrolled(self) -> bool:
        return self.enrolled_at is not None

    def earns_at(self, moment: datetime) -> bool:
        """Only what happens at or after the enrollment time earns points."""
        return self.enrolled_at is not None and moment >= self.enrolled_at

    def enroll(self, source_event_id: str, enrolled_at: datetime, channel: str) -> list[HeldMessage]:
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

    class MemberEnrolled(Event):
        source_event_id: str
        enrolled_at: datetime
        channel: str
        released: int
        effect = NO_EFFECT

        def record(self, account: MemberAccount) -> None:
            account.enrolled_at = self.enrolled_at
            account.channel = self.channel
            account.held = []

    def hold(self, topic: str, source_event_id: str, occurred_at: datetime, message: dict[str, Any]) -> None:
        """An event for a member who is not enrolled yet: kept, not credited."""
        assert not self.is_enrolled
        self.trigger_event(
            self.EventHeld, topic=topic, source_event_id=source_event_id, message=message, timestamp=occurred_at
        )

    class EventHeld(Event):
        topic: str
        source_event_id: str
        message: dict
        effect = NO_EFFECT

        def record(self, account: MemberAccount) -> None:
            account.held.append(HeldMessage(self.topic, self.message))

    def record_not_eligible(self, source_event_id: str, kind: str, occurred_at: datetime) -> None:
        """An event from before the enrollment time: recorded, earns nothing."""
        self.trigger_event(
            self.NotEligible, source_event_id=source_event_id, kind=kind, reason=BEFORE_ENROLLMENT, timestamp=occurred_at
        )

    class NotEligible(Event):
        source_event_id: str
        kind: str
        reason: str
        effect = NO_EFFECT

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

    class UsageCounted(Event):
        """A charge that did not lift the month's figure to a new whole point."""

        source_event_id: str
        basis: dict
        effect = NO_EFFECT

        def record(self, account: MemberAccount) -> None:
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

    class CardSpendRecorded(Event):
        source_event_id: str
        month: str
        card_id: str
        kind: str
        amount: Decimal
        effect = NO_EFFECT

        def record(self, account: MemberAccount) -> None:
            month = account.card_months.get(self.month) or CardMonth(Decimal(0))
            account.card_months[self.month] = replace(month, net=month.net + self.amount)

    def card_spend(self, month: str) -> Decimal:
        """spend(M): purchases minus refunds of the month, floored at 0."""
        entry = self.card_months.get(month)
        return entry.spend if entry else Decimal(0)

    def card_points_settled(self, month: str) -> int | None:
        entry = self.card_months.get(month)
        return entry.settled if entry else None

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

    class CardMonthSettled(Event):
        """What the month earns in all (`points`); the credit or clawback of
        the difference is the next event."""

        month: str
        spend: Decimal
        previous_month_spend: Decimal
        rubles_per_point: Decimal
        points: int
        points_before: int
        effect = NO_EFFECT

        def record(self, account: MemberAccount) -> None:
            month = account.card_months.get(self.month) or CardMonth(Decimal(0))
            account.card_months[self.month] = replace(month, settled=self.points)

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
        lot = Lot(self.next_lot_id, lot_date, add_months(lot_date, rules.expiry_months), points)
        self.trigger_event(
            self.PointsAccrued, rule=rule, lot=lot, source_event_id=source_event_id, basis=basis, timestamp=at
        )

    class PointsAccrued(Event):
        """A credit: a new lot of `lot.remaining` points."""

        class_version = 2
        rule: str
        lot: Lot
        source_event_id: str | None
        basis: dict

        @property
        def effect(self) -> Effect:
            return credit((self.lot,), self.rule)

        @property
        def points(self) -> int:
            return self.lot.remaining

        def record(self, account: MemberAccount) -> None:
            if self.rule == USAGE:
                account._count_usage(self.basis)

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["lot"] = Lot(
                state.pop("lot_id"), date.fromisoformat(state.pop("lot_date")),
                date.fromisoformat(state.pop("expires_on")), state.pop("points"),
            )

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

    class PointsClawedBack(Event):
        class_version = 2
        points: int
        points_due: int
        uncollected: int
        allocations: tuple[Allocation, ...]
        reason: str
        source_event_id: str | None
        basis: dict

        @property
        def effect(self) -> Effect:
            return debit(tuple(self.allocations), self.uncollected)

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["allocations"] = _allocations(state["allocations"])

    def expire(self, as_of: date) -> int:
        """Removes the points left in lots whose expiry is at or before the
        tick (rule 9 runs this after settlements). Returns the points removed."""
        allocations = lotbook.expired(self.lots, as_of)
        points = lotbook.points_of(allocations)
        if points:
            self.trigger_event(
                self.PointsExpired, points=points, allocations=allocations, as_of=as_of, timestamp=midnight(as_of)
            )
        return points

    class PointsExpired(Event):
        class_version = 2
        points: int
        allocations: tuple[Allocation, ...]
        as_of: date

        @property
        def effect(self) -> Effect:
            return debit(tuple(self.allocations))

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["allocations"] = _allocations(state["allocations"])
            state["as_of"] = date.fromisoformat(state["as_of"])

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

    def debit(self, debit_id: str) -> DebitRecord | None:
        return self.debits.get(debit_id)

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
            portions=lotbook.portions(self.lots, lotbook.allocate(self.lots, points)),
            timestamp=at,
        )

    class PointsRedeemed(Event):
        class_version = 2
        debit_id: str
        points: int
        purpose: str
        reference: dict
        idempotency_key: str
        portions: tuple[Portion, ...]

        @property
        def effect(self) -> Effect:
            return debit(tuple(p.allocation for p in self.portions))

        def record(self, account: MemberAccount) -> None:
            account.debits[self.debit_id] = DebitRecord(
                purpose=self.purpose, points=self.points, reference=self.reference,
                portions=tuple(self.portions), status=DEBITED, balance_after=account.balance,
                created_at=self.timestamp,
            )

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["portions"] = _portions(state.pop("allocations"))

    def cancel(self, debit_id: str, at: datetime) -> None:
        """Gives a debit's points back to the lots they came from, with their
        expiry dates. Points of a lot whose expiry has passed by `at` are not
        given back: they would have expired in the balance (`lapsed`)."""
        debit = self.debit(debit_id)
        assert debit is not None and debit.status == DEBITED
        valid, lapsed = lotbook.split_lapsed(debit.portions, moscow_date(at))
        self.trigger_event(
            self.PointsRestored,
            debit_id=debit_id,
            points=lotbook.points_of(valid),
            purpose=debit.purpose,
            reference=debit.reference,
            portions=valid,
            lapsed=lapsed,
            timestamp=at,
        )

    class PointsRestored(Event):
        class_version = 2
        debit_id: str
        points: int
        purpose: str
        reference: dict
        portions: tuple[Portion, ...]
        lapsed: tuple[Portion, ...]

        @property
        def effect(self) -> Effect:
            return give_back(tuple(self.portions))

        def record(self, account: MemberAccount) -> None:
            record = account.debits[self.debit_id]
            account.debits[self.debit_id] = replace(record, status=CANCELLED, balance_after=account.balance)

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["portions"] = _portions(state.pop("allocations"))
            state["lapsed"] = _portions(state["lapsed"])

    def send_transfer(self, transfer_id: str, recipient: str, points: int, at: datetime) -> tuple[Portion, ...]:
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
            portions=portions,
            lapsed=(),
            timestamp=at,
        )
        return portions

    def receive_transfer(self, transfer_id: str, sender: str, portions: tuple[Portion, ...], at: datetime) -> int:
        """An accepted transfer: one new lot per sender lot, each with the
        sender lot's dates (so its expiry). Portions whose expiry passed while
        the transfer was pending are not credited. Returns the points credited."""
        self.check_enrolled()
        valid, lapsed = lotbook.split_lapsed(portions, moscow_date(at))
        received = tuple(
            Portion(self.next_lot_id + n, p.points, p.lot_date, p.expires_on) for n, p in enumerate(valid)
        )
        points = lotbook.points_of(received)
        self.trigger_event(
            self.PointsTransferred,
            direction=IN,
            transfer_id=transfer_id,
            counterpart=sender,
            points=points,
            status="accepted",
            portions=received,
            lapsed=lapsed,
            timestamp=at,
        )
        return points

    class PointsTransferred(Event):
        """Both sides of a transfer: `out` holds the sender's points (from the
        lots in `portions`); `in` credits the recipient with new lots
        (`portions` names the new lot ids, with the sender lots' dates)."""

        class_version = 2
        direction: str
        transfer_id: str
        counterpart: str
        points: int
        status: str
        portions: tuple[Portion, ...]
        lapsed: tuple[Portion, ...]

        @property
        def effect(self) -> Effect:
            if self.direction == OUT:
                return debit(tuple(p.allocation for p in self.portions))
            return credit(tuple(Lot(p.lot_id, p.lot_date, p.expires_on, p.points) for p in self.portions), TRANSFER)

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["portions"] = _portions(state.pop("allocations"))
            state["lapsed"] = _portions(state["lapsed"])

    def take_back_transfer(
        self, transfer_id: str, recipient: str, portions: tuple[Portion, ...], reason: str, at: datetime
    ) -> int:
        """A transfer declined or timed out: the held points go back to the
        sender's same lots, except those whose expiry has passed meanwhile."""
        valid, lapsed = lotbook.split_lapsed(portions, moscow_date(at))
        points = lotbook.points_of(valid)
        self.trigger_event(
            self.TransferReturned,
            transfer_id=transfer_id,
            counterpart=recipient,
            points=points,
            reason=reason,
            portions=valid,
            lapsed=lapsed,
            timestamp=at,
        )
        return points

    class TransferReturned(Event):
        class_version = 2
        transfer_id: str
        counterpart: str
        points: int
        reason: str  # "declined" | "timed_out"
        portions: tuple[Portion, ...]
        lapsed: tuple[Portion, ...]

        @property
        def effect(self) -> Effect:
            return give_back(tuple(self.portions))

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["portions"] = _portions(state.pop("allocations"))
            state["lapsed"] = _portions(state["lapsed"])

    # The news of a transfer on the other member's account (issue 14): a
    # subscriber keeps each member's state on the member's own key, so what
    # happened to a transfer must be an event of the account it concerns, in
    # that account's order. They move no points: the offer's points are held
    # on the sender's account (`PointsTransferred` out) until they are
    # credited (`PointsTransferred` in) or given back (`TransferReturned`),
    # and the account keeps nothing of them (a pending transfer is a
    # `MemberTransfer`), so snapshots do not change.

    def record_transfer_offer_received(
        self, transfer_id: str, sender: str, points: int, expires_at: datetime, at: datetime
    ) -> None:
        """A transfer offered to this member, to accept before `expires_at`."""
        assert points > 0 and self.is_enrolled, "a transfer is offered only to an enrolled member"
        self.trigger_event(
            self.TransferOfferReceived, transfer_id=transfer_id, sender=sender, points=points,
            expires_at=expires_at, timestamp=at,
        )

    class TransferOfferReceived(Event):
        transfer_id: str
        sender: str
        points: int  # offered: held on the sender's account, not in this balance
        expires_at: datetime  # the offer stands until then (not included)
        effect = NO_EFFECT

    def record_transfer_accepted(self, transfer_id: str, recipient: str, points: int, at: datetime) -> None:
        """A transfer this member sent was accepted by `recipient`."""
        assert points > 0
        self.trigger_event(self.TransferAccepted, transfer_id=transfer_id, recipient=recipient, points=points,
                           timestamp=at)

    class TransferAccepted(Event):
        transfer_id: str
        recipient: str
        points: int  # sent (left this balance at the offer); the recipient's `in` says what was credited
        effect = NO_EFFECT

    # -- issue 13: adjustments by the loyalty team ----------------------------------

    def adjust(
        self,
        adjustment_id: str,
        points: int,
        reason: str,
        requested_by: str,
        approved_by: str | None,
        at: datetime,
        rules: RuleSet,
    ) -> None:
        """A correction the loyalty team applies: a credit (points > 0) opens a
        lot dated the Moscow day of `at` that expires as any credit of that
        day would; a debit (points < 0) takes from the first-to-expire lots,
        as spending does, and never takes the balance below zero. A
        correction is a new entry, never an edit of an old one."""
        assert adjustment_id not in self.adjustments, "the application answers a repeated adjustment"
        if points == 0:
            raise InvalidAmountError("an adjustment moves at least one point, up or down")
        self.check_enrolled()
        lot: Lot | None = None
        portions: tuple[Portion, ...] = ()
        if points > 0:
            lot_date = moscow_date(at)
            lot = Lot(self.next_lot_id, lot_date, add_months(lot_date, rules.expiry_months), points)
        else:
            self.check_covers(-points)
            portions = lotbook.portions(self.lots, lotbook.allocate(self.lots, -points))
        self.trigger_event(
            self.PointsAdjusted,
            adjustment_id=adjustment_id,
            points=points,
            reason=reason,
            requested_by=requested_by,
            approved_by=approved_by,
            lot=lot,
            portions=portions,
            timestamp=at,
        )

    def adjustment(self, adjustment_id: str) -> int | None:
        """The balance right after this adjustment, or None if it was never applied."""
        return self.adjustments.get(adjustment_id)

    class PointsAdjusted(Event):
        """A staff adjustment: `points` signed; a credit's new `lot`, or the
        `portions` a debit took. `reason` is the staff's own text, for the
        back office; what goes out of the engine says only "adjustment"."""

        adjustment_id: str
        points: int
        reason: str
        requested_by: str
        approved_by: str | None  # None: small enough to apply without a second pair of eyes
        lot: Lot | None
        portions: tuple[Portion, ...]

        @property
        def effect(self) -> Effect:
            if self.lot is not None:
                return credit((self.lot,), ADJUSTMENT)
            return debit(tuple(p.allocation for p in self.portions))

        def record(self, account: MemberAccount) -> None:
            account.adjustments[self.adjustment_id] = account.balance
