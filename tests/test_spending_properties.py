"""Property of rule 10 over random sequences (hypothesis, stateful): credits,
debits (some for more than the balance, some repeated with their key),
cancellations, transfers offered, accepted, declined or left to time out,
the loyalty team's adjustments either way (issue 13), and ticks that return
and expire. After every step, for every member: the
balance is never negative and is the sum of the lots, in the aggregate and
in the read models alike, and the history adds up to it; no point is made
or lost: what was credited is what members hold, plus what is held in
pending transfers, spent in debits not cancelled, expired or lapsed; the
lots the outbound points events say they changed add up to their points,
and fold into the lots of the read model (issue 14). At the end, audit
finds no difference.

Examples: `ACCRUAL_HYPOTHESIS_EXAMPLES` (default 40); steps per run:
`ACCRUAL_HYPOTHESIS_STEPS` (default 40)."""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from datetime import date, datetime, timedelta

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from accrual.publisher import Publisher
from accrual.runtime import Runtime
from engine.calendar import MOSCOW, midnight
from engine.errors import InsufficientPoints, TransferExpired
from schemas import PointsEventMessage
from tests.conftest import settings_for
from tests.kafka_support import names_for
from tests.programme import Programme
from tests.test_outbound_lots import fold, publish, read_model_lots

MEMBERS = ("79990005001", "79990005002", "79990005003")
START = date(2026, 1, 1)
EXAMPLES = int(os.environ.get("ACCRUAL_HYPOTHESIS_EXAMPLES", "40"))
STEPS = int(os.environ.get("ACCRUAL_HYPOTHESIS_STEPS", "40"))

members = st.sampled_from(MEMBERS)


class SpendingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="accrual-spend-")
        self.runtime = Runtime(settings_for(f"sqlite:///{self.directory}/accrual.sqlite3"))
        self.p = Programme(self.runtime)
        self.app = self.runtime.app
        self.now = midnight(START) + timedelta(hours=10)
        self.keys = 0
        self.debits: list[tuple[str, str]] = []  # (msisdn, debit_id)
        self.transfers: list[str] = []
        self.pending: list[str] = []  # offered, not answered by this machine yet
        self.credited = 0
        self.publisher = Publisher(self.app, self.runtime.db, names_for("spend."))
        self.published: list[PointsEventMessage] = []
        for msisdn in MEMBERS:
            self.p.enroll(msisdn, "2026-01-01 00:00")

    def teardown(self) -> None:
        try:
            for msisdn in MEMBERS:  # what the run exercised (--hypothesis-show-statistics)
                for line in self.runtime.reads.history(msisdn):
                    event(f"history: {line['kind']} ({line['rule'] or line['reason']})")
                    if line["detail"].get("lapsed"):
                        event("points lapsed while away from their lot")
            assert self.runtime.audit() == []
        finally:
            self.runtime.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    def key(self) -> str:
        self.keys += 1
        return f"key-{self.keys}"

    def later(self, minutes: int) -> datetime:
        self.now += timedelta(minutes=minutes)
        return self.now

    @rule(msisdn=members, points=st.integers(1, 40), days_ago=st.integers(0, 200))
    def credit(self, msisdn: str, points: int, days_ago: int) -> None:
        """Баллы Плюс: a lot dated up to 200 days back, so some expire soon."""
        occurred = max(self.later(1) - timedelta(days=days_ago), midnight(START) + timedelta(hours=1))
        self.p.ballyplus(msisdn, points, occurred.astimezone(MOSCOW).strftime("%Y-%m-%dT%H:%M:00+03:00"))
        self.credited += points

    @rule(msisdn=members, points=st.integers(1, 60), purpose=st.sampled_from(("order", "pos")), repeat=st.booleans())
    def debit(self, msisdn: str, points: int, purpose: str, repeat: bool) -> None:
        balance = self.app.member(msisdn).balance
        key, when = self.key(), self.later(5)
        try:
            result = self.app.debit(msisdn, points, purpose=purpose, idempotency_key=key, reference={}, at=when)
        except InsufficientPoints:
            assert points > balance
            assert self.app.member(msisdn).balance == balance
            return
        assert points <= balance and result.balance_after == balance - points
        self.debits.append((msisdn, result.debit_id))
        if repeat:
            again = self.app.debit(msisdn, points, purpose=purpose, idempotency_key=key, reference={}, at=when)
            assert again.duplicate and again.debit_id == result.debit_id
            assert self.app.member(msisdn).balance == balance - points

    @rule(msisdn=members, points=st.integers(-60, 40).filter(bool), repeat=st.booleans())
    def adjust(self, msisdn: str, points: int, repeat: bool) -> None:
        """A staff adjustment: a credit opens a lot, a debit never goes below zero."""
        balance = self.app.member(msisdn).balance
        key, when = self.key(), self.later(5)

        def call():
            return self.app.adjust(msisdn, points, adjustment_id=key, reason="a correction by the team",
                                   requested_by="olga", approved_by="ivan", at=when)
        try:
            result = call()
        except InsufficientPoints:
            assert -points > balance
            assert self.app.member(msisdn).balance == balance
            return
        assert result.balance_after == balance + points >= 0
        self.credited += points  # an adjustment's credit is a credit, its debit is gone for good
        if repeat:
            assert call() == replace(result, duplicate=True)
            assert self.app.member(msisdn).balance == balance + points

    @precondition(lambda self: self.debits)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        msisdn, debit_id = data.draw(st.sampled_from(self.debits))
        self.app.cancel_debit(msisdn, debit_id, at=self.later(5))

    @rule(sender=members, recipient=members, points=st.integers(1, 30))
    def offer(self, sender: str, recipient: str, points: int) -> None:
        if sender == recipient:
            return
        balance = self.app.member(sender).balance
        try:
            transfer = self.app.offer_transfer(sender, recipient, points, idempotency_key=self.key(), at=self.later(5))
        except InsufficientPoints:
            assert points > balance
            return
        self.transfers.append(transfer.transfer_id)
        self.pending.append(transfer.transfer_id)

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), accept=st.booleans(), hours=st.integers(0, 30))
    def answer(self, data: st.DataObject, accept: bool, hours: int) -> None:
        transfer = self.app.transfer(data.draw(st.sampled_from(self.pending)))
        self.pending.remove(transfer.transfer_id)
        if transfer.status != "pending":
            return
        when = self.later(60 * hours + 1)
        try:
            if accept:
                self.app.accept_transfer(transfer.transfer_id, transfer.recipient, at=when)
            else:
                self.app.decline_transfer(transfer.transfer_id, transfer.recipient, at=when)
        except TransferExpired:
            assert accept and when >= transfer.expires_at

    @rule(days=st.integers(1, 120))
    def tick(self, days: int) -> None:
        day = (self.now + timedelta(days=days)).astimezone(MOSCOW).date()
        self.p.tick(day.isoformat())
        self.now = midnight(day) + timedelta(minutes=1)
        for transfer_id in self.transfers:
            transfer = self.app.transfer(transfer_id)
            assert not (transfer.status == "pending" and transfer.expires_at <= midnight(day))

    @invariant()
    def balances_add_up(self) -> None:
        self.runtime.projector.catch_up()
        expired = lapsed = spent = 0
        for msisdn in MEMBERS:
            account = self.app.member(msisdn)
            lots = self.runtime.reads.lots(msisdn)
            history = self.runtime.reads.history(msisdn)
            assert account.balance >= 0
            assert account.balance == sum(lot.remaining for lot in account.lots)
            assert account.balance == self.runtime.reads.member(msisdn)["balance"]
            assert account.balance == sum(lot["remaining"] for lot in lots)
            assert account.balance == sum(line["points"] for line in history)
            for line in history:
                expired += -line["points"] if line["kind"] == "expired" else 0
                lapsed += sum(portion[1] for portion in line["detail"].get("lapsed", []))
            spent += sum(d["points"] for d in self.runtime.reads.debits_of(msisdn) if d["status"] == "debited")
        pending = self.runtime.db.query("SELECT COALESCE(SUM(points), 0) FROM rm_transfers WHERE status = 'pending'")
        held = int(pending[0][0])
        total = sum(self.app.member(m).balance for m in MEMBERS)
        assert self.credited == total + held + spent + expired + lapsed

    @invariant()
    def published_lots_are_the_read_models(self) -> None:
        """What a subscriber of the points events keeps is the engine's lots."""
        new = publish(self.runtime, self.publisher)
        assert all(sum(change.points for change in m.lots) == m.points for m in new)
        self.published += new
        assert fold(self.published) == read_model_lots(self.runtime)


TestSpending = SpendingMachine.TestCase
TestSpending.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
