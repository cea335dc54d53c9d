"""The accrual application: the one place where the engine's writes happen.

Entry points (the file ingester, the Kafka worker, the web app) parse and
validate at the edge and hand `Inbound` messages, ticks and commands here.
Every write is a unit of work (`engine.unit_of_work`) run by `run`, with one
conflict policy; `process` applies a batch of messages as one unit of work,
`tick` closes a day (`engine.tick`), and the spending commands of rule 10
(`engine.spending`) and the staff's adjustments (`engine.adjustments`) are
one unit of work each.

Idempotency is by (topic, message key): a unit's inbox rows are written by
the recorder in the same transaction as its events, so a redelivered message
is seen as a duplicate whether the crash came before or after the commit.
"""
from __future__ import annotations

import logging
import threading
from datetime import date, datetime
from typing import Any, Callable, Iterable, Sequence, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, LRUCache
from eventsourcing.domain import CanMutateProtocol
from eventsourcing.persistence import IntegrityError, JSONTranscoder, OperationalError, PersistenceError

from engine import handlers, tick
from engine.account import MemberAccount
from engine.adjustments import Adjusted, AdjustmentCommands
from engine.errors import ConcurrentWriterError, InvalidChannelError, InvalidMsisdnError, UnknownDeadLetterError
from engine.ids import member_id
from engine.messages import APPLIED, DUPLICATE, INTERNAL_ERROR, Inbound, Report
from engine.mgts import MgtsAccount
from engine.redrive import Redrive, redrive_dead_letter
from engine.receipt import Receipt
from engine.rules import RuleSet, load_rules
from engine.spending import ENROLLMENTS_TOPIC, Debit, SpendingCommands, Transfer, fingerprint
from engine.tick import TickAgenda
from engine.transcoding import register_transcodings
from engine.unit_of_work import CONFLICT_RETRIES_MAX, LATEST, UnitOfWork
from schemas.msisdn import is_msisdn

logger = logging.getLogger(__name__)

T = TypeVar("T")
OPERATIONAL_RETRIES_MAX = 3
_CHANNELS = ("web", "sms", "shop", "auto")  # EVENTS.md, member_enrolled

__all__ = ["AccrualApplication", "Adjusted", "ConcurrentWriterError", "Debit", "Inbound", "Redrive", "Report",
           "Transfer"]


class AccrualApplication(SpendingCommands, AdjustmentCommands, Application):
    name = "accrual"
    env = {
        "AGGREGATE_CACHE_MAXSIZE": "20000",
        # One writer per account (a file ingest, or the worker that owns the
        # partition), so a cached account is current and need not be
        # fast-forwarded from the database on every read.
        "AGGREGATE_CACHE_FASTFORWARD": "n",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
        "TRANSCODER_TOPIC": "engine.transcoding:OrjsonTranscoder",
    }
    snapshotting_intervals = {MemberAccount: 200, MgtsAccount: 200, Receipt: 200}

    def __init__(self, env: dict[str, str] | None = None, rules: RuleSet | None = None):
        super().__init__(env)
        self.rules = rules or load_rules()
        # Called with the recordings of every saved unit of work (the read
        # models follow the log this way in-process; they catch up from the
        # store in any case).
        self.on_saved: Callable[[list[Any]], None] | None = None
        self._reached = threading.local()

    def reached(self) -> int | None:
        """The log position of the last events this thread saved: read models
        at or past it show what its last command did."""
        return getattr(self._reached, "position", None)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_transcodings(transcoder)

    # -- units of work --------------------------------------------------------------

    def run(self, work: Callable[[UnitOfWork], T], *, fresh: bool = False) -> T:
        """Runs `work` in a unit of work and commits it. If another writer
        saved one of its aggregates or inbox keys first, the unit's
        aggregates leave the cache and `work` runs again on the stored
        state. Any other error leaves the cache clean and goes to the caller."""
        operational_errors = 0
        for _ in range(CONFLICT_RETRIES_MAX):
            uow = UnitOfWork(self, fresh=fresh)
            try:
                result = work(uow)
                recordings = uow.commit()
                if recordings:
                    self._reached.position = recordings[-1].notification.id
                return result
            except IntegrityError:
                self.forget(uow.touched)
            except OperationalError:
                # Seen rarely under load on PostgreSQL: a conflict reported by
                # psycopg as "pipeline aborted" rather than as a unique
                # violation. Running the work again is safe: if the first
                # attempt did commit, the inbox or the state answers it.
                self.forget(uow.touched)
                operational_errors += 1
                if operational_errors > OPERATIONAL_RETRIES_MAX:
                    raise
            except BaseException:
                self.forget(uow.touched)  # they may hold events that were never saved
                raise
        raise ConcurrentWriterError(f"a unit of work kept conflicting with other writers ({CONFLICT_RETRIES_MAX} tries)")

    def save_unit(self, uow: UnitOfWork) -> list[Any]:
        """The unit's new events and inbox rows in one transaction, then the
        cache, snapshots and followers. (Collects events directly rather than
        through `save`, whose protocol checks per aggregate cost more than
        the insert.)"""
        events: list[Any] = []
        for aggregate in uow.touched.values():
            events.extend(aggregate.collect_events())
        if not events and not uow.inbox:
            return []
        recordings = self.events.put(events, inbox=uow.inbox)
        cache = self.repository.cache
        if cache is not None:
            for aggregate_id, aggregate in uow.touched.items():
                cache.put(aggregate_id, aggregate)
        self._snapshot(events, uow.touched)
        if self.on_saved is not None and recordings:
            try:
                self.on_saved(recordings)
            except Exception:  # the unit is saved; the follower catches up later
                logger.exception("a follower of the event log failed; it will catch up from the store")
        return recordings

    def _snapshot(self, events: list[Any], aggregates: dict[UUID, Any]) -> None:
        for event in events:
            aggregate = aggregates[event.originator_id]
            interval = self.snapshotting_intervals.get(type(aggregate))
            if interval is not None and event.originator_version % interval == 0:
                self.take_snapshot(event.originator_id, version=event.originator_version)

    def forget(self, aggregate_ids: Iterable[UUID] | None = None) -> None:
        """Drops aggregates from the cache (all of them without ids: after a
        rebalance, another worker may have written any of them)."""
        cache = self.repository.cache
        if not isinstance(cache, LRUCache):
            return
        if aggregate_ids is None:
            self.repository.cache = LRUCache(maxsize=cache.maxsize)
            return
        for aggregate_id in list(aggregate_ids):
            try:
                cache.get(aggregate_id, evict=True)
            except KeyError:
                pass

    def latest(self, aggregate_id: UUID) -> Any:
        """The aggregate as stored now. If this process has it cached, the
        cached state is brought up to date with the events other writers
        saved after it (one query, usually empty) instead of being rebuilt
        from its snapshot and up to 199 events after that: the cache only
        ever holds committed states (a failed unit of work drops what it
        touched), so the events after its version are exactly what it
        misses. Raises AggregateNotFoundError like the repository."""
        cache = self.repository.cache
        if isinstance(cache, LRUCache) and aggregate_id in cache.cache:
            aggregate = cache.get(aggregate_id)
            for event in self.events.get(aggregate_id, gt=aggregate.version):
                aggregate = cast("CanMutateProtocol[Any]", event).mutate(aggregate)
            return aggregate
        return self.repository.get(aggregate_id, version=LATEST)

    def is_cached(self, aggregate_id: UUID) -> bool:
        cache = self.repository.cache
        return isinstance(cache, LRUCache) and aggregate_id in cache.cache

    def load_aggregates(self, aggregate_ids: Sequence[UUID], fresh: bool = False) -> dict[UUID, Any]:
        """These aggregates as stored (those that exist): from the cache
        unless `fresh`, the others rebuilt as the repository would (latest
        snapshot, then the events after it) from one read of the recorder
        for the lot, not a query or two each (a tick's page of accounts).
        Rebuilt aggregates enter the cache unless `fresh`, as `get` does."""
        found: dict[UUID, Any] = {}
        select = getattr(self.recorder, "select_snapshots_and_events", None)
        missing = []
        for aggregate_id in aggregate_ids:
            if select is None or (not fresh and self.is_cached(aggregate_id)):
                try:
                    found[aggregate_id] = self.repository.get(aggregate_id, version=LATEST if fresh else None)
                except AggregateNotFoundError:
                    pass
            else:
                missing.append(aggregate_id)
        if select is None or not missing:  # (without `select`, nothing is missing)
            return found
        snapshots = self.snapshots.recorder if self.snapshots is not None else None
        cache = None if fresh else self.repository.cache
        for aggregate_id, (snapshot, stored_events) in select(missing, snapshots=snapshots).items():
            aggregate: Any = None
            for stored in ([snapshot] if snapshot is not None else []) + stored_events:
                # The mapper is typed to return the library's bare event protocol;
                # the events (and snapshots) of these aggregates all have `mutate`.
                event = cast("CanMutateProtocol[Any]", self.mapper.to_domain_event(stored))
                aggregate = event.mutate(aggregate)
            if aggregate is None:
                continue
            found[aggregate_id] = aggregate
            if cache is not None:
                cache.put(aggregate_id, aggregate)
        return found

    # -- inbound messages -----------------------------------------------------

    def process(self, messages: Sequence[Inbound]) -> Report:
        """Applies a batch of messages as one unit of work.

        If the store is unavailable, the error goes to the caller, which
        retries the batch later (nothing of it was saved). If something else
        breaks (a defect, not a rule), the batch is applied one message at a
        time so that only the message that breaks is set aside, as
        `internal_error`."""
        try:
            return self.run(lambda uow: self._receive(uow, messages))
        except (PersistenceError, ConcurrentWriterError):
            raise
        except Exception:
            if len(messages) == 1:
                logger.exception("a message broke the engine; it is set aside as %s", INTERNAL_ERROR)
                return self.run(lambda uow: self._set_aside(uow, messages[0]))
            report = Report()
            for message in messages:
                report.add(self.process([message]))
            return report

    @staticmethod
    def _receive(uow: UnitOfWork, messages: Sequence[Inbound]) -> Report:
        seen = uow.seen([(m.topic, m.key) for m in messages])
        uow.prefetch(handlers.aggregates_of(list(messages)))
        for message in messages:
            handlers.receive(uow, message, seen)
        return uow.report

    @staticmethod
    def _set_aside(uow: UnitOfWork, message: Inbound) -> Report:
        handlers.reject(uow, message, message.key, INTERNAL_ERROR, "the engine failed on this message; see the worker log")
        return uow.report

    # -- dead letters -----------------------------------------------------------------

    def redrive(self, rejection_id: str | UUID, *, by: str, at: datetime) -> Redrive:
        """Applies a dead letter's original bytes again under their own key
        (engine.redrive). Raises UnknownDeadLetterError, or
        DeadLetterSettledError once a redrive has applied it. Read fresh,
        as the spending commands are: the worker writes the same accounts."""
        assert at.tzinfo is not None, "moments are always time-zone aware"
        try:
            dead_letter = rejection_id if isinstance(rejection_id, UUID) else UUID(rejection_id)
        except ValueError:
            raise UnknownDeadLetterError(f"no dead letter {rejection_id!r:.60}") from None
        return self.run(lambda uow: redrive_dead_letter(uow, dead_letter, by, at), fresh=True)

    # -- the daily close (rule 9) --------------------------------------------------

    def tick(self, as_of: date, agenda: TickAgenda, chunk_size: int = 500) -> Report:
        """The daily close of `as_of` (engine.tick)."""
        return tick.tick(self, as_of, agenda, chunk_size)

    # -- the personal account's enrollment ------------------------------------------

    def enroll_member(self, msisdn: str, channel: str, at: datetime) -> str:
        """Enrolls a member from the personal account (or a shop): the same as
        a `member_enrolled` message at `at`, held events released. An
        enrolled member is answered "duplicate" and nothing changes."""
        if channel not in _CHANNELS:
            raise InvalidChannelError(f"channel is one of {', '.join(_CHANNELS)}, not {channel!r}")
        if not is_msisdn(msisdn):
            raise InvalidMsisdnError(f"a number is 11 ASCII digits starting with 7, not {msisdn!r:.40}")
        assert at.tzinfo is not None, "moments are always time-zone aware"

        def work(uow: UnitOfWork) -> str:
            account = handlers.member(uow, msisdn, at)
            if account.is_enrolled:
                return DUPLICATE
            for held in account.enroll(f"{ENROLLMENTS_TOPIC}:{msisdn}", at, channel):
                handlers.release(uow, account, held)
            request = fingerprint({"msisdn": msisdn, "channel": channel, "at": at.isoformat()})
            uow.consume(ENROLLMENTS_TOPIC, msisdn, request, APPLIED)
            return APPLIED

        return self.run(work, fresh=True)

    # -- reads for the command line and the personal account ------------------------

    def member(self, msisdn: str) -> MemberAccount | None:
        """The member's account as stored now (from its latest snapshot and
        the events after it, not from this process's cache, which another
        writer may have overtaken)."""
        try:
            return self.repository.get(member_id(msisdn), version=LATEST)
        except AggregateNotFoundError:
            return None
