"""The accrual application: turns inbound messages into commands on member
accounts, receipts and MGTS accounts, and saves each batch in one transaction.

Entry points (the file ingester, the Kafka worker, the web app) parse and
validate at the edge and hand `Inbound` messages here. Idempotency is by
(topic, message key): the batch's inbox rows are written by the recorder in
the same transaction as the batch's events, so a redelivered message is seen
as a duplicate whether the crash came before or after the commit.
"""
from __future__ import annotations

import base64
import logging
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Callable, Iterable, Protocol, Sequence
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, LRUCache, ProcessingEvent
from eventsourcing.persistence import IntegrityError, JSONTranscoder, PersistenceError, Transcoding

from engine.account import MemberAccount
from engine.calendar import midnight, settlement_date
from engine.errors import (
    ConcurrentWriterError,
    DuplicateReceiptError,
    InvalidChannelError,
    RuleRefusal,
    UnknownReceiptError,
)
from engine.ids import member_id, mgts_account_id, receipt_id
from engine.mgts import MgtsAccount
from engine.receipt import Receipt
from engine.rejection import Rejection
from engine.rules import RuleSet, load_rules
from engine.spending import ENROLLMENTS_TOPIC, LATEST, Debit, SpendingCommands, Transfer, fingerprint
from schemas import INBOUND_ADAPTER

logger = logging.getLogger(__name__)

APPLIED, DUPLICATE, HELD, NOT_ELIGIBLE, REJECTED = "applied", "duplicate", "held", "not_eligible", "rejected"
CONFLICTING_DUPLICATE = "conflicting_duplicate"
INTERNAL_ERROR = "internal_error"
_CONFLICT_RETRIES = 5
_EXAMPLES_MAX = 20
_LATEST = LATEST
_CHANNELS = ("web", "sms", "shop", "auto")  # EVENTS.md, member_enrolled

__all__ = ["AccrualApplication", "ConcurrentWriterError", "Debit", "Inbound", "Report", "Transfer"]


@dataclass(frozen=True)
class Inbound:
    """One inbound message after the edge has parsed it.

    `key` is the idempotency key within the topic: the `event_id` of a valid
    message, `sha256:<hex of the bytes>` of one the edge rejected. `event` is
    the validated message (a `schemas` model) or None with `rejection` set.
    """

    topic: str
    key: str
    fingerprint: str
    original: bytes
    received_at: datetime
    event: Any = None
    rejection: tuple[str, str] | None = None
    event_id: str | None = None
    msisdn: str | None = None
    partition: int | None = None
    offset: int | None = None
    kafka_key: str | None = None


@dataclass
class Report:
    """What a batch, a file or a tick did, counted by outcome."""

    outcomes: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    released: int = 0
    settled: int = 0
    expired_points: int = 0
    returned_transfers: int = 0
    examples: list = field(default_factory=list)  # the first rejections: (offset or line, topic, reason, detail)

    def count(self, outcome: str, reason: str | None = None) -> None:
        self.outcomes[outcome] += 1
        if reason is not None:
            self.rejected[reason] += 1

    def add(self, other: Report) -> None:
        self.outcomes.update(other.outcomes)
        self.rejected.update(other.rejected)
        self.released += other.released
        self.settled += other.settled
        self.expired_points += other.expired_points
        self.returned_transfers += other.returned_transfers
        self.examples.extend(other.examples[: max(0, _EXAMPLES_MAX - len(self.examples))])


class InboxRecorder(Protocol):
    """What the engine needs of its recorder beyond the library's: the keys
    of processed messages (written with `save(..., inbox=rows)`), and which
    aggregates exist."""

    def select_inbox(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]: ...
    def select_existing(self, originator_ids: Sequence[UUID]) -> set[UUID]: ...


class TickAgenda(Protocol):
    """Read models that tell a tick which aggregates have work. The
    aggregates decide what the work is; the agenda only finds them."""

    def refresh(self) -> None: ...
    def card_months_due(self, as_of: date) -> list[tuple[str, str]]: ...
    def mgts_periods_due(self, as_of: date) -> list[tuple[str, str]]: ...
    def members_with_expiring_lots(self, as_of: date) -> list[str]: ...
    def transfers_due(self, as_of: date) -> list[str]: ...


class DateAsISO(Transcoding):
    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


class AccrualApplication(SpendingCommands, Application):
    name = "accrual"
    env = {
        "AGGREGATE_CACHE_MAXSIZE": "20000",
        # One writer per account (a file ingest, or the worker that owns the
        # partition), so a cached account is current and need not be
        # fast-forwarded from the database on every read.
        "AGGREGATE_CACHE_FASTFORWARD": "n",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
    }
    snapshotting_intervals = {MemberAccount: 200, MgtsAccount: 200, Receipt: 200}

    def __init__(self, env: dict[str, str] | None = None, rules: RuleSet | None = None):
        super().__init__(env)
        self.rules = rules or load_rules()
        # Called with the recordings of every saved batch (the read models
        # follow the log this way in-process; they catch up from the store
        # in any case).
        self.on_saved: Callable[[list[Any]], None] | None = None

    def save_batch(self, aggregates: Iterable[Any], inbox: list[tuple[str, str, str, str]]) -> list[Any]:
        """`Application.save` for a unit of work: the aggregates' new events
        and the inbox rows in one transaction, then the cache and snapshots.
        (Collects events directly rather than through `save`, whose
        protocol checks per aggregate cost more than the insert.)"""
        processing: ProcessingEvent = ProcessingEvent()
        for aggregate in aggregates:
            processing.events.extend(aggregate.collect_events())
            processing.aggregates[aggregate.id] = aggregate
        processing.saved_kwargs["inbox"] = inbox
        recordings = self._record(processing)
        self._take_snapshots(processing)
        if self.on_saved is not None and recordings:
            try:
                self.on_saved(recordings)
            except Exception:  # the batch is saved; the follower catches up later
                logger.exception("a follower of the event log failed; it will catch up from the store")
        return recordings

    def is_cached(self, aggregate_id: UUID) -> bool:
        cache = self.repository.cache
        return isinstance(cache, LRUCache) and aggregate_id in cache.cache

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(DateAsISO())

    # -- inbound messages -----------------------------------------------------

    def process(self, messages: Sequence[Inbound]) -> Report:
        """Applies a batch in one transaction.

        If another writer saved one of the batch's aggregates first, the
        cached aggregates are dropped and the batch is applied again. If the
        store is unavailable, the error goes to the caller, which retries the
        batch later (nothing of it was saved). If something else breaks (a
        defect, not a rule), the batch is applied one message at a time so
        that only the message that breaks is set aside, as `internal_error`."""
        for _ in range(_CONFLICT_RETRIES):
            try:
                return self._process_batch(messages)
            except IntegrityError:
                self._forget_cached_aggregates()
            except PersistenceError:
                self._forget_cached_aggregates()
                raise
            except Exception:
                self._forget_cached_aggregates()
                if len(messages) == 1:
                    return self._set_aside(messages[0])
                report = Report()
                for message in messages:
                    report.add(self.process([message]))
                return report
        raise ConcurrentWriterError(f"a batch of {len(messages)} messages kept conflicting with another writer")

    def _process_batch(self, messages: Sequence[Inbound]) -> Report:
        batch = _Batch(self)
        seen = self.recorder.select_inbox([(m.topic, m.key) for m in messages])
        batch.prefetch(messages)
        for message in messages:
            batch.receive(message, seen)
        batch.commit()
        return batch.report

    def _set_aside(self, message: Inbound) -> Report:
        batch = _Batch(self)
        batch.reject(message, message.key, INTERNAL_ERROR, "the engine failed on this message; see the worker log")
        batch.commit()
        return batch.report

    def _forget_cached_aggregates(self) -> None:
        cache = self.repository.cache
        if isinstance(cache, LRUCache):
            self.repository.cache = LRUCache(maxsize=cache.maxsize)

    # -- the daily close (rule 9) --------------------------------------------------

    def tick(self, as_of: date, agenda: TickAgenda, chunk_size: int = 500) -> Report:
        """Settles MGTS periods and card months due at 00:00 Moscow of
        `as_of`, returns transfers whose acceptance window ran out by then
        to their senders, then expires lots, in that order (so points that
        come back expire in the same tick if their lots have). The same tick
        twice changes nothing."""
        report = Report()
        agenda.refresh()
        at = midnight(as_of)
        for chunk in _chunks(agenda.mgts_periods_due(as_of), chunk_size):
            report.add(self._tick_step(self._settle_mgts, chunk, at))
        for chunk in _chunks(agenda.card_months_due(as_of), chunk_size):
            report.add(self._tick_step(self._settle_cards, chunk, at))
        for transfer_id in agenda.transfers_due(as_of):
            report.returned_transfers += self.return_lapsed_transfer(transfer_id, at)
        agenda.refresh()
        for chunk in _chunks(agenda.members_with_expiring_lots(as_of), chunk_size):
            report.add(self._tick_step(self._expire, chunk, as_of))
        agenda.refresh()
        return report

    def _tick_step(self, step: Callable[[list, Any], Report], chunk: list, moment: Any) -> Report:
        """One chunk of a tick, run again on the stored state if another
        writer (the personal account spending points) saved one of its
        accounts since this process cached it. Each step decides from the
        aggregates' state, so running it again does only what is still due."""
        for _ in range(_CONFLICT_RETRIES):
            try:
                return step(chunk, moment)
            except IntegrityError:
                self._forget_cached_aggregates()
        raise ConcurrentWriterError(f"a tick step of {len(chunk)} items kept conflicting with another writer")

    def _settle_mgts(self, due: list[tuple[str, str]], at: datetime) -> Report:
        batch = _Batch(self)
        for mgts_account, period in due:
            account = batch.get(mgts_account_id(mgts_account))
            if account is None or not account.needs_settlement(period):
                continue
            msisdn = account.beneficiary(period, self.rules)
            if msisdn is None:
                continue  # no link yet: the settlement waits (rule 4)
            member = batch.get(member_id(msisdn))
            if member is None or not member.is_enrolled:
                continue  # the linked member is not enrolled yet: it waits
            points = account.settle(period, msisdn, member.enrolled_at, self.rules, at)
            if points:
                member.credit_mgts(mgts_account, period, points, self.rules, at)
            batch.report.settled += 1
        batch.commit()
        return batch.report

    def _settle_cards(self, due: list[tuple[str, str]], at: datetime) -> Report:
        batch = _Batch(self)
        for msisdn, month in sorted(due):
            assert midnight(settlement_date(month, self.rules.card_settlement_day)) <= at
            member = batch.get(member_id(msisdn))
            assert member is not None and member.is_enrolled, "card spend is recorded only for members"
            member.settle_card_month(month, self.rules, at)
            batch.report.settled += 1
        batch.commit()
        return batch.report

    def _expire(self, msisdns: list[str], as_of: date) -> Report:
        batch = _Batch(self)
        for msisdn in msisdns:
            member = batch.get(member_id(msisdn))
            if member is not None:
                batch.report.expired_points += member.expire(as_of)
        batch.commit()
        return batch.report

    # -- the personal account's enrollment ------------------------------------------

    def enroll_member(self, msisdn: str, channel: str, at: datetime) -> str:
        """Enrolls a member from the personal account (or a shop): the same as
        a `member_enrolled` message at `at`, held events released. An
        enrolled member is answered "duplicate" and nothing changes."""
        if channel not in _CHANNELS:
            raise InvalidChannelError(f"channel is one of {', '.join(_CHANNELS)}, not {channel!r}")
        assert at.tzinfo is not None, "moments are always time-zone aware"
        return self._retrying(lambda: self._enroll_member(msisdn, channel, at))

    def _enroll_member(self, msisdn: str, channel: str, at: datetime) -> str:
        batch = _Batch(self, fresh=True)
        account = batch.get(member_id(msisdn)) or batch.add(MemberAccount.open(msisdn, at))
        if account.is_enrolled:
            return DUPLICATE
        for item in account.enroll(f"{ENROLLMENTS_TOPIC}:{msisdn}", at, channel):
            batch._release(account, item)
        request = fingerprint({"msisdn": msisdn, "channel": channel, "at": at.isoformat()})
        batch.inbox.append((ENROLLMENTS_TOPIC, msisdn, request, APPLIED))
        batch.commit()
        return APPLIED

    # -- reads for the command line and the personal account ------------------------

    def member(self, msisdn: str) -> MemberAccount | None:
        """The member's account as stored now (from its latest snapshot and
        the events after it, not from this process's cache, which another
        writer may have overtaken)."""
        try:
            return self.repository.get(member_id(msisdn), version=_LATEST)
        except AggregateNotFoundError:
            return None


class _Batch:
    """A unit of work: the aggregates a batch touched, its inbox rows and its
    report, saved together by `commit`."""

    def __init__(self, app: AccrualApplication, fresh: bool = False):
        self.app = app
        self.fresh = fresh  # read aggregates from the store, not the cache (commands of other processes)
        self.rules = app.rules
        self.touched: dict[UUID, Any] = {}
        self.inbox: list[tuple[str, str, str, str]] = []
        self.keys: dict[tuple[str, str], str] = {}
        self.report = Report()
        self.absent: set[UUID] = set()  # aggregates known to have no events yet

    def prefetch(self, messages: Sequence[Inbound]) -> None:
        """Finds out in one query which of the batch's aggregates are new, so
        that new members, receipts and MGTS accounts are not looked up one by
        one."""
        wanted: set[UUID] = set()
        for message in messages:
            event = message.event
            if event is None:
                continue
            msisdn = getattr(event, "msisdn", None)
            if msisdn is not None:
                wanted.add(member_id(msisdn))
            receipt = getattr(event, "receipt_id", None)
            if receipt is not None:
                wanted.add(receipt_id(receipt))
            mgts_account = getattr(event, "mgts_account", None)
            if mgts_account is not None:
                wanted.add(mgts_account_id(mgts_account))
        unknown = [i for i in wanted if not self.app.is_cached(i)]
        if unknown:
            self.absent = set(unknown) - self.app.recorder.select_existing(unknown)

    def get(self, aggregate_id: UUID) -> Any:
        aggregate = self.touched.get(aggregate_id)
        if aggregate is None:
            if aggregate_id in self.absent:
                return None
            try:
                if self.fresh:
                    aggregate = self.app.repository.get(aggregate_id, version=_LATEST)
                else:
                    aggregate = self.app.repository.get(aggregate_id)
            except AggregateNotFoundError:
                return None
            self.touched[aggregate_id] = aggregate
        return aggregate

    def add(self, aggregate: Any) -> Any:
        self.touched[aggregate.id] = aggregate
        return aggregate

    def commit(self) -> None:
        self.app.save_batch(self.touched.values(), self.inbox)

    def _remember(self, message: Inbound, key: str, fingerprint: str, outcome: str) -> None:
        self.inbox.append((message.topic, key, fingerprint, outcome))
        self.keys[(message.topic, key)] = fingerprint

    # -- one message -----------------------------------------------------------

    def receive(self, message: Inbound, seen: dict[tuple[str, str], str]) -> None:
        known = self.keys.get((message.topic, message.key)) or seen.get((message.topic, message.key))
        if known is not None:
            if known == message.fingerprint:
                self.report.count(DUPLICATE)
            else:
                self._conflict(message)
            return
        if message.rejection is not None:
            reason, detail = message.rejection
            self.reject(message, message.key, reason, detail)
            return
        try:
            outcome = self._apply(message.topic, message.event)
        except RuleRefusal as refusal:
            self.reject(message, message.key, refusal.reason, refusal.detail)
            return
        self._remember(message, message.key, message.fingerprint, outcome)
        self.report.count(outcome)

    def _conflict(self, message: Inbound) -> None:
        """Same key, other content: rejected once, keyed by its own bytes, so
        that its redelivery is a duplicate of the rejection."""
        key = "sha256:" + _sha256(message.original)
        if (message.topic, key) in self.keys or self.app.recorder.select_inbox([(message.topic, key)]):
            self.report.count(DUPLICATE)
            return
        detail = f"event_id {message.key!r} was already received on {message.topic} with other content"
        self.reject(message, key, CONFLICTING_DUPLICATE, detail)

    def reject(self, message: Inbound, key: str, reason: str, detail: str) -> None:
        self._record_rejection(
            message.topic, key, reason, detail, message.original, message.received_at,
            event_id=message.event_id, msisdn=message.msisdn,
            partition=message.partition, offset=message.offset, kafka_key=message.kafka_key,
        )
        self._remember(message, key, message.fingerprint if key == message.key else key, REJECTED)
        self.report.count(REJECTED, reason)
        if len(self.report.examples) < _EXAMPLES_MAX:
            self.report.examples.append((message.offset, message.topic, reason, detail))

    def _record_rejection(
        self, topic: str, key: str, reason: str, detail: str, original: bytes, received_at: datetime,
        *, event_id: str | None, msisdn: str | None,
        partition: int | None = None, offset: int | None = None, kafka_key: str | None = None,
    ) -> None:
        self.add(
            Rejection.record(
                message_key=key,
                received_at=received_at,
                topic=topic,
                partition=partition,
                offset=offset,
                key=kafka_key,
                event_id=event_id,
                msisdn=msisdn,
                reason=reason,
                detail=detail,
                original=base64.b64encode(original).decode("ascii"),
            )
        )

    # -- rules, by message type -----------------------------------------------

    def _apply(self, topic: str, event: Any) -> str:
        kind = event.type
        if kind == "member_enrolled":
            return self._enroll(event)
        if kind == "mgts_account_linked":
            self._mgts_account(event).link(event.event_id, event.msisdn, event.occurred_at)
            return APPLIED
        if kind == "mgts_bill":
            self._mgts_account(event).record_bill(event.event_id, event.period, event.amount, event.occurred_at)
            return APPLIED
        account = self._member(event.msisdn, event.occurred_at)
        if not account.is_enrolled:
            account.hold(topic, event.event_id, event.occurred_at, event.model_dump(mode="json"))
            return HELD
        return self._earn(account, event)

    def _enroll(self, event: Any) -> str:
        account = self._member(event.msisdn, event.occurred_at)
        held = account.enroll(event.event_id, event.occurred_at, event.channel)
        for item in held:
            self._release(account, item)
        return APPLIED

    def _release(self, account: MemberAccount, item: dict) -> None:
        """A held event, applied as if it had arrived at the enrollment."""
        event = INBOUND_ADAPTER.validate_python(item["message"])  # the edge's own validation
        self.report.released += 1
        try:
            self._earn(account, event)
        except RuleRefusal as refusal:
            # Its inbox row was written when it was held; the rejection is
            # keyed by its event_id like any other rule refusal.
            self._record_rejection(
                item["topic"], event.event_id, refusal.reason, refusal.detail,
                _canonical_bytes(item["message"]), event.occurred_at,
                event_id=event.event_id, msisdn=event.msisdn,
            )
            self.report.rejected[refusal.reason] += 1

    def _earn(self, account: MemberAccount, event: Any) -> str:
        kind = event.type
        if kind == "shop_return":
            return self._shop_return(account, event)
        eligible = account.earns_at(event.occurred_at)
        if kind == "shop_purchase":
            self._shop_purchase(account, event, eligible)
        elif not eligible:
            pass
        elif kind == "usage_charged":
            account.charge_usage(event.event_id, event.occurred_at, event.service, event.amount, self.rules)
        elif kind in ("card_purchase", "card_refund"):
            amount = event.amount if kind == "card_purchase" else -event.amount
            account.record_card_spend(event.event_id, event.occurred_at, event.card_id, amount, kind)
        elif kind == "ballyplus_transfer":
            account.credit_ballyplus(event.event_id, event.partner_points, event.occurred_at, self.rules)
        else:
            raise AssertionError(f"no rule for message type {kind!r}")
        if not eligible:
            account.record_not_eligible(event.event_id, kind, event.occurred_at)
            return NOT_ELIGIBLE
        return APPLIED

    def _shop_purchase(self, account: MemberAccount, event: Any, eligible: bool) -> None:
        if self.get(receipt_id(event.receipt_id)) is not None:
            raise DuplicateReceiptError(f"receipt {event.receipt_id} was already recorded by another purchase")
        receipt = Receipt.issue(
            event.receipt_id,
            event.msisdn,
            event.store_id,
            event.event_id,
            {line.line_id: (line.category, line.amount) for line in event.lines},
            eligible,
            self.rules,
            event.occurred_at,
        )
        self.add(receipt)
        account.credit_receipt(event.event_id, event.receipt_id, receipt.points, event.occurred_at, self.rules)

    def _shop_return(self, account: MemberAccount, event: Any) -> str:
        receipt = self.get(receipt_id(event.receipt_id))
        if receipt is None:
            raise UnknownReceiptError(f"no purchase with receipt {event.receipt_id} is known")
        returned = {line.line_id: line.amount for line in event.lines}
        points_due = receipt.record_return(event.event_id, event.msisdn, returned, self.rules, event.occurred_at)
        if points_due:
            basis = {"receipt_id": event.receipt_id}
            account.claw_back(points_due, "shop_return", event.event_id, event.occurred_at, basis)
        return APPLIED

    def _member(self, msisdn: str, at: datetime) -> MemberAccount:
        return self.get(member_id(msisdn)) or self.add(MemberAccount.open(msisdn, at))

    def _mgts_account(self, event: Any) -> MgtsAccount:
        return self.get(mgts_account_id(event.mgts_account)) or self.add(
            MgtsAccount.open(event.mgts_account, event.occurred_at)
        )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical_bytes(message: dict) -> bytes:
    return json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _chunks(items: Iterable, size: int) -> Iterable[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
