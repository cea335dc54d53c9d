"""`accrual notifier`: the faust-streaming application that wires the core
(`notifier.decide`) to Kafka and the SMS gateway (docs/notifications.md).

    loyalty.points-events.v1 ─┐
    loyalty.member-preferences.v1 ─┼─▶ agent `notify` ─▶ Table members (msisdn → MemberState)
    accrual-notifier.ticks ───┘            │            Table preferences (msisdn → groups off)
                                           ▼            Table clock (partition → the last tick's moment)
                      SmsGateway.send(…, idempotency_key=notification key)

One agent reads the three topics, so a member's events, preferences and
ticks are handled one at a time, in the order of their partition: no two
handlers change one member's state at once. Each record is handled in
three steps: decide (pure), send what is due (each send idempotent on its
key), then write the new state to the table. A crash between the send and
the table's changelog write handles the record again, and the repeated
send is dropped by its key; a crash before the send sends it on the second
handling. Either way, each notification once.

The tables are written from the partition of the record in hand (faust
writes a table's changelog to that partition), so a tick on partition p
changes only the members whose records arrive on partition p: the same
partitioner as the engine's publisher (`accrual.kafka.partition_for`).

The faults of faust-streaming and aiokafka that the crash tests found are
worked around in `accrual.faust_fixes`, which `build` wires in.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Callable, Mapping

import faust
from aiokafka import AIOKafkaProducer

from accrual import faust_fixes
from accrual import notifier_metrics as metrics
from accrual.health import Health
from accrual.kafka import Names, check_topics, partition_for
from accrual.outage import backoff_s, is_store_error
from accrual.settings import SettingsError, WorkerSettings
from engine.calendar import moscow_date
from notifier import codec
from notifier.decide import Decision, on_event, on_tick
from notifier.events import PointsEvent
from notifier.member import REMINDER_DAYS, MemberState
from notifier.notification import Notification
from notifier.preferences import EVERYTHING_ON, Preferences
from notifier.quiet import is_daily_run_due
from schemas.msisdn import is_msisdn
from web.sms import SmsError, SmsGateway

logger = logging.getLogger("accrual.notifier")

SYSTEM, TICKS = "system", "ticks"  # where the notifier's time comes from (NotifierSettings.clock)
EXIT_DEFECT = 70  # EX_SOFTWARE: a record the notifier cannot handle; nothing of it was committed


class StoppedWhileWaiting(Exception):
    """SIGTERM came while a send waited for the gateway or the outbox."""


@dataclass(frozen=True)
class NotifierSettings:
    bootstrap: str
    partitions: int  # of the three inbound topics (streams.yaml checks they agree)
    clock: str = SYSTEM  # SYSTEM: the wall clock; TICKS: the moment of the partition's last tick (tests, rehearsals)
    tick_every_s: float = 60.0  # the timer's period; TICKS mode has no timer: ticks come from outside
    replication_factor: int = 1
    commit_every_s: float = 1.0  # faust commits offsets and the tables' changelogs this often
    metrics_port: int | None = None

    @classmethod
    def from_env(cls, worker: WorkerSettings, names: Names, environ: Mapping[str, str] | None = None) -> NotifierSettings:
        env = os.environ if environ is None else environ
        clock = env.get("ACCRUAL_NOTIFIER_CLOCK", SYSTEM).strip().lower() or SYSTEM
        if clock not in (SYSTEM, TICKS):
            raise SettingsError(f"ACCRUAL_NOTIFIER_CLOCK={clock!r}: expected {SYSTEM} or {TICKS}")
        port = env.get("ACCRUAL_NOTIFIER_METRICS_PORT", "9465").strip()
        if port and not (port.isascii() and port.isdigit() and int(port) < 65536):
            raise SettingsError(f"ACCRUAL_NOTIFIER_METRICS_PORT={port!r}: expected a port number, or 0 for none")
        commit = env.get("ACCRUAL_NOTIFIER_COMMIT_EVERY", "1").strip()
        try:
            commit_every_s = float(commit)
        except ValueError:
            commit_every_s = 0.0
        if not (commit.isascii() and commit.replace(".", "", 1).isdigit()) or not 0.05 <= commit_every_s <= 60:
            raise SettingsError(f"ACCRUAL_NOTIFIER_COMMIT_EVERY={commit!r}: expected seconds, 0.05 to 60")
        return cls(bootstrap=worker.bootstrap, partitions=names.streams.points_events.partitions, clock=clock,
                   replication_factor=worker.replication_factor, commit_every_s=commit_every_s,
                   metrics_port=int(port) if port and port != "0" else None)


class Notifier:
    """What the agent does with one record, without faust: `members`,
    `preferences` and `clock` are the tables (any mutable mapping with the
    values faust keeps: JSON-shaped), `partition` the record's."""

    def __init__(self, names: Names, partitions: int, gateway: SmsGateway, clock: str,
                 members: Any, preferences: Any, ticks: Any, stopping: Callable[[], bool] = lambda: False):
        self.names = names
        self.partitions = partitions
        self.gateway = gateway
        self.clock = clock
        self.members = members
        self.preferences = preferences
        self.ticks = ticks
        self.stopping = stopping
        self._partitions: dict[str, int] = {}

    async def handle(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        if topic == self.names.points_events:
            await self.points_event(partition, key, value)
        elif topic == self.names.member_preferences:
            self.preferences_changed(key, value)
        elif topic == self.names.notifier_ticks:
            await self.tick(partition, value)

    async def points_event(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        try:
            event = PointsEvent.from_record(json.loads(value or b""))
            # the table's key is the record's: its changelog record goes to this partition
            if not (is_msisdn(event.msisdn) and key == event.msisdn.encode()):
                raise ValueError(f"the record's key {key!r} is not its member's number")
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            # The engine's own topic: a record it cannot read is a defect of a release, said loudly and counted
            # (accrual_notifier_unreadable_total), never a crash that would stop every member's notifications.
            metrics.UNREADABLE.labels(self.names.points_events).inc()
            logger.error("unreadable points event", extra={"fields": {
                "partition": partition, "reason": f"{type(error).__name__}: {error}"}})
            return
        stored = self.members.get(event.msisdn)
        state = codec.from_json(stored) if stored else MemberState(event.msisdn)
        at = self.now(partition, event.occurred_at)
        decision = on_event(state, event, self._preferences(event.msisdn), at)
        await self._carry_out(decision, at)
        if decision.state != state:
            self.members[event.msisdn] = codec.to_json(decision.state)

    def preferences_changed(self, key: bytes | None, value: bytes | None) -> None:
        msisdn = (key or b"").decode("ascii", "replace")
        if not is_msisdn(msisdn):
            metrics.UNREADABLE.labels(self.names.member_preferences).inc()
            logger.error("unreadable preferences", extra={"fields": {"reason": f"key {key!r} is not a number"}})
            return
        if value is None:  # a tombstone: back to the defaults
            self.preferences.pop(msisdn, None)
            return
        try:
            record = json.loads(value)
            chosen = Preferences.from_record(record)
            version = int(record.get("version") or 0)
        except (ValueError, TypeError, AttributeError) as error:
            metrics.UNREADABLE.labels(self.names.member_preferences).inc()
            logger.error("unreadable preferences", extra={"fields": {
                "msisdn": msisdn, "reason": f"{type(error).__name__}: {error}"}})
            return
        held = self.preferences.get(msisdn)
        if held and int(held.get("version") or 0) > version:  # an older version read after a newer one
            return
        self.preferences[msisdn] = {"off": sorted(chosen.off), "version": version}

    async def tick(self, partition: int, value: bytes | None) -> None:
        """The daily run and the morning's waiting messages for the
        members of this partition (the timer sends one tick a partition)."""
        if self.clock == TICKS:
            try:
                moment = datetime.fromisoformat(json.loads(value or b"")["at"])
                assert moment.tzinfo is not None
            except (ValueError, KeyError, TypeError, AssertionError):
                metrics.UNREADABLE.labels(self.names.notifier_ticks).inc()
                return
            held = self.ticks.get(str(partition))
            if held is None or datetime.fromisoformat(held) < moment:
                self.ticks[str(partition)] = moment.isoformat()
        at = self.now(partition)
        for msisdn in [m for m in self.members.keys() if self._partition_of(m) == partition]:
            stored = self.members[msisdn]
            if not _may_have_work(stored, at):
                continue
            state = codec.from_json(stored)
            decision = on_tick(state, self._preferences(msisdn), at)
            await self._carry_out(decision, at)
            if decision.state != state:
                self.members[msisdn] = codec.to_json(decision.state)

    def now(self, partition: int, at_least: datetime | None = None) -> datetime:
        """SYSTEM: the wall clock. TICKS: the moment of the partition's last
        tick, or before its first tick the record's own moment."""
        if self.clock == SYSTEM:
            return datetime.now(timezone.utc)
        held = self.ticks.get(str(partition))
        if held is not None:
            return datetime.fromisoformat(held)
        return at_least or datetime.fromtimestamp(0, timezone.utc)

    def _preferences(self, msisdn: str) -> Preferences:
        held = self.preferences.get(msisdn)
        return Preferences.from_record(held) if held else EVERYTHING_ON

    def _partition_of(self, msisdn: str) -> int:
        """Memoised: every tick asks it of every member the instance holds,
        and murmur2 in Python costs microseconds a call."""
        partition = self._partitions.get(msisdn)
        if partition is None:
            partition = self._partitions[msisdn] = partition_for(msisdn.encode(), self.partitions)
        return partition

    async def _carry_out(self, decision: Decision, at: datetime) -> None:
        for notification in decision.send:
            await self._send(notification, at)
            metrics.SENT.labels(notification.kind).inc()
        for notification in decision.delayed:
            metrics.DELAYED.labels(notification.kind).inc()
        for notification in decision.suppressed:
            metrics.SUPPRESSED.labels(notification.kind).inc()

    async def _send(self, notification: Notification, at: datetime) -> None:
        """Until the gateway takes it: a member's later notifications wait
        behind it (they are in order, and none is lost while the provider
        or the outbox's database is down); SIGTERM stops the waiting, and the
        record is handled again at the next start."""
        loop = asyncio.get_running_loop()
        for attempt in itertools.count(1):
            try:
                await loop.run_in_executor(None, lambda: self.gateway.send(
                    notification.msisdn, notification.text, at, idempotency_key=notification.key))
                return
            except Exception as error:
                if not (isinstance(error, SmsError) or is_store_error(error)):
                    raise
                metrics.SEND_FAILURES.inc()
                wait = backoff_s(attempt, random.random())  # the worker's: 0.5 s doubling to 15 s, jittered
                logger.warning("a notification could not be sent", extra={"fields": {
                    "key": notification.key, "reason": f"{type(error).__name__}: {error}",
                    "retry_in_s": round(wait, 2)}})
                if self.stopping():
                    raise StoppedWhileWaiting(notification.key) from error
                await asyncio.sleep(wait)


def _may_have_work(stored: dict[str, Any], at: datetime) -> bool:
    """A look at the stored JSON before the state is read whole: a tick
    has work for a member with a message waiting, or, once today's run is
    due and not done, with credits to announce or lots expiring within 30
    days. Any other member's run would decide nothing, so it is not run and
    its state is not written (a daily write of every member's state would
    be the notifier's largest cost)."""
    if stored.get("waiting"):
        return True
    today = moscow_date(at)
    if not is_daily_run_due(at) or (stored.get("ticked_on") or "") >= today.isoformat():
        return False
    horizon = (today + timedelta(days=max(REMINDER_DAYS))).isoformat()
    return bool(stored.get("credits")) or any(lot[2] <= horizon for lot in stored.get("lots") or ())


TABLES = ("members", "preferences", "clock")


async def _changelogs_ready(settings: NotifierSettings, names: Names, timeout_s: float = 60.0) -> None:
    """Creates the tables' changelog topics (compacted, one partition per
    partition of the inbound topics) and waits until the broker describes
    them whole. faust would create them itself at start, but on a just
    created topic its first table write can still find "0 partitions" in
    the client's metadata (`PartitionsMismatch`, seen in CI on a broker
    just started), which stopped the notifier at its first record."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    wanted = [f"{names.notifier_group}-{table}-changelog" for table in TABLES]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, client_id="accrual-notifier-admin")
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(topic, settings.partitions, settings.replication_factor,
                     topic_configs={"cleanup.policy": "compact"}) for topic in wanted])
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            described = await admin.describe_topics(wanted)
            if all(not d.get("error_code") and len(d["partitions"]) == settings.partitions for d in described):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise SystemExit(f"the notifier's changelog topics are not ready after {timeout_s:g} s: {described}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


def run(settings: NotifierSettings, names: Names, gateway: SmsGateway, log_level: str = "INFO",
        data_dir: str | None = None, health: Health | None = None) -> None:
    """Runs until SIGTERM or SIGINT: faust stops the agent after the record
    in hand, commits what was handled and leaves the group."""
    from faust.worker import Worker

    problems = asyncio.run(check_topics(settings.bootstrap, names))
    if problems:
        raise SystemExit("the Kafka topics are not as streams.yaml says:\n  " + "\n  ".join(problems))
    asyncio.run(_changelogs_ready(settings, names))
    app = build(settings, names, gateway, data_dir or tempfile.mkdtemp(prefix="accrual-notifier-"), health)
    logger.info("notifier starting", extra={"fields": {
        "group": names.notifier_group, "clock": settings.clock, "partitions": settings.partitions}})
    Worker(app, loglevel=log_level, quiet=True, override_logging=False).execute_from_commandline()


def build(settings: NotifierSettings, names: Names, gateway: SmsGateway, data_dir: str,
          health: Health | None = None) -> faust.App:
    """The faust application: one agent over the three topics, the three
    tables, and (SYSTEM clock) the leader's timer."""
    app = faust.App(
        names.notifier_group,
        broker=f"kafka://{settings.bootstrap}",
        store="memory://",  # the tables are rebuilt from their changelogs at start (compacted)
        # at least once (faust's default): each send is idempotent on its key, and faust flushes its producer
        # (the tables' changelog writes) before it commits an offset, so a committed record's state is on the
        # broker; faust's exactly_once (a transaction per partition) failed the crash tests in ways of its own
        # (docs/notifications.md, "faults of faust-streaming")
        processing_guarantee="at_least_once",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_commit_interval=settings.commit_every_s,
        # the tables' changelog writes batched for 10 ms (faust's 0 sends each alone): bench.notifier, 1,222
        # records/s at 0, 1,749 at 10 ms; the flush before each commit still puts them ahead of the offsets
        producer_linger=0.01,
        consumer_auto_offset_reset="earliest",
        # faust's 60 s: a killed instance's partitions would wait a minute for the survivors; the worker's 10 s
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        web_enabled=False,
        autodiscover=False,
        table_standby_replicas=0,
        datadir=data_dir,
        TableManager=faust_fixes.SeekFirstTableManager,  # no record skipped at the end of a recovery (the class says why)
    )
    faust_fixes.read_committed(app)
    faust_fixes.seek_every_partition(app, {names.points_events, names.member_preferences, names.notifier_ticks})
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    inbound = app.topic(names.points_events, names.member_preferences, names.notifier_ticks, **raw)
    table = {"partitions": settings.partitions,
             "schema": faust.Schema(key_type=str, key_serializer="json", value_serializer="json")}
    members, preferences, clock = (app.Table(name, default=None, **table) for name in TABLES)
    notifier = Notifier(names, settings.partitions, gateway, settings.clock, members, preferences, clock,
                        stopping=lambda: app.should_stop)
    app.notifier = notifier  # type: ignore[attr-defined]  # for the tests that read the tables

    @app.agent(inbound)
    async def notify(stream: AsyncIterator[Any]) -> None:
        async for event in stream.events():  # type: ignore[attr-defined]
            await handle(event)

    async def handle(event: Any) -> None:
        message = event.message
        try:
            await notifier.handle(message.topic, message.partition, message.key, message.value)
        except StoppedWhileWaiting as waiting:
            # nothing of the record in hand is committed: the next start handles it again
            logger.info("stopped while a notification waited for the gateway", extra={"fields": {
                "key": str(waiting), "topic": message.topic, "partition": message.partition}})
            logging.shutdown()
            os._exit(0)
        except Exception:
            # A defect (not an outage: those are waited out in `_send`). faust would restart the agent
            # with this record acknowledged, and a restart from the changelog would skip it: a lost
            # notification. Exiting at once commits nothing of it (the open transaction is aborted),
            # so the next start handles it again; a record that fails every time stops the notifier
            # where it is, loudly, instead of being passed over.
            logger.critical("the notifier cannot handle a record; exiting without committing it",
                            exc_info=True, extra={"fields": {
                                "topic": message.topic, "partition": message.partition,
                                "offset": message.offset}})
            logging.shutdown()
            os._exit(EXIT_DEFECT)

    if health is not None:
        @app.timer(1.0)
        async def beat() -> None:
            health.turned()
            health.partitions = len(app.assignor.assigned_actives())
            health.broker_ok = health.partitions > 0
            health.stopping = bool(app.should_stop)

    if settings.clock == SYSTEM:
        @app.timer(settings.tick_every_s, on_leader=True)
        async def timer() -> None:
            """One tick to each partition, sent by the group's leader only.
            The tick says only "now"; the agent reads the clock itself, so a
            tick that waited in the topic acts at the time it is handled."""
            await send_ticks(settings.bootstrap, names.notifier_ticks, settings.partitions, datetime.now(timezone.utc))

    return app


async def send_ticks(bootstrap: str, topic: str, partitions: int, at: datetime) -> None:
    """One tick `{"at": …}` to each partition of the ticks topic (the timer;
    and the tests and rehearsals of the TICKS clock, which move time so)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="accrual-notifier-timer", acks="all")
    await producer.start()
    try:
        value = json.dumps({"at": at.isoformat()}).encode()
        for partition in range(partitions):
            await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()
