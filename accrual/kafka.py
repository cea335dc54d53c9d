"""What the engine needs of Kafka, in one place: topic names (with an
optional prefix), creating the topics of streams.yaml, partitioning as the
Java client does, and reading the last record of a partition.

Everything here is aiokafka (faust-streaming's own Kafka client); the worker
uses it directly because it commits offsets itself, after the database
transaction, and assigns the same partition numbers of every inbound topic
to one worker (see accrual/worker.py)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from accrual.streams import Streams, Topic

logger = logging.getLogger(__name__)

# Kafka's error codes for "the topic is there already" on CreateTopics.
_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class Names:
    """Topic and group names of one deployment. `prefix` lets several
    engines (or test runs) share one cluster without sharing topics."""

    streams: Streams
    prefix: str = ""

    def topic(self, name: str) -> str:
        return self.prefix + name

    @property
    def group(self) -> str:
        return self.prefix + self.streams.consumer_group

    @property
    def inbound(self) -> list[str]:
        return [self.topic(t.topic) for t in self.streams.inbound]

    @property
    def points_events(self) -> str:
        return self.topic(self.streams.points_events.topic)

    @property
    def balances(self) -> str:
        return self.topic(self.streams.balances.topic)

    @property
    def dead_letter(self) -> str:
        return self.topic(self.streams.dead_letter.topic)

    @property
    def member_preferences(self) -> str:
        return self.topic(self.streams.member_preferences.topic)

    @property
    def notifier_group(self) -> str:
        return self.prefix + self.streams.notifier_group

    @property
    def notifier_ticks(self) -> str:
        return self.topic(self.streams.notifier_ticks.topic)

    def all_topics(self) -> list[tuple[str, Topic]]:
        s = self.streams
        return [(self.topic(t.topic), t)
                for t in (*s.inbound, s.points_events, s.balances, s.dead_letter, s.member_preferences,
                          s.notifier_ticks)]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the Java client's default partitioner picks for `key`
    (murmur2), so a record can be sent to an explicit partition and found
    there again."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def create_topics(bootstrap: str, names: Names, replication_factor: int = 1) -> dict[str, str]:
    """Creates every topic of streams.yaml that is missing; returns
    topic -> "created" | "exists". Existing topics are left as they are
    (their partition count is checked by `check_topics`)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="accrual-admin")
    await admin.start()
    try:
        new = []
        for name, topic in names.all_topics():
            configs = {"cleanup.policy": topic.cleanup_policy}
            if topic.cleanup_policy == "compact":
                configs["min.cleanable.dirty.ratio"] = "0.1"
            new.append(NewTopic(name, topic.partitions, replication_factor, topic_configs=configs))
        response = await admin.create_topics(new)
        outcome: dict[str, str] = {}
        for item in response.topic_errors:
            name, code = item[0], item[1]
            if code == 0:
                outcome[name] = "created"
            elif code == _TOPIC_ALREADY_EXISTS:
                outcome[name] = "exists"
            else:
                message = item[2] if len(item) > 2 else ""
                raise KafkaError(f"creating topic {name}: error code {code} {message or ''}".strip())
        return outcome
    finally:
        await admin.close()


async def check_topics(bootstrap: str, names: Names) -> list[str]:
    """Problems with the cluster's topics: missing ones, or another number of
    partitions than streams.yaml says (the worker refuses to start on any)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="accrual-admin")
    await admin.start()
    try:
        wanted = dict(names.all_topics())
        described = await admin.describe_topics(list(wanted))
    finally:
        await admin.close()
    problems = []
    for entry in described:
        name = entry["topic"]
        if entry.get("error_code"):
            problems.append(f"{name}: missing (run `accrual topics create`)")
            continue
        have = len(entry["partitions"])
        if have != wanted[name].partitions:
            problems.append(f"{name}: {have} partitions, streams.yaml says {wanted[name].partitions}")
    return problems


async def _last_data_record(consumer: AIOKafkaConsumer, tp: TopicPartition, begin: int, end: int) -> object:
    """The last committed data record before `end`, or None. A transactional
    partition ends with commit (or abort) markers, which take offsets but
    are never returned, and an aborted transaction's records are skipped:
    look back in growing windows until a record appears."""
    window = 16
    while end > begin:
        start = max(begin, end - window)
        consumer.seek(tp, start)
        last = None
        while True:
            batch = await consumer.getmany(tp, timeout_ms=2_000)
            records = [r for r in batch.get(tp) or [] if r.offset < end]
            if records:
                last = records[-1]
            if not batch.get(tp) or await consumer.position(tp) >= end:
                break
        if last is not None:
            return last
        end, window = start, window * 8
    return None


async def last_records(bootstrap: str, topic: str, partitions: int) -> dict[int, object]:
    """The last record of each partition of `topic` (partitions with none
    are left out). Used by the publisher to find where it stopped."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        found: dict[int, object] = {}
        for tp in tps:
            record = await _last_data_record(consumer, tp, begins[tp], ends[tp])
            if record is not None:
                found[tp.partition] = record
        return found
    finally:
        await consumer.stop()
