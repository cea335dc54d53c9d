"""Helpers for the tests that run `accrual notifier` against the real
broker: the notifier as a process (so it can be killed), its clock moved
by ticks (ACCRUAL_NOTIFIER_CLOCK=ticks), waiting until it has handled
everything on its topics, and reading back what it holds (its tables'
changelogs) and what it sent (the outbox)."""
from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaProducer, TopicPartition

from accrual.kafka import Names
from notifier import codec
from notifier.member import MemberState
from accrual.notifier import send_ticks
from tests.kafka_support import ROOT, WorkerProcess, clients, read_topic, retrying
from web.sms import DatabaseOutbox
from web.store import WebStore


class NotifierProcess(WorkerProcess):
    """`accrual notifier` in a process of its own, on the TICKS clock."""

    command = "notifier"

    def __init__(self, database_url: str, bootstrap: str, prefix: str, log: Path, **extra: str):
        env = dict(os.environ)
        env.update({
            "ACCRUAL_DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ACCRUAL_TOPIC_PREFIX": prefix, "ACCRUAL_NOTIFIER_CLOCK": "ticks",
            "ACCRUAL_NOTIFIER_METRICS_PORT": "0", "ACCRUAL_NOTIFIER_COMMIT_EVERY": "0.2",
            "ACCRUAL_NOTIFIER_DIR": str(log.parent / f"{log.stem}-data"), "PYTHONPATH": str(ROOT),
        })
        env.update(extra)
        super().__init__(env, log)


def tick(bootstrap: str, names: Names, at: datetime) -> None:
    """Moves the notifier's clock (TICKS) to `at`: one tick to each partition."""
    asyncio.run(send_ticks(bootstrap, names.notifier_ticks, names.streams.notifier_ticks.partitions, at))


def produce_records(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]],
                    transaction: Literal["committed", "aborted"] | None = None, partition: int | None = None) -> None:
    """(key, value) records, keyed as the engine's publisher keys them (the
    Java client's murmur2, which is aiokafka's default partitioner too), or
    all to `partition`. `transaction`: in one Kafka transaction, then
    committed (as an exactly_once producer leaves them: a commit marker
    after them) or aborted (as a publisher fenced or crashed before its
    commit leaves them)."""
    async def run() -> None:
        transactional_id = f"test-{transaction}-{uuid.uuid4().hex}" if transaction else None
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                    transactional_id=transactional_id)
        await producer.start()
        try:
            if transaction:
                await producer.begin_transaction()
            for key, value in records:
                await producer.send(topic, value, key=key, partition=partition)
            await producer.flush()
            if transaction == "committed":
                await producer.commit_transaction()
            elif transaction == "aborted":
                await producer.abort_transaction()
        finally:
            await producer.stop()

    asyncio.run(run())


def _last_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """partition -> the offset after its last data record (a committed
    transaction ends with a marker that takes an offset of its own)."""
    from accrual.kafka import last_records

    found = asyncio.run(last_records(bootstrap, topic, 6))
    return {p: record.offset + 1 for p, record in found.items()}  # type: ignore[attr-defined]


def wait_until_handled(bootstrap: str, names: Names, topics: list[str], timeout: float = 120,
                       notifiers: list[NotifierProcess] | None = None) -> None:
    """Until the notifier's group has committed past the last record of each
    of `topics` (it commits what it handled, with its tables' changelogs)."""
    wanted = {TopicPartition(t, p): offset for t in topics for p, offset in _last_offsets(bootstrap, t).items()}
    kafka = clients(bootstrap)
    deadline = time.monotonic() + timeout
    while True:
        committed = retrying("reading the notifier's offsets", lambda: kafka.run(
            kafka.admin.list_consumer_group_offsets(names.notifier_group, partitions=list(wanted))))
        behind = {tp: offset for tp, offset in wanted.items()
                  if committed.get(tp) is None or committed[tp].offset < offset}
        if not behind:
            return
        for notifier in notifiers or ():
            notifier.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"the notifier has not handled {sorted(map(str, behind))} after {timeout} s")
        time.sleep(0.1)


def member_states(bootstrap: str, names: Names) -> dict[str, MemberState]:
    """What the notifier holds for each member: the last value of each key
    of its `members` table's changelog."""
    latest: dict[str, Any] = {}
    for record in read_topic(bootstrap, f"{names.notifier_group}-members-changelog"):
        latest[json.loads(record.key)] = json.loads(record.value) if record.value is not None else None
    return {msisdn: codec.from_json(value) for msisdn, value in latest.items() if value is not None}


@dataclass(frozen=True)
class Sent:
    key: str
    msisdn: str
    text: str
    sent_at: str


def outbox(database_url: str) -> list[Sent]:
    """Every keyed message of the outbox (the notifier's; one-time codes have no key), oldest first."""
    store = WebStore(_url(database_url))
    try:
        rows = DatabaseOutbox(store).messages(limit=1_000_000)
    finally:
        store.close()
    return [Sent(m["key"], m["msisdn"], m["text"], m["sent_at"]) for m in reversed(rows) if m["key"]]


def _url(database_url: str) -> Any:
    from accrual.settings import parse_database_url

    return parse_database_url(database_url)


def lots_by_member(states: dict[str, MemberState]) -> dict[str, list[tuple[date, date, int]]]:
    """(lot date, expiry, points left) of each member's lots, sorted."""
    return {m: sorted((lot.lot_date, lot.expires_on, lot.points) for lot in s.lots)
            for m, s in states.items() if s.lots}
