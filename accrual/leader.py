"""The leader's jobs, in a process of its own beside each worker: the
outbound publisher (accrual/publisher.py) and the daily tick.

Only the process that holds the store's leadership lock (accrual/
leadership.py) does them, so that they run once for the store however many
workers there are. The lock is taken by this process itself: if its worker
dies, it dies too (accrual/processes.py) and its database session with the
lock ends, so no orphan can publish beside a new leader.

- The publisher follows the event log chunk by chunk: read and map (in a
  thread), send to Kafka, commit the position after Kafka acknowledged.
- The daily tick runs `ACCRUAL_TICK_AFTER` minutes after 00:00 Moscow time,
  once the group has caught up, so that the day is closed on what arrived
  before midnight: it waits while the lag falls and while the lag cannot
  be measured, and gives up waiting only on a measured lag that has not
  fallen for 10 minutes (accrual/tick_gate.py); days missed while no
  worker ran are closed in order.

Its metrics go to the worker's endpoint through a queue (`MetricUpdates`).
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Any

from aiokafka.errors import KafkaError, ProducerFenced

from accrual.kafka import Names
from accrual.leadership import Leadership
from accrual.outage import Outage, is_store_error, ride_out
from accrual.processes import orphaned
from accrual.settings import Settings, WorkerSettings
from accrual.tick_gate import LAG_STALLED, LAG_UNKNOWN, TickGate
from engine.calendar import MOSCOW

logger = logging.getLogger("accrual.leader")

MAX_CATCH_UP_DAYS = 62
LOCK_CHECK_SECONDS = 5.0


class MetricUpdates:
    """The leader's metric changes, sent to the worker's process, which
    serves them (prometheus_client registries are per process)."""

    def __init__(self, queue: Any):
        self.queue = queue

    def leader(self, held: bool) -> None:
        self.queue.put(("leader", 1 if held else 0))

    def published(self, topic: str, count: int, position: int) -> None:
        self.queue.put(("published", topic, count, position))

    def tick(self) -> None:
        self.queue.put(("tick",))

    def tick_held(self, reason: str, waited_s: float) -> None:
        self.queue.put(("tick_held", reason, waited_s))


def apply_metric_update(update: tuple) -> None:
    """In the worker's process: one update from its leader."""
    from accrual import metrics

    kind = update[0]
    if kind == "leader":
        metrics.LEADER.set(update[1])
    elif kind == "published":
        metrics.PUBLISHED.labels(update[1]).inc(update[2])
        metrics.PUBLISH_POSITION.set(update[3])
    elif kind == "tick":
        metrics.TICKS.inc()
        metrics.TICK_WAITED.set(0)
    elif kind == "tick_held":
        metrics.TICK_HELD.labels(update[1]).inc()
        metrics.TICK_WAITED.set(update[2])


def run_leader(stop: Any, parent: int, settings: Settings, ws: WorkerSettings, names: Names, queue: Any,
               log_level: str) -> None:
    """The child's entry point (accrual/processes.py)."""
    from accrual.logs import configure_logging

    configure_logging(log_level)
    leader = ride_out("the leader", settings.store_outage_limit_s,
                      lambda: Leader(settings, ws, names, MetricUpdates(queue), stop, parent),
                      stopping=lambda: stop.is_set() or orphaned(parent))
    if leader is not None:
        asyncio.run(leader.run())


class Leader:
    def __init__(self, settings: Settings, ws: WorkerSettings, names: Names, updates: MetricUpdates,
                 stop: Any, parent: int):
        from accrual.publisher import Publisher
        from accrual.runtime import Runtime
        from projections.db import Database

        self.ws = ws
        self.names = names
        self.updates = updates
        self.stop = stop
        self.parent = parent
        self.runtime = Runtime(settings)
        self.publisher = Publisher(self.runtime.app, Database(settings.database), names)
        self.leadership = Leadership(settings.database, f"accrual:{names.group}:leader")
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="leader")
        self.position_seen = -1
        self.tick_gate = TickGate()
        self.tick_held_reason: str | None = None  # the last reason logged, so that a long wait logs its changes only
        self.outage = Outage("the leader", settings.store_outage_limit_s)
        self.producer: Any = None

    def stopping(self) -> bool:
        return self.stop.is_set() or orphaned(self.parent)

    async def pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping() and time.monotonic() < deadline:
            await asyncio.sleep(min(0.1, seconds))

    async def in_thread(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.thread, function, *args)

    async def run(self) -> None:
        """Until asked to stop: hold the leadership and do its jobs. A store
        error (a restart, a terminated session) ends this term of leadership
        (the lock lived on a session that may be gone), and the leader stands
        for election again after a backoff, for as long as the outage limit
        allows (accrual/outage.py); past it, StoreOutage ends the process."""
        try:
            while not self.stopping():
                try:
                    await self._lead()
                except Exception as error:
                    if not is_store_error(error):
                        raise
                    delay = self.outage.failed(error, time.monotonic())
                    logger.warning("store error; standing down and trying again", extra={"fields": {
                        "error": f"{type(error).__name__}: {error}", "retry_in_s": round(delay, 2)}})
                    await self._stand_down()
                    await self.pause(delay)
        finally:
            await self._stand_down()
            await self.in_thread(self.runtime.close)
            self.thread.shutdown()

    async def _lead(self) -> None:
        next_tick_check = next_lock_check = 0.0
        while not self.stopping():
            if not self.leadership.held:
                acquired = await self.in_thread(self.leadership.try_acquire)
                self._store_answered()
                self.updates.leader(acquired)
                if not acquired:
                    await self.pause(2.0)
                    continue
                logger.info("leadership taken: publishing the outbound topics and running the daily tick")
            if self.producer is None:
                self.producer = await self._start_producer()
                if self.producer is None:
                    continue
            if time.monotonic() >= next_lock_check:
                next_lock_check = time.monotonic() + LOCK_CHECK_SECONDS
                if not await self._still_leading():
                    continue
            sent = await self._publish_guarded()
            if sent is None:
                continue
            self._store_answered()
            if self.ws.auto_tick and time.monotonic() >= next_tick_check:
                await self._tick_if_due()
                next_tick_check = time.monotonic() + (5 if self.tick_gate.waiting else 30)
            if not sent:
                await self.pause(0.02)

    async def _publish_guarded(self) -> int | None:
        """One chunk; None when it was not published (the loop starts over)."""
        try:
            return await self._publish_once(self.producer)
        except ProducerFenced:
            # A newer producer of the publisher's transactional id: another
            # worker leads now. Restarting ours would fence it back.
            logger.warning("publisher fenced by a newer leader's producer; standing down")
            await self._stand_down()
        except KafkaError as error:
            self.producer = await self._publisher_failed(self.producer, error)
        except LeadershipLost:
            pass
        return None

    async def _still_leading(self) -> bool:
        """Checks the lock's session; when it is gone, stands down at once
        (another worker may hold the lock now) and returns False."""
        if await self.in_thread(self.leadership.still_held):
            return True
        logger.warning("leadership lost (the lock's database session ended); standing down")
        await self._stand_down()
        return False

    async def _stand_down(self) -> None:
        self.producer = await _stopped(self.producer)
        self.leadership.release()
        self.updates.leader(False)

    def _store_answered(self) -> None:
        if self.outage.ongoing:
            logger.info("the store answers again", extra={"fields": {
                "outage_s": round(self.outage.recovered(time.monotonic()), 1)}})

    # -- the publisher -------------------------------------------------------------

    async def _start_producer(self) -> Any:
        from accrual.publisher import new_producer

        if not await self._still_leading():  # starting it fences any other: only the lock's holder may
            return None
        producer = new_producer(self.ws.bootstrap, f"{self.names.group}.publisher")
        try:
            await producer.start()
            await self.publisher.recover(self.ws.bootstrap)
        except KafkaError as error:
            return await self._publisher_failed(producer, error)
        return producer

    async def _publisher_failed(self, producer: Any, error: Exception) -> None:
        """Kafka refused or timed out: the chunk's position was not committed,
        so it is sent again after `recover` (which skips what got through)."""
        logger.warning("publishing failed; retrying with a new producer in 5 s",
                       extra={"fields": {"error": f"{type(error).__name__}: {error}"}})
        await _stopped(producer)
        await self.pause(5.0)
        return None

    async def _publish_once(self, producer: Any) -> int:
        records, commit, position = await self.in_thread(self.publisher.read_chunk)
        if not records and position == self.position_seen:
            return 0
        if records and not await self._still_leading():  # no send from a leader whose lock may be another's
            raise LeadershipLost()
        sent = await self.publisher.send(producer, records)
        await self.in_thread(commit)
        self.position_seen = position
        by_topic: dict[str, int] = {}
        for r in records:
            by_topic[r.topic] = by_topic.get(r.topic, 0) + 1
        for topic, count in by_topic.items():
            self.updates.published(topic, count, position)
        return sent or len(records)

    # -- the daily tick ---------------------------------------------------------------

    async def _tick_if_due(self) -> None:
        """The daily close for today, once it is `tick_after_minutes` past
        00:00 Moscow time; days missed while no worker ran are closed in
        order (at most two months back)."""
        now = datetime.now(MOSCOW)
        today = now.date()
        if now < datetime(today.year, today.month, today.day, tzinfo=MOSCOW) + timedelta(
            minutes=self.ws.tick_after_minutes
        ):
            today -= timedelta(days=1)
        rows = await self.in_thread(
            self.publisher.db.query, "SELECT as_of FROM worker_ticks WHERE name = ?", ("daily",)
        )
        last = date.fromisoformat(rows[0][0]) if rows else today - timedelta(days=1)
        day = max(last + timedelta(days=1), today - timedelta(days=MAX_CATCH_UP_DAYS))
        if day > today or not await self._caught_up():
            return
        while day <= today and not self.stopping():
            if not await self._still_leading():  # each day's close is written by the lock's holder only
                return
            started = time.perf_counter()
            report = await self.in_thread(self.runtime.tick, day)
            await self.in_thread(self.runtime.projector.flush)
            await self.in_thread(self._record_tick, day)
            self.updates.tick()
            logger.info("daily tick", extra={"fields": {
                "as_of": day.isoformat(), "settled": report.settled, "expired_points": report.expired_points,
                "seconds": round(time.perf_counter() - started, 2)}})
            day += timedelta(days=1)

    async def _caught_up(self) -> bool:
        """The tick closes the day on what has arrived: it waits while the
        group lags, and while the lag cannot be measured (accrual.tick_gate)."""
        from accrual.status import kafka_lag

        error = ""
        try:
            lag: int | None = sum(row["lag"] for row in await kafka_lag(self.ws.bootstrap, self.names))
        except Exception as failure:  # an unknown lag is not zero: the tick waits
            lag, error = None, f"{type(failure).__name__}: {failure}"
        verdict = self.tick_gate.decide(lag, time.monotonic())
        fields = {"lag": verdict.lag, "reason": verdict.reason, "waited_s": round(verdict.waited_s, 1)}
        if error:
            fields["error"] = error
        if verdict.go:
            self.tick_held_reason = None
            if verdict.reason == LAG_STALLED:
                logger.warning("daily tick runs with the group still lagging: its lag has not fallen for "
                               "10 minutes", extra={"fields": fields})
            elif verdict.waited_s:
                logger.info("daily tick: the group has caught up", extra={"fields": fields})
            return True
        self.updates.tick_held(verdict.reason, verdict.waited_s)
        if verdict.reason != self.tick_held_reason:
            self.tick_held_reason = verdict.reason
            message = ("daily tick due: waiting, the lag cannot be measured" if verdict.reason == LAG_UNKNOWN
                       else "daily tick due: waiting for the group to catch up")
            logger.warning(message, extra={"fields": fields})
        return False

    def _record_tick(self, day: date) -> None:
        with self.publisher.db.transaction() as tx:
            tx.execute(
                "INSERT INTO worker_ticks (name, as_of) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET as_of = excluded.as_of",
                ("daily", day.isoformat()),
            )


class LeadershipLost(Exception):
    """The lock's session ended while this process was leading."""


async def _stopped(producer: Any) -> None:
    if producer is not None:
        try:
            await producer.stop()
        except Exception:
            logger.exception("while stopping the producer")
    return None
