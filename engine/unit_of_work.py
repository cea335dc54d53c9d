"""The unit of work: every write of the engine goes through one.

A unit of work gathers the aggregates that a batch of messages, a tick step
or a command touches, and the inbox rows of what it consumed; `commit` saves
their new events and the rows in one transaction. `AccrualApplication.run`
is the one way to run one, with the one conflict policy: when another writer
saved one of its aggregates (or one of its inbox keys) first, the store
refuses the commit (`IntegrityError`), the unit's aggregates are dropped from
the cache and the work runs again on the state that writer left. A retry
happens only after another writer succeeded, so work always progresses.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from engine.messages import InboxRow, Report

CONFLICT_RETRIES_MAX = 50
LATEST = 2**62  # "up to any version": read from the store, past the cache


class UnitOfWork:
    """`fresh`: aggregates as stored now, the cached ones brought up to date
    with what other writers saved since (commands of the personal account:
    other processes write the same accounts). Otherwise the cache is
    trusted: one process owns the accounts it applies messages to (a file
    ingest, the worker of a partition)."""

    def __init__(self, app: Any, fresh: bool = False):
        self.app = app
        self.fresh = fresh
        self.rules = app.rules
        self.touched: dict[UUID, Any] = {}
        self.inbox: list[InboxRow] = []
        self.consumed: dict[tuple[str, str], str] = {}  # (topic, key) -> fingerprint, of this unit
        self.report = Report()
        self.absent: set[UUID] = set()  # aggregates known to have no events yet

    # -- aggregates ---------------------------------------------------------------

    def prefetch(self, aggregate_ids: Iterable[UUID]) -> None:
        """Finds out in one query which of these aggregates are new, so that
        new members, receipts and MGTS accounts are not looked up one by one."""
        unknown = [i for i in set(aggregate_ids) if not self.app.is_cached(i)]
        if unknown:
            self.absent |= set(unknown) - self.app.recorder.select_existing(unknown)

    def load(self, aggregate_ids: Iterable[UUID]) -> None:
        """Loads these aggregates together (a tick's page of accounts), so
        that `get` finds them without a query each."""
        wanted = [i for i in dict.fromkeys(aggregate_ids) if i not in self.touched]
        for aggregate_id, aggregate in self.app.load_aggregates(wanted, fresh=self.fresh).items():
            self.touched[aggregate_id] = aggregate
        self.absent.update(i for i in wanted if i not in self.touched)

    def get(self, aggregate_id: UUID) -> Any:
        """The aggregate, or None if it has no events yet."""
        aggregate = self.touched.get(aggregate_id)
        if aggregate is None:
            if aggregate_id in self.absent:
                return None
            try:
                aggregate = self.app.latest(aggregate_id) if self.fresh else self.app.repository.get(aggregate_id)
            except AggregateNotFoundError:
                return None
            self.touched[aggregate_id] = aggregate
        return aggregate

    def reread(self, aggregate_id: UUID) -> Any:
        """The aggregate as stored now, read again (a command that found its
        key in the inbox answers with what the other writer saved)."""
        self.touched.pop(aggregate_id, None)
        return self.get(aggregate_id)

    def add(self, aggregate: Any) -> Any:
        self.absent.discard(aggregate.id)
        self.touched[aggregate.id] = aggregate
        return aggregate

    # -- the inbox --------------------------------------------------------------------

    def seen(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The fingerprints of the keys consumed before (by this unit or by a
        committed one)."""
        found = self.app.recorder.select_inbox([k for k in keys if k not in self.consumed])
        found.update((k, self.consumed[k]) for k in keys if k in self.consumed)
        return found

    def consume(self, topic: str, key: str, fingerprint: str, outcome: str) -> None:
        self.inbox.append(InboxRow(topic, key, fingerprint, outcome))
        self.consumed[(topic, key)] = fingerprint

    # -- saving -------------------------------------------------------------------------

    def commit(self) -> list[Any]:
        """Saves the unit; returns the recordings of its events (with their
        positions in the log)."""
        return self.app.save_unit(self)
