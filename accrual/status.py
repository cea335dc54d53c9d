"""`accrual status`: how far the worker group is (lag per partition, from
Kafka's committed offsets) and what the engine has done (messages by
outcome, rejections by reason, the publisher's position in the log)."""
from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from accrual.kafka import Names
from projections.db import Database


async def kafka_lag(bootstrap: str, names: Names) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="accrual-status")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:  # started inside: a caller's timeout that cancels a start still closes both clients
        await admin.start()
        await consumer.start()
        tps = [TopicPartition(names.topic(t.topic), p) for t in names.streams.inbound for p in range(t.partitions)]
        committed = await admin.list_consumer_group_offsets(names.group, partitions=tps)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
        await admin.close()
    rows = []
    for tp in tps:
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        rows.append({"topic": tp.topic, "partition": tp.partition, "committed": done, "end": ends[tp],
                     "lag": max(ends[tp] - done, 0)})
    return rows


async def notifier_lag(bootstrap: str, names: Names) -> list[dict[str, Any]]:
    """The notifier group's lag on its two topics of members' news. Counted
    up to each partition's last record, not its end offset: the points
    events are written in transactions, and a transaction's commit marker
    takes an offset that no consumer ever commits past."""
    from accrual.kafka import last_records

    topics = [(names.points_events, names.streams.points_events.partitions),
              (names.member_preferences, names.streams.member_preferences.partitions)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="accrual-status")
    try:
        await admin.start()
        tps = [TopicPartition(topic, p) for topic, partitions in topics for p in range(partitions)]
        committed = await admin.list_consumer_group_offsets(names.notifier_group, partitions=tps)
    finally:
        await admin.close()
    rows = []
    for topic, partitions in topics:
        last = await last_records(bootstrap, topic, partitions)
        for p in range(partitions):
            meta = committed.get(TopicPartition(topic, p))
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            end = last[p].offset + 1 if p in last else 0  # type: ignore[attr-defined]
            rows.append({"topic": topic, "partition": p, "committed": done, "end": end, "lag": max(end - done, 0)})
    return rows


def store_counts(db: Database) -> dict[str, Any]:
    """`outcomes`: each distinct message once, by its first outcome (the
    inbox); `messages_seen_by_workers`: every delivery, duplicates too."""
    outcomes = dict(db.query("SELECT outcome, COUNT(*) FROM inbox GROUP BY outcome ORDER BY outcome"))
    reasons = dict(db.query("SELECT reason, COUNT(*) FROM rm_rejections GROUP BY reason ORDER BY reason"))
    published = db.query("SELECT position FROM outbound_position WHERE name = ?", ("kafka",)) if _has(
        db, "outbound_position") else []
    seen = dict(db.query("SELECT outcome, messages FROM worker_counts ORDER BY outcome")) if _has(
        db, "worker_counts") else {}
    return {
        "outcomes": {k: int(v) for k, v in outcomes.items()},
        "messages_seen_by_workers": {k: int(v) for k, v in seen.items()},
        "rejected_by_reason": {k: int(v) for k, v in reasons.items()},
        "published_position": int(published[0][0]) if published else None,
    }


def _has(db: Database, table: str) -> bool:
    if db.is_postgres:
        return bool(db.query("SELECT to_regclass(?) IS NOT NULL", (table,))[0][0])
    return bool(db.query("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))[0][0])
