"""`accrual worker`: the Kafka stream worker, three processes.

    this process:   inbound topics ──▶ edge ──▶ AccrualApplication ──▶ offsets
                    (accrual/consumer.py: one transaction per batch)
    read models:    a child that follows the event log and writes them
                    (accrual/follower.py)
    leader:         a child that, while it holds the store's leadership lock,
                    publishes the outbound topics and runs the daily tick
                    (accrual/leader.py)

Each process is one Python interpreter on a core of its own, so the domain
work does not wait for the read models or the publisher (they shared one
interpreter's lock before). All three follow the store, never each other:
each commits its position with its work, so any of them can die anywhere;
the children die with the worker (accrual/processes.py).

SIGTERM (or Ctrl-C) finishes the batch in hand, commits it, leaves the
group, lets the read models reach the end of the log and stops the leader.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import signal
import time
from typing import Any

from accrual import publisher
from accrual.consumer import Consumer
from accrual.follower import Follower
from accrual.health import Health, StoreProbe
from accrual.kafka import Names, check_topics
from accrual.leader import apply_metric_update, run_leader
from accrual.outage import BrokerOutage, StoreOutage
from accrual.processes import OUTAGE_EXIT_CODE, spawn
from accrual.runtime import Runtime, schema_lock
from accrual.settings import Settings, WorkerSettings
from projections.db import Database

logger = logging.getLogger("accrual.worker")

TICK_TABLE = "CREATE TABLE IF NOT EXISTS worker_ticks (name TEXT PRIMARY KEY, as_of TEXT NOT NULL)"
# Messages seen by the workers, by outcome, duplicates included (the inbox
# keeps first outcomes only). Operational counts, added once a second after
# the batches' commits: a crash in between leaves them short by that second.
COUNTS_TABLE = "CREATE TABLE IF NOT EXISTS worker_counts (outcome TEXT PRIMARY KEY, messages BIGINT NOT NULL)"
CHILD_STOP_SECONDS = 60.0
PROBE_SECONDS = 2.0  # /readyz is at most this stale
PROBE_TIMEOUT_SECONDS = 5.0  # a broker or store slower than this to answer is "not answering"


class Worker:
    def __init__(self, settings: Settings, worker_settings: WorkerSettings, names: Names, log_level: str = "INFO",
                 health: Health | None = None):
        self.settings = settings
        self.health = health or Health()
        self.broker_down_since: float | None = None
        self.ws = worker_settings
        self.names = names
        self.log_level = log_level
        self.runtime = Runtime(settings)
        self.runtime.app.on_saved = None  # the read models follow in their own process
        self.stopping = asyncio.Event()
        self.consumer = Consumer(self.runtime, worker_settings, names, self.stopping, self.health)
        database = Database(settings.database)
        with schema_lock(settings.database), database.transaction() as tx:
            tx.execute(TICK_TABLE)
            tx.execute(COUNTS_TABLE)
        publisher.create_tables(database)  # before the leader starts: `accrual status` reads them
        database.close()

    async def run(self) -> None:
        problems = await check_topics(self.ws.bootstrap, self.names)
        if problems:
            raise SystemExit("the Kafka topics are not as streams.yaml says:\n  " + "\n  ".join(problems))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        read_models = Follower(self.settings).start()
        updates = _context_queue()
        leader, leader_stop = spawn(run_leader, self.settings, self.ws, self.names, updates, self.log_level,
                                    name="accrual-leader")
        leader.start()
        consumer = self.consumer.kafka_consumer()
        consuming = asyncio.create_task(self.consumer.run(consumer), name="consumer")
        probing = asyncio.create_task(self._probe(consumer), name="probe")
        self.health.started = True
        logger.info("worker started", extra={"fields": {
            "group": self.names.group, "topics": self.names.inbound, "store": self.settings.database.redacted()}})
        try:
            while not self.stopping.is_set():
                self.health.turned()
                await _drain(updates)
                if consuming.done():
                    consuming.result()  # a failure of the consumer ends the worker
                if not read_models.alive:
                    _child_ended("the read-model follower", read_models.exitcode)
                if not leader.is_alive():
                    _child_ended("the leader process", leader.exitcode)
                self._check_broker_outage()
                await asyncio.sleep(0.1)
        except (StoreOutage, BrokerOutage):
            # The read models cannot reach the end of a log they cannot read:
            # stop them at once; they catch up at the next start.
            read_models.kill()
            raise
        finally:
            self.stopping.set()
            self.health.stopping = True
            await _quietly(probing)
            await _quietly(consuming)
            await _quietly(consumer.stop())
            leader_stop.set()
            await loop.run_in_executor(None, read_models.finish, CHILD_STOP_SECONDS)
            await loop.run_in_executor(None, leader.join, CHILD_STOP_SECONDS)
            if leader.is_alive():
                leader.terminate()
            await _drain(updates)
            self.consumer.close()  # writes the last counts
            await loop.run_in_executor(None, self.runtime.close)
            logger.info("worker stopped", extra={"fields": {"batches": self.consumer.batches,
                                                             **dict(self.consumer.report.outcomes)}})

    def _check_broker_outage(self) -> None:
        """The broker is ridden out like the store (the Kafka client
        reconnects by itself), for as long as the same outage limit."""
        now = time.monotonic()
        if self.health.broker_ok or not self.health.started:
            self.broker_down_since = None
            return
        if self.broker_down_since is None:
            self.broker_down_since = now
        elif now - self.broker_down_since >= self.settings.store_outage_limit_s:
            raise BrokerOutage(f"the worker: the broker ({self.ws.bootstrap}) has not answered for "
                              f"{now - self.broker_down_since:.0f} s (ACCRUAL_STORE_OUTAGE_LIMIT is "
                              f"{self.settings.store_outage_limit_s} s)")

    async def _probe(self, consumer: Any) -> None:
        """Every few seconds, asks the cluster for its topics (a remote call
        each time) and the store for `SELECT 1`, so that /readyz says whether
        both answer: an idle consumer whose servers are gone only sees empty
        polls. The store's answer is also the consumer's outage state."""
        loop = asyncio.get_running_loop()
        store = StoreProbe(self.settings.database)
        try:
            while not self.stopping.is_set():
                try:
                    await asyncio.wait_for(consumer.topics(), timeout=PROBE_TIMEOUT_SECONDS)
                    self.health.broker_ok = True
                except Exception:  # a timeout or any error of the client: not answering
                    self.health.broker_ok = False
                try:
                    await asyncio.wait_for(loop.run_in_executor(store.thread, store.check),
                                           timeout=PROBE_TIMEOUT_SECONDS)
                    self.health.store_ok = not self.consumer.outage.ongoing
                except Exception:  # a timeout or any error of the store: not answering
                    self.health.store_ok = False
                try:
                    await asyncio.wait_for(self.stopping.wait(), timeout=PROBE_SECONDS)
                except asyncio.TimeoutError:
                    pass
        finally:
            store.close()

    def stop(self) -> None:
        if not self.stopping.is_set():
            logger.info("stopping: finishing the batch in hand")
            self.stopping.set()


def _child_ended(what: str, code: int | None) -> None:
    if code == OUTAGE_EXIT_CODE:
        raise StoreOutage(f"{what} gave up: the store has not answered for longer than ACCRUAL_STORE_OUTAGE_LIMIT")
    raise RuntimeError(f"{what} ended (exit code {code})")


def _context_queue() -> Any:
    import multiprocessing

    return multiprocessing.get_context("spawn").Queue()


async def _drain(updates: Any) -> None:
    """The leader's metric updates that have arrived."""
    while True:
        try:
            apply_metric_update(updates.get_nowait())
        except queue.Empty:
            return


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except asyncio.CancelledError:
        # aiokafka's `stop` with the broker gone can end in the
        # cancellation of its own fetch task; that must not replace the
        # reason the worker is stopping (an outage's exit code 3). Only
        # a cancellation of this task itself goes on.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        logger.warning("while stopping: a task of the Kafka client was cancelled")
    except Exception:
        logger.exception("while stopping")
