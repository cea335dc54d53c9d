"""The worker's own job: consume the inbound topics and apply them.

    inbound topics ──getmany(≤ batch)──▶ edge (schemas) ──▶ AccrualApplication.process
        (one database transaction: the batch's events + its inbox rows)
        ──▶ offsets committed to the consumer group

Exactly-once effect: the inbox rows (topic, event id → outcome) are written
in the same transaction as the batch's events, so a batch redelivered after
a crash between the database commit and the offset commit is all
duplicates. Offsets are committed to Kafka after each batch, so the usual
lag tools see the worker's progress.

The range assignor gives one worker the same partition numbers of every
inbound topic; producers key by msisdn with the same partitioner, so a
member's usage, shop, card and enrollment messages reach the same worker and
its account cache stays useful. Correctness does not depend on it: a
conflicting write is detected by the account version and the batch is
applied again.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from accrual import metrics
from accrual.health import Health
from accrual.intake import inbound_from_record
from accrual.kafka import Names
from accrual.outage import Outage, is_store_error
from accrual.runtime import Runtime
from accrual.settings import WorkerSettings
from engine.messages import Report

logger = logging.getLogger("accrual.worker")

COUNTS_EVERY_SECONDS = 1.0


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, consumer: Consumer):
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.consumer.health.partitions = 0  # until the assignment that follows
        if revoked:
            logger.info("partitions revoked", extra={"fields": {"partitions": _names(revoked)}})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        # Accounts of partitions another worker held meanwhile may be stale
        # in the cache: start from the store.
        self.consumer.forget_cache = True
        self.consumer.health.partitions = len(assigned)
        logger.info("partitions assigned", extra={"fields": {"partitions": _names(assigned)}})


def _names(tps: Any) -> dict[str, list[int]]:
    """topic -> partitions, for the log."""
    by_topic: dict[str, list[int]] = {}
    for tp in sorted(tps):
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return by_topic


class Consumer:
    def __init__(self, runtime: Runtime, ws: WorkerSettings, names: Names, stopping: asyncio.Event,
                 health: Health | None = None):
        self.runtime = runtime
        self.health = health or Health()
        self.ws = ws
        self.names = names
        self.stopping = stopping
        self.apply_thread = ThreadPoolExecutor(1, thread_name_prefix="apply")
        self.forget_cache = False
        self.report = Report()
        self.batches = 0
        self.uncounted: Counter = Counter()  # deliveries by outcome not yet in worker_counts
        self.counted_at = time.monotonic()
        self._contract_topic = {names.topic(t.topic): t.topic for t in names.streams.inbound}
        self.outage = Outage("the consumer", runtime.settings.store_outage_limit_s)
        metrics.STORE_AVAILABLE.set(1)  # the runtime has just opened the store

    def kafka_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
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

    async def run(self, consumer: AIOKafkaConsumer) -> None:
        """Until `stopping`: poll, apply, commit. A batch in hand when asked
        to stop is finished and committed first."""
        consumer.subscribe(self.names.inbound, listener=_Rebalance(self))
        await consumer.start()
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            records = await consumer.getmany(timeout_ms=100, max_records=self.ws.batch_size)
            if records:
                await self._apply(consumer, records)
            elif self.uncounted and time.monotonic() - self.counted_at >= COUNTS_EVERY_SECONDS:
                try:
                    await loop.run_in_executor(self.apply_thread, self.write_counts)
                except Exception as error:
                    if not is_store_error(error):
                        raise
                    # kept for the next second: counts wait for the store like batches do

    def close(self) -> None:
        """Writes the last counts (lost, and said so, if the store does not
        answer: they are operational figures, not programme data)."""
        try:
            self.apply_thread.submit(self.write_counts).result()
        except Exception as error:
            if not is_store_error(error):
                raise
            logger.warning("the last deliveries were not counted in worker_counts: the store does not answer",
                           extra={"fields": {"uncounted": dict(self.uncounted)}})
        finally:
            self.apply_thread.shutdown()

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
        """A store error (the database restarting, a terminated session, a
        network blip) is retried on the same batch, with backoff, for as long
        as the outage limit allows; nothing of a failed attempt was saved, and
        no offset is committed meanwhile. The consumer stays in its group
        (heartbeats go on; a wait beyond the poll interval rejoins it, and a
        partition that moved is redelivered to its new owner as duplicates).
        Past the limit, StoreOutage ends the worker (exit 3)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                report = await loop.run_in_executor(self.apply_thread, self._process, inbound)
            except Exception as error:
                if not is_store_error(error):
                    raise
                delay = self.outage.failed(error, time.monotonic())  # raises StoreOutage past the limit
                metrics.STORE_AVAILABLE.set(0)
                self.health.store_ok = False
                logger.warning("store error; the batch will be applied again", extra={"fields": {
                    "error": f"{type(error).__name__}: {error}", "attempt": self.outage.attempts,
                    "retry_in_s": round(delay, 2)}})
                self.runtime.app.forget()  # accounts read before the outage may be stale
                try:
                    await asyncio.wait_for(self.stopping.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
                if self.stopping.is_set():
                    return None
                continue
            if self.outage.ongoing:
                lasted = self.outage.recovered(time.monotonic())
                metrics.STORE_AVAILABLE.set(1)
                self.health.store_ok = True
                logger.info("the store answers again; consuming goes on", extra={"fields": {
                    "outage_s": round(lasted, 1)}})
            return report

    def _process(self, inbound: list) -> Report:
        if self.forget_cache:
            self.forget_cache = False
            self.runtime.app.forget()
        report = self.runtime.app.process(inbound)
        self.uncounted.update(report.outcomes)
        if time.monotonic() - self.counted_at >= COUNTS_EVERY_SECONDS:
            self.write_counts()
        return report

    def write_counts(self) -> None:
        """Adds the deliveries seen since the last time to `worker_counts`
        (once a second, not per batch: a commit costs a WAL flush)."""
        counts, self.uncounted = self.uncounted, Counter()
        self.counted_at = time.monotonic()
        if not counts:
            return
        try:
            with self.runtime.db.transaction() as tx:
                tx.executemany(
                    "INSERT INTO worker_counts (outcome, messages) VALUES (?, ?) ON CONFLICT (outcome) "
                    "DO UPDATE SET messages = worker_counts.messages + excluded.messages",
                    sorted(counts.items()),
                )
        except BaseException:
            self.uncounted.update(counts)  # not written: added to the next try's
            raise

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
