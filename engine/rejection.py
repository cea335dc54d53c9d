"""A rejected inbound message, kept with its original bytes and a reason
(the dead letter of the contract). One aggregate per rejected message, so the
rejections read model can be rebuilt from the event log like any other."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from engine.ids import rejection_id


class Rejection(Aggregate):
    class Recorded(Aggregate.Created):
        topic: str
        partition: int | None
        offset: int | None
        key: str | None
        event_id: str | None
        msisdn: str | None
        reason: str
        detail: str
        original: str  # base64 of the original bytes

    def __init__(
        self, topic: str, partition: int | None, offset: int | None, key: str | None, event_id: str | None,
        msisdn: str | None, reason: str, detail: str, original: str,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.event_id = event_id
        self.msisdn = msisdn
        self.reason = reason
        self.detail = detail
        self.original = original

    @classmethod
    def record(cls, message_key: str, received_at: datetime, **fields: Any) -> Rejection:
        return cls._create(cls.Recorded, id=rejection_id(fields["topic"], message_key), timestamp=received_at, **fields)
