"""Property tests over random event sequences (RULES.md, EVENTS.md).

Everything goes through the test driver (`tests.programme.Programme`): real
JSON lines through the file ingester's edge, ticks, and the read models; a
fresh SQLite store per example.

1. `AccrualMachine` (stateful): three members, two MGTS accounts and ~14
   months of enrollments (early, late, twice, never), usage charges, card
   purchases and refunds (also in months settled already), shop purchases
   and returns (within, all, beyond what is left, other member's, unknown
   receipts), MGTS links and bills (also late), Баллы Плюс transfers,
   duplicates, conflicting duplicates, malformed lines and increasing ticks
   (the 15th, the 25th, expiry dates, a year on). After every step, for
   every member: the balance is never negative; the read model's balance is
   the aggregate's; the points of the history add up to the balance, and so
   do the lots (read model and aggregate alike); replaying the history's
   credits and debits through rules 7 and 8 (first to expire first; a
   clawback takes min(due, balance)) gives the read model's lots; no message
   made the engine fail (`internal_error`). After every tick no lot that
   expired by it holds points, and the books agree (docs/books.md): the
   last closing plus what moved since is the sum of balances, the log gives
   the same balances at the tick, and so do the cohorts' outstanding points. Many small usage charges credit exactly the
   increase of the month's figure (rule 2).
2. Re-sending any prefix of what was sent (in any batches), any single
   earlier line, or an earlier message in other bytes, is counted as
   duplicates only and changes nothing (read models and event log); the same
   tick repeated with nothing sent between changes nothing (rule 9).
3. `test_enrollment_order_does_not_matter`: the same lines with the
   enrollments sent first, last, or where they were generated (in random
   batches) give the same balances and lots, before and after the same ticks
   (rule 1: a held event is applied as if it had arrived at the enrollment).
4. `runtime.audit()` finds no difference, `runtime.replay()` rebuilds the
   same balances, lots and history, and an engine opened afresh on the store
   rebuilds the same aggregates (a rule of the machine; audit and replay
   also at the end of every scenario of 3).

The number of examples is `ACCRUAL_HYPOTHESIS_EXAMPLES` (default 40); the
steps per stateful run `ACCRUAL_HYPOTHESIS_STEPS` (default 40). Add
`--hypothesis-show-statistics` to see what the runs exercised.
"""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections import Counter
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Iterator

from eventsourcing.application import AggregateNotFoundError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from accrual.runtime import Runtime
from engine.calendar import month_of, shift_month
from engine.ids import member_id, mgts_account_id, receipt_id
from projections.cohorts import Cohorts
from tests.conftest import settings_for
from tests.programme import Programme
from tests.strategies import (
    MALFORMED_KINDS,
    kopecks_of,
    MEMBERS,
    MGTS_ACCOUNTS,
    Line,
    Messages,
    card_amounts,
    cards,
    channels,
    conflicting,
    encode,
    link_targets,
    members,
    mgts_accounts,
    mgts_amounts,
    minutes_of_day,
    money,
    month_of_day,
    partner_points,
    reformatted,
    rubles,
    scenarios,
    services,
    shop_amounts,
    tick_dates,
    timestamp,
    usage_amounts,
)

EXAMPLES = int(os.environ.get("ACCRUAL_HYPOTHESIS_EXAMPLES", "40"))
STEPS = int(os.environ.get("ACCRUAL_HYPOTHESIS_STEPS", "40"))

settings.register_profile(
    "accrual-properties",
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
PROFILE = settings.get_profile("accrual-properties")

START = date(2026, 1, 1)


# -- a fresh engine per example ----------------------------------------------------------


@contextmanager
def fresh_programme() -> Iterator[Programme]:
    directory = tempfile.mkdtemp(prefix="accrual-prop-")
    runtime = Runtime(settings_for(f"sqlite:///{directory}/accrual.sqlite3"))
    try:
        yield Programme(runtime)
    finally:
        runtime.close()
        shutil.rmtree(directory, ignore_errors=True)


# -- observations -----------------------------------------------------------------------


def snapshot(p: Programme) -> dict[str, Any]:
    """Everything a member, an auditor or an operator can see in the read
    models (one catch-up, then plain reads)."""
    reads = p.runtime.reads
    p.runtime.projector.catch_up()
    state: dict[str, Any] = {"balances": reads.balances()}
    for msisdn in MEMBERS:
        state[msisdn] = {"member": reads.member(msisdn), "lots": reads.lots(msisdn), "history": reads.history(msisdn)}
    state["rejections"] = reads.rejections_by_reason()
    state["held"] = reads.held_count()
    return state


def events_recorded(p: Programme) -> int:
    return p.runtime.app.recorder.max_notification_id() or 0


def check_accounts(p: Programme) -> None:
    """Property 1 for every member. The first assertion is the check of
    `Programme.balance` (read model == aggregate), made here with one
    catch-up and one aggregate read per member, for speed."""
    reads = p.runtime.reads
    p.runtime.projector.catch_up()
    assert "internal_error" not in reads.rejections_by_reason(), "the engine failed on a message"
    balances = reads.balances()
    for msisdn in MEMBERS:
        row = reads.member(msisdn)
        account = p.runtime.app.member(msisdn)
        balance = 0 if row is None else row["balance"]
        aggregate = 0 if account is None else account.balance
        assert balance == aggregate, f"{msisdn}: read model {balance} != aggregate {aggregate}"
        assert (row is None) == (account is None), f"{msisdn}: read model row {row}, aggregate {account}"
        assert balance >= 0, f"{msisdn}: negative balance {balance}"
        history = reads.history(msisdn)
        assert sum(entry["points"] for entry in history) == balance, (
            f"{msisdn}: history sums to {sum(e['points'] for e in history)}, balance is {balance}"
        )
        lots = reads.lots(msisdn)
        assert sum(lot["remaining"] for lot in lots) == balance, (
            f"{msisdn}: lots hold {sum(lot['remaining'] for lot in lots)}, balance is {balance}"
        )
        check_lot_book(msisdn, history, lots)
        if account is None:
            assert msisdn not in balances
            continue
        assert sum(lot.remaining for lot in account.lots) == account.balance
        assert all(lot.remaining > 0 for lot in account.lots)
        assert sorted(
            (lot.lot_id, lot.lot_date.isoformat(), lot.expires_on.isoformat(), lot.remaining) for lot in account.lots
        ) == sorted(
            (lot["lot_id"], lot["lot_date"], lot["expires_on"], lot["remaining"]) for lot in lots
        ), f"{msisdn}: aggregate lots {account.lots} != read model lots {lots}"
        assert account.uncollected == row["uncollected"] >= 0
        if account.is_enrolled:
            assert balances.get(msisdn) == balance
        else:
            assert balance == 0 and msisdn not in balances


def check_lot_book(msisdn: str, history: list[dict[str, Any]], lots: list[dict[str, Any]]) -> None:
    """Rules 7 and 8 replayed from the history alone: every credit forms a
    lot; a clawback takes min(due, balance) (the rest is uncollected) from
    the lots that expire first (ties: credited first); an expiry takes all
    that is left in the lots expiring on or before its date. The lots that
    follow are the read model's lots."""
    book: dict[int, list] = {}  # lot_id -> [expires_on, remaining]
    for entry in history:
        kind, detail = entry["kind"], entry["detail"]
        if kind == "accrued":
            assert entry["points"] > 0 and entry["lot_id"] not in book
            book[entry["lot_id"]] = [entry["expires_on"], entry["points"]]
            continue
        if kind not in ("clawed_back", "expired"):
            assert entry["points"] == 0, entry
            continue
        taken = -entry["points"]
        balance = sum(remaining for _, remaining in book.values())
        if kind == "clawed_back":
            assert taken == min(detail["points_due"], balance), f"{msisdn}: clawback {entry} of balance {balance}"
            assert detail["uncollected"] == detail["points_due"] - taken, entry
            expected, wanted = [], taken
            for lot_id, (_, remaining) in sorted(book.items(), key=lambda item: (item[1][0], item[0])):
                if wanted and remaining:
                    expected.append([lot_id, min(wanted, remaining)])
                    wanted -= min(wanted, remaining)
            assert detail["lots"] == expected, f"{msisdn}: clawback {entry} should take {expected} (first to expire)"
        else:
            expected = sorted(
                [lot_id, remaining]
                for lot_id, (expires_on, remaining) in book.items()
                if remaining and expires_on <= detail["as_of"]
            )
            assert sorted(detail["lots"]) == expected, f"{msisdn}: expiry {entry} should take {expected}"
        assert sum(points for _, points in detail["lots"]) == taken, entry
        for lot_id, points in detail["lots"]:
            book[lot_id][1] -= points
            assert book[lot_id][1] >= 0, entry
    assert sorted((lot_id, remaining) for lot_id, (_, remaining) in book.items() if remaining) == sorted(
        (lot["lot_id"], lot["remaining"]) for lot in lots
    ), f"{msisdn}: the history's lots {book} are not the read model's {lots}"


def check_audit_and_replay(p: Programme) -> None:
    """Property 4."""
    differences = p.runtime.audit()
    assert differences == [], f"audit found differences: {differences}"
    before = snapshot(p)
    p.runtime.replay()
    after = snapshot(p)
    assert after == before, "replay rebuilt other read models"


def _state(aggregate: Any) -> dict[str, Any] | None:
    if aggregate is None:
        return None
    return {key: value for key, value in vars(aggregate).items() if key != "_pending_events"}


def _get(app: Any, aggregate_id: Any) -> Any:
    try:
        return app.repository.get(aggregate_id)
    except AggregateNotFoundError:
        return None


def check_aggregates_rebuilt(p: Programme, url: str, receipts: list[str]) -> None:
    """Property 4 for the write side: an engine opened afresh on the same
    store (empty cache: aggregates rebuilt from the event log and snapshots)
    holds the same member, MGTS and receipt aggregates as the live one."""
    live = p.runtime.app
    with Runtime(settings_for(url)) as other:
        ids = [member_id(m) for m in MEMBERS] + [mgts_account_id(a) for a in MGTS_ACCOUNTS]
        ids += [receipt_id(r) for r in receipts]
        for aggregate_id in ids:
            assert _state(_get(other.app, aggregate_id)) == _state(_get(live, aggregate_id)), (
                f"aggregate {aggregate_id} rebuilt from the store differs from the live one"
            )


def resend(p: Programme, lines: list[bytes], batch_sizes: list[int] | None = None) -> Counter:
    """Sends `lines` again, in batches; returns the summed outcomes."""
    outcomes: Counter = Counter()
    rejected: Counter = Counter()
    sizes = iter(batch_sizes or [])
    position = 0
    while position < len(lines):
        size = next(sizes, len(lines))
        chunk = lines[position:position + max(size, 1)]
        position += len(chunk)
        report = p.send(*chunk)
        outcomes.update(report.outcomes)
        rejected.update(report.rejected)
    assert not rejected, f"re-sent lines were rejected anew: {dict(rejected)}"
    return outcomes


# -- 1, 2 and 4: the stateful test --------------------------------------------------------


class AccrualMachine(RuleBasedStateMachine):
    """A programme over ~14 months. `clock` is today's date: events occur
    around it (up to 45 days before, so some arrive after their month or
    period was settled, and up to 30 days after the last tick); ticks move it
    forward."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="accrual-prop-")
        self.url = f"sqlite:///{self.directory}/accrual.sqlite3"
        self.runtime = Runtime(settings_for(self.url))
        self.p = Programme(self.runtime)
        self.m = Messages()
        self.clock = START
        self.last_tick: date | None = None
        self.closed_days: set[date] = set()
        self.sent_since_tick = False
        self.sent: list[bytes] = []  # every line sent, in order
        self.seen: set[bytes] = set()
        self.originals: list[dict[str, Any]] = []  # valid messages, first of their event_id
        self.receipts: dict[str, tuple[str, dict[str, int]]] = {}  # receipt -> (owner, line -> kopecks)

    def teardown(self) -> None:
        try:
            _coverage_events(self.p)
        finally:
            self.runtime.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------

    def when(self, data: st.DataObject, earliest: int = -45, latest: int = 30) -> str:
        day = self.clock + timedelta(days=data.draw(st.integers(earliest, latest), label="days from clock"))
        return timestamp(day, data.draw(minutes_of_day, label="minute"), data.draw(st.booleans(), label="utc"))

    def send_new(self, message: dict[str, Any]) -> Any:
        raw = encode(message)
        report = self.p.send(raw)
        self.sent_since_tick = True
        if raw not in self.seen:
            assert report.outcomes["duplicate"] == 0, f"a new message counted as duplicate: {report}"
            assert sum(report.outcomes.values()) == 1, report
        self.originals.append(message)
        self.sent.append(raw)
        self.seen.add(raw)
        return report

    def send_raw(self, raw: bytes) -> Any:
        report = self.p.send(raw)
        self.sent_since_tick = True
        self.sent.append(raw)
        self.seen.add(raw)
        return report

    def tick_to(self, day: date) -> None:
        assert day >= self.clock
        again = day == self.last_tick and not self.sent_since_tick
        before, log = (snapshot(self.p), events_recorded(self.p)) if again else (None, None)
        self.p.tick(day.isoformat())
        if again:
            # Rule 9: the same tick twice changes nothing. (Only with nothing
            # sent between: a late bill or card event sent after a tick is
            # settled by the next tick, even one of the same date, rules 4, 5.)
            assert snapshot(self.p) == before, f"the tick of {day} repeated changed the state"
            assert events_recorded(self.p) == log, f"the tick of {day} repeated recorded events"
        closes_day = day not in self.closed_days
        self.closed_days.add(day)
        self.clock = day
        self.last_tick = day
        self.sent_since_tick = False
        # The books (issue 12): the last closed period's closing plus what
        # moved since equals the sum of all balances; right after a tick that
        # closed its day nothing has moved since, and the log alone gives the
        # same balances.
        books = self.p.books()
        balances = self.p.balances()
        assert books, "a tick closes the books"
        assert books[-1].closing + self.p.moved_since_last_close() == sum(balances.values())
        if closes_day:
            assert books[-1].period_end == day and self.p.moved_since_last_close() == 0
            assert self.p.balances_at_tick(day.isoformat()) == balances
        for earlier, later in itertools.pairwise(books):
            assert later.opening == earlier.closing
        # and the cohorts' outstanding points are all the balances
        cohorts = Cohorts(self.runtime.db).all()
        assert sum(c.outstanding for c in cohorts) == sum(balances.values())
        # Rule 7/9: after the tick nothing is left in a lot that expired by it.
        self.runtime.projector.catch_up()
        for msisdn in MEMBERS:
            for lot_date, expires_on, remaining in self.p.lots(msisdn):
                assert expires_on > day.isoformat(), (
                    f"{msisdn}: lot of {lot_date} expiring {expires_on} still holds {remaining} "
                    f"after the tick of {day}"
                )

    # -- inbound messages ------------------------------------------------------------

    @initialize(
        enrollments=st.lists(
            st.tuples(members, st.integers(-30, 60), minutes_of_day, channels), unique_by=lambda e: e[0], min_size=1, max_size=3
        ),
        links=st.lists(st.tuples(mgts_accounts, link_targets), unique_by=lambda e: e[0], max_size=2),
    )
    def enroll_some(self, enrollments: list[tuple[str, int, int, str]], links: list[tuple[str, str]]) -> None:
        """One to three members enroll at the start (at a time up to 30 days before or
        60 days after it: what they spend before that earns nothing), and
        some MGTS accounts are linked."""
        for msisdn, days, minute, channel in enrollments:
            at = timestamp(START + timedelta(days=days), minute)
            self.send_new(self.m.make("member_enrolled", at, msisdn=msisdn, channel=channel))
        for account, msisdn in links:
            self.send_new(self.m.make("mgts_account_linked", timestamp(START), mgts_account=account, msisdn=msisdn))

    @rule(msisdn=members, channel=channels, data=st.data())
    def enroll(self, msisdn: str, channel: str, data: st.DataObject) -> None:
        """Enrollments come early, late (after the member's spends were held)
        or never; a second one is `already_enrolled`."""
        at = self.when(data, -60, 10)
        was_enrolled = (account := self.runtime.app.member(msisdn)) is not None and account.is_enrolled
        report = self.send_new(self.m.make("member_enrolled", at, msisdn=msisdn, channel=channel))
        if was_enrolled:
            assert report.rejected == Counter({"already_enrolled": 1}), report

    @rule(msisdn=members, charges=st.lists(st.tuples(services, usage_amounts), min_size=1, max_size=3), data=st.data())
    def usage(self, msisdn: str, charges: list[tuple[str, str]], data: st.DataObject) -> None:
        """One to three charges of a member (each its own message)."""
        for service, amount in charges:
            self.send_new(self.m.make("usage_charged", self.when(data), msisdn=msisdn, service=service, amount=amount))

    @rule(
        msisdn=members,
        count=st.integers(5, 80),
        amount=st.one_of(st.sampled_from(("0.01", "1.25", "2.50", "4.99")), money("0.01", "9.99")),
        chunk=st.integers(1, 80),
        data=st.data(),
    )
    def many_small_charges(self, msisdn: str, count: int, amount: str, chunk: int, data: st.DataObject) -> None:
        """Rule 2: one charge split into many small events never loses points:
        `count` charges of `amount` at one moment (sent in batches of `chunk`)
        credit floor((F + S) / 5) - floor(F / 5), F the month's figure before,
        S their sum. Also takes accounts past the snapshot interval."""
        at = self.when(data, -20, 20)
        messages = [
            encode(self.m.make("usage_charged", at, msisdn=msisdn, service="mobile", amount=amount)) for _ in range(count)
        ]
        account = self.runtime.app.member(msisdn)
        eligible = account is not None and account.earns_at(datetime.fromisoformat(at))
        month = month_of(datetime.fromisoformat(at))
        figure = account.usage_months.get(month, Decimal(0)) if eligible else Decimal(0)
        before = account.balance if account is not None else 0
        for start in range(0, count, chunk):
            report = self.p.send(*messages[start:start + chunk])
            assert report.outcomes["duplicate"] == 0 and not report.rejected, report
        self.sent.extend(messages)
        self.seen.update(messages)
        self.sent_since_tick = True
        if eligible:
            total = Decimal(amount) * count
            expected = int((figure + total) // 5) - int(figure // 5)
            after = self.runtime.app.member(msisdn).balance
            assert after - before == expected, (
                f"{count} charges of {amount} in {month} (figure {figure} before) credited {after - before}, "
                f"not {expected}"
            )

    @rule(
        msisdn=members,
        payments=st.lists(st.tuples(st.booleans(), cards, card_amounts), min_size=1, max_size=3),
        in_a_settled_month=st.booleans(),
        data=st.data(),
    )
    def card(
        self, msisdn: str, payments: list[tuple[bool, str, str]], in_a_settled_month: bool, data: st.DataObject
    ) -> None:
        """One to three card purchases (False) or refunds (True) of a member;
        with `in_a_settled_month`, in a month that was settled already, so
        the next tick re-settles it, and the month after if that was settled
        (rule 5). (The engine's state only picks the month.)"""
        account = self.runtime.app.member(msisdn)
        settled = sorted(
            month for month, entry in (account.card_months.items() if account else ()) if entry.settled is not None
        )
        for refund, card, amount in payments:
            if in_a_settled_month and settled:
                month = data.draw(st.sampled_from(settled), label="settled card month")
                day = date(int(month[:4]), int(month[5:]), data.draw(st.integers(1, 28), label="day"))
                at = timestamp(day, data.draw(minutes_of_day, label="minute"))
            else:
                at = self.when(data)
            kind = "card_refund" if refund else "card_purchase"
            self.send_new(self.m.make(kind, at, msisdn=msisdn, card_id=card, amount=amount))

    @rule(
        msisdn=members,
        lines=st.lists(st.tuples(st.sampled_from(("mts_branded", "other", "excluded")), shop_amounts), min_size=1, max_size=3),
        data=st.data(),
    )
    def shop_purchase(self, msisdn: str, lines: list[tuple[str, str]], data: st.DataObject) -> None:
        receipt = self.m.new_receipt_id()
        body = [{"line_id": f"L{i}", "category": c, "amount": a} for i, (c, a) in enumerate(lines, 1)]
        self.receipts[receipt] = (msisdn, {b["line_id"]: kopecks_of(b["amount"]) for b in body})
        self.send_new(
            self.m.make("shop_purchase", self.when(data), msisdn=msisdn, store_id="S1", receipt_id=receipt, lines=body)
        )

    @rule(unknown_receipt=st.integers(0, 3).map(lambda n: n == 0), data=st.data())
    def shop_return(self, unknown_receipt: bool, data: st.DataObject) -> None:
        """A return of some lines of a known receipt: within what is left
        (as far as the returns applied so far go), all of it, or beyond; now
        and then by another member or naming a line not on the receipt. Or
        a return for a receipt that no purchase named."""
        if unknown_receipt or not self.receipts:
            self.return_unknown_receipt(data)
            return
        receipt = data.draw(st.sampled_from(sorted(self.receipts)), label="receipt")
        owner, left = self.receipts[receipt]
        msisdn = owner if data.draw(st.integers(0, 4), label="other member if 0") else data.draw(members)
        chosen = data.draw(st.lists(st.sampled_from(sorted(left)), min_size=1, unique=True), label="lines")
        body = []
        for line_id in chosen:
            mode = data.draw(st.sampled_from(("part", "all", "beyond")), label=f"{line_id} mode")
            if mode == "part" and left[line_id] > 0:
                kopecks = data.draw(st.integers(1, left[line_id]), label="kopecks")
            elif mode == "all" and left[line_id] > 0:
                kopecks = left[line_id]
            else:
                kopecks = left[line_id] + data.draw(st.integers(1, 10_000), label="kopecks beyond")
            body.append({"line_id": line_id, "amount": rubles(kopecks)})
        if data.draw(st.integers(0, 9), label="unknown line if 0") == 0:
            body.append({"line_id": "L9", "amount": "1.00"})
        report = self.send_new(
            self.m.make("shop_return", self.when(data, -10, 30), msisdn=msisdn, store_id="S1", receipt_id=receipt, lines=body)
        )
        event(f"return of a known receipt: {sorted(report.outcomes.elements())} {sorted(report.rejected)}")
        if report.outcomes["applied"]:
            for line in body:
                left[line["line_id"]] -= kopecks_of(line["amount"])
                assert left[line["line_id"]] >= 0, f"a return beyond the line was applied: {body} ({report})"

    def return_unknown_receipt(self, data: st.DataObject) -> None:
        msisdn = data.draw(members, label="member")
        account = self.runtime.app.member(msisdn)
        enrolled = account is not None and account.is_enrolled
        receipt = f"R-unknown-{data.draw(st.integers(1, 3), label='unknown receipt')}"
        report = self.send_new(
            self.m.make(
                "shop_return", self.when(data), msisdn=msisdn, store_id="S1", receipt_id=receipt,
                lines=[{"line_id": "L1", "amount": "10.00"}],
            )
        )
        if enrolled:
            assert report.rejected == Counter({"unknown_receipt": 1}), report
        else:
            assert report.outcomes == Counter({"held": 1}), report

    @rule(account=mgts_accounts, msisdn=link_targets, data=st.data())
    def link_mgts(self, account: str, msisdn: str, data: st.DataObject) -> None:
        self.send_new(self.m.make("mgts_account_linked", self.when(data), mgts_account=account, msisdn=msisdn))

    @rule(account=mgts_accounts, months_back=st.integers(0, 4), amount=mgts_amounts, data=st.data())
    def mgts_bill(self, account: str, months_back: int, amount: str, data: st.DataObject) -> None:
        """A bill for this month or one of the four before (late when its
        period was settled on the 15th already); with `months_back` 4, a
        bill for a period the engine has settled, if there is one (rule 4)."""
        period = shift_month(month_of_day(self.clock), -months_back)
        if months_back == 4:
            try:
                settled = sorted(
                    period
                    for period, entry in self.runtime.app.repository.get(mgts_account_id(account)).periods.items()
                    if entry.settled_total is not None
                )
            except AggregateNotFoundError:
                settled = []
            if settled:
                period = data.draw(st.sampled_from(settled), label="settled period")
        self.send_new(
            self.m.make("mgts_bill", self.when(data, -5, 5), mgts_account=account, period=period, amount=amount)
        )

    @rule(msisdn=members, points=partner_points, data=st.data())
    def ballyplus(self, msisdn: str, points: int, data: st.DataObject) -> None:
        self.send_new(self.m.make("ballyplus_transfer", self.when(data), msisdn=msisdn, partner_points=points))

    @rule(kind=st.sampled_from(MALFORMED_KINDS), data=st.data())
    def malformed(self, kind: str, data: st.DataObject) -> None:
        raw = self.m.malformed(kind, self.when(data))
        report = self.send_raw(raw)
        assert report.outcomes == Counter({"rejected": 1}), report

    # -- duplicates (property 2) -----------------------------------------------------

    @precondition(lambda self: self.originals)
    @rule(data=st.data(), with_original=st.sampled_from((None, "before", "after")))
    def conflicting_duplicate(self, data: st.DataObject, with_original: str | None) -> None:
        """Same event_id, other content: rejected once, a duplicate after.
        Sent alone, or in one batch with the original sent again."""
        original = data.draw(st.sampled_from(self.originals), label="original")
        raw = encode(conflicting(original))
        new = raw not in self.seen
        if with_original is None:
            report = self.send_raw(raw)
        else:
            pair = [encode(original), raw] if with_original == "before" else [raw, encode(original)]
            report = self.p.send(*pair)
            self.sent.extend(pair)
            self.seen.update(pair)
            self.sent_since_tick = True
        duplicates = 0 if with_original is None else 1
        if new:
            assert report.outcomes == Counter({"rejected": 1, "duplicate": duplicates} if duplicates else {"rejected": 1}), report
            assert report.rejected == Counter({"conflicting_duplicate": 1}), report
        else:
            assert report.outcomes == Counter({"duplicate": duplicates + 1}), report

    @rule(msisdn=members, points=partner_points, conflict=st.booleans(), data=st.data())
    def new_message_twice_in_one_batch(self, msisdn: str, points: int, conflict: bool, data: st.DataObject) -> None:
        """A new message and, in the same batch, the same again or a
        conflicting duplicate of it: the first counts, the second is a
        duplicate or rejected (`conflicting_duplicate`)."""
        message = self.m.make("ballyplus_transfer", self.when(data), msisdn=msisdn, partner_points=points)
        second = encode(conflicting(message) if conflict else message)
        report = self.p.send(encode(message), second)
        self.originals.append(message)
        self.sent.extend([encode(message), second])
        self.seen.update([encode(message), second])
        self.sent_since_tick = True
        assert sum(report.outcomes.values()) == 2, report
        if conflict:
            assert report.rejected == Counter({"conflicting_duplicate": 1}), report
        else:
            assert report.outcomes["duplicate"] == 1 and not report.rejected, report

    @precondition(lambda self: self.sent)
    @rule(data=st.data(), reformat=st.booleans())
    def resend_one(self, data: st.DataObject, reformat: bool) -> None:
        """An earlier line again: byte for byte, or (for the first message
        of an event_id) the same content in other bytes."""
        before, log = snapshot(self.p), events_recorded(self.p)
        if reformat and self.originals:
            raw = reformatted(data.draw(st.sampled_from(self.originals), label="original"))
            report = self.p.send(raw)
        else:
            raw = data.draw(st.sampled_from(self.sent), label="line")
            report = self.send_raw(raw)
        assert report.outcomes == Counter({"duplicate": 1}), f"{raw!r}: {report}"
        assert events_recorded(self.p) == log, "a duplicate recorded events"
        assert snapshot(self.p) == before, "a duplicate changed the state"

    @precondition(lambda self: self.sent)
    @rule(data=st.data(), sizes=st.lists(st.integers(1, 10), max_size=5))
    def resend_prefix(self, data: st.DataObject, sizes: list[int]) -> None:
        """Re-applying any prefix of what was sent changes nothing (sent
        again in batches of `sizes`, the rest in one batch)."""
        length = data.draw(st.integers(1, len(self.sent)), label="prefix length")
        before, log = snapshot(self.p), events_recorded(self.p)
        outcomes = resend(self.p, self.sent[:length], sizes)
        assert outcomes == Counter({"duplicate": length}), f"re-sent {length} lines: {outcomes}"
        assert events_recorded(self.p) == log, "re-sent lines recorded events"
        assert snapshot(self.p) == before, "re-sending a prefix changed the state"

    # -- ticks -------------------------------------------------------------------------

    @rule(day=st.sampled_from((15, 25)))
    def tick_settlement_day(self, day: int) -> None:
        """The next 15th (MGTS, rule 4) or 25th (cards, rule 5)."""
        this_month = self.clock.replace(day=day)
        self.tick_to(this_month if this_month > self.clock else _next_month_day(self.clock, day))

    @rule(days=st.integers(0, 60))
    def tick_later(self, days: int) -> None:
        """0: the same date again, e.g. after late messages (which it settles)."""
        self.tick_to(self.clock + timedelta(days=days))

    @precondition(lambda self: self.clock < date(2027, 1, 1))
    @rule(days=st.integers(300, 400))
    def tick_far_later(self, days: int) -> None:
        """Past the expiry of much that was credited."""
        self.tick_to(self.clock + timedelta(days=days))

    @rule(data=st.data())
    def tick_on_an_expiry(self, data: st.DataObject) -> None:
        """On (or the day before) the first expiry date still ahead."""
        ahead = sorted(
            date.fromisoformat(expires_on)
            for msisdn in MEMBERS
            for _, expires_on, _ in self.p.lots(msisdn)
            if expires_on > self.clock.isoformat()
        )
        if not ahead:
            return
        day = ahead[0] - timedelta(days=data.draw(st.sampled_from((0, 1)), label="days before expiry"))
        if day > self.clock:
            self.tick_to(day)

    # -- property 4 --------------------------------------------------------------------

    @rule(replay=st.booleans())
    def verify_audit_and_replay(self, replay: bool) -> None:
        """Audit finds no difference; replay (or, else, rebuilding the
        aggregates in a fresh engine) gives the same state."""
        if replay:
            check_audit_and_replay(self.p)
        else:
            differences = self.runtime.audit()
            assert differences == [], f"audit found differences: {differences}"
            check_aggregates_rebuilt(self.p, self.url, sorted(self.receipts))

    # -- property 1 --------------------------------------------------------------------

    @invariant()
    def accounts_add_up(self) -> None:
        check_accounts(self.p)


def _coverage_events(p: Programme) -> None:
    """What a run exercised (shown by --hypothesis-show-statistics)."""
    kinds = Counter()
    for msisdn in MEMBERS:
        for entry in p.history(msisdn):
            kinds[(entry["kind"], entry["rule"] or entry["reason"])] += 1
        row = p.runtime.reads.member(msisdn)
        if row and row["uncollected"]:
            event("a clawback left points uncollected")
        account = p.runtime.app.member(msisdn)
        if account is not None and account.version > 200:
            event("an account passed the snapshot interval (200 events)")
        if account is not None and any(entry.settled for entry in account.card_months.values()):
            event("a card month earned points")
    for kind, why in sorted(kinds):
        event(f"history: {kind} ({why})")
    for reason in p.runtime.reads.rejections_by_reason():
        event(f"rejected: {reason}")
    if p.runtime.reads.held_count():
        event("events still held at the end")


def _next_month_day(day: date, number: int) -> date:
    month = shift_month(month_of_day(day), 1)
    return date(int(month[:4]), int(month[5:]), number)


AccrualMachine.TestCase.settings = PROFILE
TestAccrualMachine = AccrualMachine.TestCase


# -- 3 (and 4): enrollment order ---------------------------------------------------------


def _observe(p: Programme) -> dict[str, Any]:
    return {
        msisdn: {"balance": p.balance(msisdn), "lots": sorted(p.lots(msisdn)), "uncollected": p.uncollected(msisdn)}
        for msisdn in MEMBERS
    }


@PROFILE
@given(lines=scenarios(), ticks=tick_dates(), batch_sizes=st.lists(st.integers(1, 8), max_size=10))
def test_enrollment_order_does_not_matter(lines: list[Line], ticks: list[date], batch_sizes: list[int]) -> None:
    """Rule 1: "the result does not depend on whether the enrollment or the
    spend reached the engine first". The lines are sent with every
    `member_enrolled` moved to the front, moved to the end, and where they
    were generated (in random batches); no tick comes between. Each member's
    own spends keep their relative order in all three, so each member sees
    the same events in the same order and the same lots follow, hence also
    the same expiries: balances, lots (date, expiry, remaining) and what each
    tick expires are compared after the sends and after every tick. The last
    tick is past every expiry of a 2026 lot (rule 7), so every balance is 0
    after it."""
    enrollments = [line.raw for line in lines if line.enrollment]
    others = [line.raw for line in lines if not line.enrollment]
    orders = {
        "enrollments first": (enrollments + others, []),
        "enrollments last": (others + enrollments, []),
        "as generated, in batches": ([line.raw for line in lines], batch_sizes),
    }
    results: dict[str, list[Any]] = {}
    for name, (order, sizes) in orders.items():
        with fresh_programme() as p:
            observed: list[Any] = []
            for chunk in _batches(order, sizes):
                p.send(*chunk)
                check_accounts(p)
            observed.append(("after the sends", _observe(p)))
            for day in ticks:
                report = p.tick(day.isoformat())
                check_accounts(p)
                observed.append((f"after the tick of {day}", report.expired_points, _observe(p)))
            assert all(p.balance(msisdn) == 0 for msisdn in MEMBERS), "points outlived their expiry"
            check_audit_and_replay(p)
            results[name] = observed
    reference = results["enrollments first"]
    for name, observed in results.items():
        for expected, actual in zip(reference, observed, strict=True):
            expected_balances = {m: s["balance"] for m, s in expected[-1].items()}
            actual_balances = {m: s["balance"] for m, s in actual[-1].items()}
            assert actual_balances == expected_balances, f"{name}, {actual[0]}: balances differ"
            assert actual == expected, f"{name}, {actual[0]}: lots or expiries differ"


def _batches(lines: list[bytes], sizes: list[int]) -> Iterator[list[bytes]]:
    sizes_iter = iter(sizes)
    position = 0
    while position < len(lines):
        size = next(sizes_iter, 1)
        yield lines[position:position + size]
        position += size
