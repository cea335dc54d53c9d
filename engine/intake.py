"""The edge's parse of one message's bytes into an `Inbound`: a JSON Lines
record (the embedded mode), a Kafka record's value (the worker), and the
original bytes of a dead letter read again for a redrive (`reparse`), which
must be parsed exactly as its first delivery was.

A message that cannot be parsed is not dropped: it becomes a rejected
`Inbound`, keyed by the hash of its bytes, and the engine records it with
its reason."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime
from functools import partial
from typing import Any

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
    return _from_value(topic, raw, received_at, partition=partition, offset=offset, kafka_key=kafka_key)


def reparse(
    topic: str, original: bytes, received_at: datetime,
    *, partition: int | None, offset: int | None, kafka_key: str | None,
) -> Inbound:
    """A dead letter's original bytes, parsed as they were on delivery. A
    Kafka record has a partition. Without one, it was a line of a file,
    which names its topic inside (or names none, or an unknown one: then the
    dead letter's topic is the one `inbound_from_line` gave it), unless it
    is a held message refused at its release: those bytes are the message
    alone, on the dead letter's topic."""
    if partition is not None:
        return _from_value(topic, original, received_at, partition=partition, offset=offset, kafka_key=kafka_key)
    if topic == UNKNOWN_TOPIC or _topic_of(original) == topic:
        return inbound_from_line(original, received_at, offset)
    return _from_value(topic, original, received_at, offset=offset)


def _from_value(topic: str, raw: bytes, received_at: datetime, **where: Any) -> Inbound:
    try:
        event = parse_message(topic, raw)
    except MessageRejected as rejected:
        return _rejected(topic, raw, rejected, received_at, **where)
    return _accepted(topic, event, raw, received_at, **where)


def _rejected(topic: str, raw: bytes, rejected: MessageRejected, received_at: datetime, **where: Any) -> Inbound:
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


def _accepted(topic: str, event: Any, raw: bytes, received_at: datetime, **where: Any) -> Inbound:
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
