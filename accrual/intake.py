"""The file edge: JSON Lines (the embedded mode) in, batches of `Inbound`
messages out. Each line is one inbound message with an extra `topic` field;
the parse of a line or a Kafka record is `engine.intake`'s."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

# The parse of one message lives in the engine, which parses a dead letter's
# bytes again when it is redriven; the names stay importable from here.
from engine.intake import UNKNOWN_TOPIC, inbound_from_line, inbound_from_record
from engine.messages import Inbound

__all__ = ["UNKNOWN_TOPIC", "inbound_from_line", "inbound_from_record", "read_batches"]


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
