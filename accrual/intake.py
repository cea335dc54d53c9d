"""The edges: JSON Lines (the embedded mode) and Kafka records (the worker)
in, `Inbound` messages out.

Each line is one inbound message with an extra `topic` field. A line that
cannot be parsed is not dropped: it becomes a rejected `Inbound`, keyed by
the hash of its bytes, and the engine records it with its reason."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

from engine.messages import Inbound
from schemas import MessageRejected, content_fingerprint, legacy_content_fingerprint, parse_line, parse_message

UNKNOWN_TOPIC = "(unknown)"


def inbound_from_line(raw: bytes, received_at: datetime, line: int | None = None) -> Inbound:
    """`line` (1-based) is kept as the message's offset in its file."""
    try:
        topic, event = parse_line(raw)
    except MessageRejected as rejected:
        return _rejected(_topic_of(raw), raw, rejected, received_at, offset=line)
    return _accepted(topic, event, raw, received_at, offset=line)


def inbound_from_record(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, received_at: datetime
) -> Inbound:
    """One Kafka record of an inbound topic (`topic` is the contract's name
    of it). A record without a value (a tombstone) is rejected as not JSON."""
    raw = value if value is not None else b""
    kafka_key = key.decode("utf-8", "replace") if key is not None else None
    try:
        event = parse_message(topic, raw)
    except MessageRejected as rejected:
        return _rejected(topic, raw, rejected, received_at, partition=partition, offset=offset, kafka_key=kafka_key)
    return _accepted(topic, event, raw, received_at, partition=partition, offset=offset, kafka_key=kafka_key)


def _rejected(topic: str, raw: bytes, rejected: MessageRejected, received_at: datetime, **where) -> Inbound:
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    return Inbound(
        topic=topic,
        key=digest,
        fingerprint=digest,
        original=raw,
        received_at=received_at,
        rejection=(rejected.reason, rejected.detail),
        event_id=rejected.event_id,
        msisdn=rejected.msisdn,
        **where,
    )


def _accepted(topic: str, event, raw: bytes, received_at: datetime, **where) -> Inbound:
    return Inbound(
        topic=topic,
        key=event.event_id,
        fingerprint=content_fingerprint(event),
        legacy_fingerprint=partial(legacy_content_fingerprint, event),
        original=raw,
        received_at=received_at,
        event=event,
        event_id=event.event_id,
        msisdn=getattr(event, "msisdn", None),
        **where,
    )


def _topic_of(raw: bytes) -> str:
    """The topic a rejected line names, if it names one at all."""
    try:
        topic = json.loads(raw).get("topic")
    except (ValueError, AttributeError):
        return UNKNOWN_TOPIC
    return topic if isinstance(topic, str) and 0 < len(topic) <= 255 else UNKNOWN_TOPIC


def read_batches(
    path: Path, batch_size: int, received_at: datetime, on_bytes: Callable[[int], None] | None = None
) -> Iterator[list[Inbound]]:
    """Batches of inbound messages from a JSON Lines file; blank lines are
    skipped (they carry no message)."""
    batch: list[Inbound] = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if on_bytes is not None:
                on_bytes(len(line))
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            batch.append(inbound_from_line(raw, received_at, number))
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch
