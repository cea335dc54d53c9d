"""`accrual worker`: the Kafka stream worker.

    inbound topics ──getmany──▶ edge (schemas) ──▶ AccrualApplication.process
        (one database transaction: the batch's events + its inbox rows)
        ──▶ read models follow ──▶ offsets committed to the consumer group

Exactly-once effect: the inbox rows (topic, event id → outcome) are written
in the same transaction as the batch's events, so a batch redelivered after
a crash between the database commit and the offset commit is all
duplicates. Offsets are committed to Kafka after each batch, so the usual
lag tools see the worker's progress.

Several workers share one consumer group. The range assignor gives one
worker the same partition numbers of every inbound topic; producers key by
msisdn with the same partitioner, so a member's usage, shop, card and
enrollment messages reach the same worker and its account cache stays
useful. Correctness does not depend on it: a conflicting write is detected
by the account version and the batch is applied again.

The worker that holds the store's leadership lock also runs the outbound
publisher (accrual/publisher.py) and the daily tick shortly after midnight
Moscow time. SIGTERM (or Ctrl-C) finishes the batch in hand, commits it and
leaves the group.
"""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from accrual import metrics
from accrual.intake import inbound_from_record
from accrual.kafka import Names, check_topics
from accrual.leadership import Leadership
from accrual.publisher import Publisher, new_producer
from accrual.runtime import Runtime, schema_lock
from accrual.settings import Settings, WorkerSettings
from engine.messages import Report
from engine.calendar import MOSCOW
from projections.db import Database

logger = logging.getLogger("accrual.worker")

TICK_TABLE = "CREATE TABLE IF NOT EXISTS worker_ticks (name TEXT PRIMARY KEY, as_of TEXT NOT NULL)"
# Messages seen by the workers, by outcome, duplicates included (the inbox
# keeps first outcomes only). Operational counts, added after each batch's
# commit: a crash in between leaves them short by that batch.
COUNTS_TABLE = "CREATE TABLE IF NOT EXISTS worker_counts (outcome TEXT PRIMARY KEY, messages BIGINT NOT NULL)"
_MAX_CATCH_UP_DAYS = 62
_STORE_ATTEMPTS = 6
_TICK_WAIT_FOR_LAG = 600.0


def _is_store_error(error: BaseException) -> bool:
    import sqlite3

    from eventsourcing.persistence import PersistenceError

    return isinstance(error, (PersistenceError, sqlite3.OperationalError)) or type(error).__module__.startswith(
        "psycopg")


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker):
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            logger.info("partitions revoked", extra={"fields": {"partitions": _names(revoked)}})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        # Accounts of partitions another worker held meanwhile may be stale
        # in the cache: start from the store.
        self.worker.forget_cache = True
        logger.info("partitions assigned", extra={"fields": {"partitions": _names(assigned)}})


def _names(tps: Any) -> dict[str, list[int]]:
    """topic -> partitions, for the log."""
    by_topic: dict[str, list[int]] = {}
    for tp in sorted(tps):
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return by_topic


class Worker:
    def __init__(self, settings: Settings, worker_settings: WorkerSettings, names: Names):
        self.settings = settings
        self.ws = worker_settings
        self.names = names
        self.runtime = Runtime(settings)
        self.runtime.projector.follow_batch_size = 1  # balances visible right after each batch
        self.apply_thread = ThreadPoolExecutor(1, thread_name_prefix="apply")
        self.publish_thread = ThreadPoolExecutor(1, thread_name_prefix="publish")
        self.publisher = Publisher(self.runtime.app, Database(settings.database), names)
        self.leadership = Leadership(settings.database, f"accrual:{names.group}:leader")
        self.stopping = asyncio.Event()
        self.forget_cache = False
        self.report = Report()
        self.batches = 0
        self._contract_topic = {names.topic(t.topic): t.topic for t in names.streams.inbound}
        with schema_lock(settings.database), self.publisher.db.transaction() as tx:
            tx.execute(TICK_TABLE)
            tx.execute(COUNTS_TABLE)

    # -- running ---------------------------------------------------------------

    async def run(self) -> None:
        problems = await check_topics(self.ws.bootstrap, self.names)
        if problems:
            raise SystemExit("the Kafka topics are not as streams.yaml says:\n  " + "\n  ".join(problems))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.ws.bootstrap,
            group_id=self.names.group,
            client_id="accrual-worker",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_poll_records=self.ws.batch_size,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
            max_poll_interval_ms=300_000,
        )
        await loop.run_in_executor(self.apply_thread, self.runtime.projector.catch_up)
        consumer.subscribe(self.names.inbound, listener=_Rebalance(self))
        await consumer.start()
        leader = asyncio.create_task(self._lead(), name="leader")
        logger.info("worker started", extra={"fields": {
            "group": self.names.group, "topics": self.names.inbound, "store": self.settings.database.redacted()}})
        try:
            while not self.stopping.is_set():
                records = await consumer.getmany(timeout_ms=100, max_records=self.ws.batch_size)
                if records:
                    await self._apply(consumer, records)
                if leader.done():
                    leader.result()  # a failure of the leader's jobs ends the worker
        finally:
            self.stopping.set()
            await _quietly(consumer.stop())
            await _quietly(leader)
            await loop.run_in_executor(self.apply_thread, self.runtime.close)
            self.leadership.release()
            self.apply_thread.shutdown()
            self.publish_thread.shutdown()
            logger.info("worker stopped", extra={"fields": {"batches": self.batches, **self._counts()}})

    def stop(self) -> None:
        if not self.stopping.is_set():
            logger.info("stopping: finishing the batch in hand")
            self.stopping.set()

    async def _apply(self, consumer: AIOKafkaConsumer, records: dict[TopicPartition, list]) -> None:
        started = time.perf_counter()
        received_at = datetime.now(timezone.utc)
        inbound = [
            inbound_from_record(self._contract_topic[tp.topic], tp.partition, r.offset, r.key, r.value, received_at)
            for tp, rs in records.items() for r in rs
        ]
        report = await self._process_with_retries(inbound)
        if report is None:
            return  # stopping: nothing committed, the batch is redelivered to the next owner
        assigned = consumer.assignment()  # a rebalance may have revoked some meanwhile: their new owner redelivers
        offsets = {tp: OffsetAndMetadata(rs[-1].offset + 1, "") for tp, rs in records.items() if tp in assigned}
        try:
            if offsets:
                await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as error:
            # The group rebalanced meanwhile: the new owner gets these
            # messages again, and the inbox makes them duplicates.
            logger.warning("offset commit failed; the batch will be redelivered as duplicates",
                           extra={"fields": {"error": str(error)}})
        self.batches += 1
        self.report.add(report)
        self._observe(report, len(inbound), time.perf_counter() - started, consumer, records)

    async def _process_with_retries(self, inbound: list) -> Report | None:
        """A store error (the database restarting, a network blip) is retried
        with backoff on the same batch; nothing of a failed attempt was saved.
        After the last attempt the error ends the worker (exit 3), and its
        supervisor restarts it: the batch is redelivered."""
        loop = asyncio.get_running_loop()
        for attempt in range(1, _STORE_ATTEMPTS + 1):
            try:
                return await loop.run_in_executor(self.apply_thread, self._process, inbound)
            except Exception as error:
                if attempt == _STORE_ATTEMPTS or not _is_store_error(error):
                    raise
                delay = min(0.5 * 2 ** attempt, 15)
                logger.warning("store error; the batch will be applied again", extra={"fields": {
                    "error": f"{type(error).__name__}: {error}", "attempt": attempt, "retry_in_s": delay}})
                self.runtime.app.forget()
                await _sleep(self.stopping, delay)
                if self.stopping.is_set():
                    return None
        return None

    def _process(self, inbound: list) -> Report:
        if self.forget_cache:
            self.forget_cache = False
            self.runtime.app.forget()
        report = self.runtime.app.process(inbound)
        self.runtime.projector.flush()
        with self.runtime.db.transaction() as tx:
            tx.executemany(
                "INSERT INTO worker_counts (outcome, messages) VALUES (?, ?) ON CONFLICT (outcome) "
                "DO UPDATE SET messages = worker_counts.messages + excluded.messages",
                sorted(report.outcomes.items()),
            )
        return report

    def _observe(self, report: Report, size: int, seconds: float, consumer: AIOKafkaConsumer, records: dict) -> None:
        metrics.BATCH_SIZE.observe(size)
        now_ms = time.time() * 1000
        for rs in records.values():
            for r in rs:
                if r.timestamp_type == 0:  # the producer's CreateTime
                    metrics.VISIBLE_SECONDS.observe(max(now_ms - r.timestamp, 0) / 1000)
        metrics.BATCH_SECONDS.observe(seconds)
        for outcome, count in report.outcomes.items():
            metrics.MESSAGES.labels(outcome).inc(count)
        for reason, count in report.rejected.items():
            metrics.REJECTED.labels(reason).inc(count)
        assigned = consumer.assignment()
        for tp in records:
            if tp not in assigned:
                continue  # revoked while the batch was applied (a rebalance)
            high = consumer.highwater(tp)
            if high is not None:
                metrics.LAG.labels(tp.topic, str(tp.partition)).set(max(high - (records[tp][-1].offset + 1), 0))
        logger.debug("batch applied", extra={"fields": {"messages": size, "ms": round(seconds * 1000, 1),
                                                         **dict(report.outcomes)}})

    def _counts(self) -> dict[str, int]:
        return dict(self.report.outcomes)

    # -- the leader's jobs: the publisher and the daily tick ----------------------

    async def _lead(self) -> None:
        loop = asyncio.get_running_loop()
        producer = None
        next_tick_check = 0.0
        next_lock_check = 0.0
        try:
            while not self.stopping.is_set():
                if not self.leadership.held:
                    acquired = await loop.run_in_executor(self.publish_thread, self.leadership.try_acquire)
                    metrics.LEADER.set(1 if acquired else 0)
                    if not acquired:
                        await _sleep(self.stopping, 2.0)
                        continue
                    logger.info("leadership taken: publishing the outbound topics and running the daily tick")
                if producer is None:
                    try:
                        producer = new_producer(self.ws.bootstrap)
                        await producer.start()
                        await self.publisher.recover(self.ws.bootstrap)
                    except KafkaError as error:
                        producer = await self._publisher_failed(producer, error)
                        continue
                if time.monotonic() >= next_lock_check:
                    next_lock_check = time.monotonic() + 5
                    if not await loop.run_in_executor(self.publish_thread, self.leadership.still_held):
                        logger.warning("leadership lost (the lock's database session ended); standing down")
                        if producer is not None:
                            await _quietly(producer.stop())
                        producer = None
                        metrics.LEADER.set(0)
                        continue
                try:
                    sent = await self._publish_once(producer)
                except KafkaError as error:
                    producer = await self._publisher_failed(producer, error)
                    continue
                if self.ws.auto_tick and time.monotonic() >= next_tick_check:
                    await self._tick_if_due()
                    next_tick_check = time.monotonic() + (5 if self._tick_waiting_since else 30)
                if not sent:
                    await _sleep(self.stopping, 0.02)
        finally:
            if producer is not None:
                await _quietly(producer.stop())
            metrics.LEADER.set(0)

    async def _publisher_failed(self, producer: Any, error: Exception) -> None:
        """Kafka refused or timed out: the chunk's position was not committed,
        so it is sent again after `recover` (which skips what got through)."""
        logger.warning("publishing failed; retrying with a new producer in 5 s",
                       extra={"fields": {"error": f"{type(error).__name__}: {error}"}})
        if producer is not None:
            await _quietly(producer.stop())
        await _sleep(self.stopping, 5.0)
        return None

    async def _publish_once(self, producer: Any) -> int:
        loop = asyncio.get_running_loop()
        records, commit, position = await loop.run_in_executor(self.publish_thread, self.publisher.read_chunk)
        if not records and position == self.publisher_position_seen:
            return 0
        sent = await self.publisher.send(producer, records)
        await loop.run_in_executor(self.publish_thread, commit)
        self.publisher_position_seen = position
        metrics.PUBLISH_POSITION.set(position)
        for r in records:
            metrics.PUBLISHED.labels(r.topic).inc()
        return sent or len(records)

    publisher_position_seen = -1

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
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(
            self.publish_thread, self.publisher.db.query, "SELECT as_of FROM worker_ticks WHERE name = ?", ("daily",)
        )
        last = date.fromisoformat(rows[0][0]) if rows else today - timedelta(days=1)
        day = max(last + timedelta(days=1), today - timedelta(days=_MAX_CATCH_UP_DAYS))
        if day > today or not await self._caught_up():
            return
        while day <= today and not self.stopping.is_set():
            started = time.perf_counter()
            report = await loop.run_in_executor(self.apply_thread, self.runtime.tick, day)
            await loop.run_in_executor(self.apply_thread, self.runtime.projector.flush)
            await loop.run_in_executor(self.publish_thread, self._record_tick, day)
            metrics.TICKS.inc()
            logger.info("daily tick", extra={"fields": {
                "as_of": day.isoformat(), "settled": report.settled, "expired_points": report.expired_points,
                "seconds": round(time.perf_counter() - started, 2)}})
            day += timedelta(days=1)

    async def _caught_up(self) -> bool:
        """The tick closes the day on what has arrived: while the group still
        lags (a backlog after downtime, a burst at midnight), it waits, for
        at most `_TICK_WAIT_FOR_LAG` seconds after it first became due."""
        from accrual.status import kafka_lag

        try:
            lag = sum(row["lag"] for row in await kafka_lag(self.ws.bootstrap, self.names))
        except Exception as error:  # no lag figure: do not hold the close back for it
            logger.warning("lag unknown before the tick", extra={"fields": {"error": str(error)}})
            return True
        now = time.monotonic()
        if lag == 0:
            self._tick_waiting_since = None
            return True
        if self._tick_waiting_since is None:
            self._tick_waiting_since = now
            logger.info("daily tick due: waiting for the group to catch up", extra={"fields": {"lag": lag}})
        if now - self._tick_waiting_since < _TICK_WAIT_FOR_LAG:
            return False
        logger.warning("daily tick runs with the group still lagging", extra={"fields": {"lag": lag}})
        self._tick_waiting_since = None
        return True

    _tick_waiting_since: float | None = None

    def _record_tick(self, day: date) -> None:
        with self.publisher.db.transaction() as tx:
            tx.execute(
                "INSERT INTO worker_ticks (name, as_of) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET as_of = excluded.as_of",
                ("daily", day.isoformat()),
            )


async def _sleep(stopping: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("while stopping")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and the
    record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
