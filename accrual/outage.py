"""Riding out an outage of the store (a PostgreSQL restart, a failover, a
terminated session, a network blip): what counts as one, how long to wait
between tries, and when to give up.

A worker's processes do not end on the first refused connection: the batch
in hand is applied again (nothing of a failed attempt was saved), after a
backoff that doubles from 0.5 s to at most 15 s, with jitter so that the
workers of a group do not all knock at once when the server comes back.
Only an outage longer than `ACCRUAL_STORE_OUTAGE_LIMIT` (15 minutes by
default) ends the process, with a message that says so; its supervisor
restarts it, and the redelivered messages are duplicates.

The connections come back by themselves: the event store's pool discards a
broken connection, and `projections.db.Database` opens a new one when its
own was lost. The policy here is pure; the loops that use it sleep.
"""
from __future__ import annotations

import logging
import random
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

logger = logging.getLogger("accrual.outage")
T = TypeVar("T")

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 15.0


def is_store_error(error: BaseException) -> bool:
    """An error of the store or of the way to it, which another try may not
    meet: eventsourcing's persistence errors, SQLite's operational errors (a
    locked or unreachable file), psycopg's errors (a lost connection, an
    administrator's shutdown, a refused connection)."""
    from eventsourcing.persistence import PersistenceError

    return isinstance(error, (PersistenceError, sqlite3.OperationalError)) or type(error).__module__.startswith(
        "psycopg")


class StoreOutage(RuntimeError):
    """The store did not answer for longer than the outage limit."""


class BrokerOutage(RuntimeError):
    """The Kafka broker did not answer for longer than the outage limit."""


def backoff_s(attempt: int, jitter: float) -> float:
    """The wait before try `attempt + 1` (attempt 1 is the first failure):
    0.5 s doubling to at most 15 s, times a factor in [0.5, 1) from `jitter`
    (a number in [0, 1))."""
    base = min(BACKOFF_FIRST_S * 2 ** max(attempt - 1, 0), BACKOFF_MAX_S)
    return base * (0.5 + jitter / 2)


@dataclass
class Outage:
    """The state of one loop's outage: when it began and how many tries
    failed. `failed` returns the wait before the next try, or raises
    StoreOutage once the outage has lasted `limit_s`."""

    what: str  # "the consumer", "the read models", "the leader": for the messages
    limit_s: float
    began_at: float | None = None
    attempts: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    @property
    def ongoing(self) -> bool:
        return self.began_at is not None

    def failed(self, error: BaseException, now: float) -> float:
        if self.began_at is None:
            self.began_at = now
        self.attempts += 1
        lasted = now - self.began_at
        if lasted >= self.limit_s:
            raise StoreOutage(
                f"{self.what}: the store has not answered for {lasted:.0f} s (ACCRUAL_STORE_OUTAGE_LIMIT is "
                f"{self.limit_s:.0f} s); last error: {type(error).__name__}: {error}"
            ) from error
        return min(backoff_s(self.attempts, self._random.random()), max(self.limit_s - lasted, 0.0))

    def recovered(self, now: float) -> float:
        """Ends the outage; returns how long it lasted (0 if there was none)."""
        lasted = 0.0 if self.began_at is None else now - self.began_at
        self.began_at, self.attempts = None, 0
        return lasted


def ride_out(what: str, limit_s: float, attempt: Callable[[], T],
             stopping: Callable[[], bool] = lambda: False) -> T | None:
    """`attempt()` until it succeeds, its store errors retried with the
    backoff above (a process starting while the database restarts: opening
    the store, creating tables). None if asked to stop meanwhile;
    StoreOutage past the limit; any other error at once."""
    outage = Outage(what, limit_s)
    while True:
        try:
            return attempt()
        except Exception as error:
            if not is_store_error(error):
                raise
            delay = outage.failed(error, time.monotonic())
            logger.warning("%s: store error while starting; trying again in %.1f s (%s: %s)",
                           what, delay, type(error).__name__, error)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if stopping():
                return None
            time.sleep(min(0.1, delay))
