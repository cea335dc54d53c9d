"""The tamper-evident log: a hash chain over the stored events, its
checkpoints, and the check of a store against them (docs/books.md, "The
tamper-evident log").

    h_0 = 32 zero bytes
    h_n = SHA-256(h_{n-1} || record_n)

where record_n is the n-th stored event in position (notification id)
order, encoded as

    u64 position | u32 len(id) | id | u64 originator_version
    | u32 len(topic) | topic (UTF-8) | u32 len(state) | state

(big-endian; the id is the aggregate's UUID as its 16 bytes, whichever
store holds it). The position is in the record, so an event moved, deleted
or inserted changes every head after it. The chain runs over the rows that
are stored, in order: a gap in the positions (PostgreSQL's sequence skips
the ids of a rolled-back transaction) is not a break.

The read models' projector extends the chain as it follows the log, in the
transaction that records its position (`LogChain.follow`), so a crash
leaves neither ahead of the other. `log_chain` keeps a checkpoint every
`CHECKPOINT_EVERY` events and one at the latest event; each holds the head
at its position and, for every event since the checkpoint before, the
event's position and the first 8 bytes of the head there (its trail), so
that `verify` names the exact position of the first break. The table is
the log's, not the read models': a replay keeps it and only extends it.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Callable, Iterable, Iterator, Sequence
from uuid import UUID

from projections.db import Database, Transaction

GENESIS = bytes(32)
CHECKPOINT_EVERY = 1000  # events between two checkpoints that are kept
PAGE = 10_000  # stored events read per query
CHECKPOINT_PAGE = 100  # checkpoints read per query (each with a trail of up to 16 kB)
TABLE = "log_chain"
HEADER = "chain_head"  # the Kafka header of the head at a record's position (accrual/publisher.py)
_LOCK = 7274011  # PostgreSQL advisory lock of the chain's tip, beside "accrual schema" 7274010

_POSITION_AND_ID = struct.Struct(">QI")
_VERSION_AND_TOPIC = struct.Struct(">QI")
_STATE = struct.Struct(">I")
_ENTRY = struct.Struct(">Q8s")  # a trail entry: the position and the first 8 bytes of the head there

# A stored event as the chain reads it: position, originator id, originator version, topic, state.
Row = tuple[int, Any, int, str, bytes]
Query = Callable[[str, Sequence[Any]], list[tuple]]

BREAKS = {
    "changed": "the stored event at this position is not the one chained there "
               "(its bytes, aggregate, version or topic differ, or another event took its place)",
    "missing": "an event chained at this position is no longer stored (deleted)",
    "inserted": "a stored event at a position the chain never had (inserted)",
    "checkpoint": "the checkpoint at this position does not agree with the one before it",
    "expected_head": "the chain recomputed up to this position is not the head expected",
}


def _id_bytes(originator_id: Any) -> bytes:
    if isinstance(originator_id, UUID):
        return originator_id.bytes
    if isinstance(originator_id, str) and len(originator_id) == 32:  # SQLite keeps ids as hex text
        try:
            return bytes.fromhex(originator_id)  # as UUID(...).bytes, several times faster
        except ValueError:
            pass
    try:
        return UUID(str(originator_id)).bytes
    except ValueError:  # not an id the engine writes: chained as it is, so it breaks the chain
        return str(originator_id).encode("utf-8", "surrogateescape")


def link(head: bytes, position: int, originator_id: Any, version: int, topic: str, state: bytes) -> bytes:
    """h_n from h_{n-1} and the n-th stored event."""
    ident = _id_bytes(originator_id)
    name = topic.encode("utf-8", "surrogateescape")
    return sha256(b"".join((
        head, _POSITION_AND_ID.pack(position, len(ident)), ident, _VERSION_AND_TOPIC.pack(version, len(name)), name,
        _STATE.pack(len(state)), state,
    ))).digest()


def row_of(notification: Any) -> Row:
    """A notification (eventsourcing) as the chain reads it."""
    n = notification
    return n.id, n.originator_id, n.originator_version, n.topic, n.state


@dataclass(frozen=True)
class Checkpoint:
    position: int  # of the last event it covers
    events: int  # stored events chained up to it
    head: bytes
    trail: bytes  # _ENTRY for each event after the checkpoint before, up to this one

    @property
    def kept(self) -> bool:
        """Every CHECKPOINT_EVERY-th is kept; the latest is replaced when the chain grows."""
        return self.events % CHECKPOINT_EVERY == 0


def stored_rows(query: Query, is_postgres: bool, table: str, after: int, until: int | None = None,
                page: int = PAGE) -> Iterator[Row]:
    """The stored events of `table` after position `after` (up to `until`),
    in order, a page at a time: memory stays bounded however long the log."""
    column = "notification_id" if is_postgres else "rowid"
    bound = f" AND {column} <= ?" if until is not None else ""
    statement = (f"SELECT {column}, originator_id, originator_version, topic, state FROM {table} "
                 f"WHERE {column} > ?{bound} ORDER BY {column} LIMIT ?")
    while True:
        params = (after, until, page) if until is not None else (after, page)
        rows = query(statement, params)
        for row in rows:
            yield int(row[0]), row[1], int(row[2]), row[3], bytes(row[4])
        if len(rows) < page:
            return
        after = int(rows[-1][0])


def create_statement(db: Database) -> str:
    """The checkpoints' table (idempotent)."""
    blob = "BYTEA" if db.is_postgres else "BLOB"
    return (f"CREATE TABLE IF NOT EXISTS {TABLE} (position BIGINT PRIMARY KEY, events BIGINT NOT NULL, "
            f"head {blob} NOT NULL, trail {blob} NOT NULL)")


class LogChain:
    """The chain's checkpoints in the store of `db`, over the events of
    `events_table` (the application recorder's `events_table_name`)."""

    def __init__(self, db: Database, events_table: str):
        self.db = db
        self.events_table = events_table

    # -- extending, as the log is followed ------------------------------------------

    def follow(self, tx: Transaction, position: int, last: int, notifications: Sequence[Any] | None) -> None:
        """Extends the chain to `last`, in the transaction that moves a
        follower from `position` to `last`. `notifications` are what it read
        after `position` (None: read them here). Where the chain is ahead
        already (a replay's follower) nothing changes: the checkpoints stay
        as they were first written."""
        if self.db.is_postgres:
            tx.execute(f"SELECT pg_advisory_xact_lock({_LOCK})")
        tip = self._tip(tx.query)
        chained = tip.position if tip is not None else 0
        if chained >= last:
            return
        rows: Iterable[Row]
        if notifications is None or chained < position:
            # The chain is behind this follower (a store that had no chain
            # yet, or a replay past what was followed before): read the rest.
            rows = stored_rows(tx.query, self.db.is_postgres, self.events_table, chained, last)
        else:
            rows = (row_of(n) for n in notifications if chained < n.id <= last)
        self._extend(tx, tip, rows)

    def _extend(self, tx: Transaction, tip: Checkpoint | None, rows: Iterable[Row]) -> None:
        head, events, trail = (tip.head, tip.events, b"" if tip.kept else tip.trail) if tip else (GENESIS, 0, b"")
        kept: list[tuple] = []
        position = tip.position if tip else 0
        for row in rows:
            position = row[0]
            head = link(head, *row)
            events += 1
            trail += _ENTRY.pack(position, head[:8])
            if events % CHECKPOINT_EVERY == 0:
                kept.append((position, events, head, trail))
                trail = b""
        if tip is not None and position == tip.position:
            return
        if tip is not None and not tip.kept:
            tx.execute(f"DELETE FROM {TABLE} WHERE position = ?", (tip.position,))
        if trail:
            kept.append((position, events, head, trail))
        tx.executemany(f"INSERT INTO {TABLE} (position, events, head, trail) VALUES (?, ?, ?, ?)", kept)

    # -- reading ---------------------------------------------------------------------

    def _tip(self, query: Query, at_most: int | None = None) -> Checkpoint | None:
        where = " WHERE position <= ?" if at_most is not None else ""
        rows = query(f"SELECT position, events, head, trail FROM {TABLE}{where} ORDER BY position DESC LIMIT 1",
                     () if at_most is None else (at_most,))
        return _checkpoint(rows[0]) if rows else None

    def checkpoints(self, query: Query) -> Iterator[Checkpoint]:
        after = -1
        while True:
            rows = query(f"SELECT position, events, head, trail FROM {TABLE} WHERE position > ? "
                         f"ORDER BY position LIMIT ?", (after, CHECKPOINT_PAGE))
            yield from map(_checkpoint, rows)
            if len(rows) < CHECKPOINT_PAGE:
                return
            after = int(rows[-1][0])

    def head_at(self, position: int) -> bytes:
        """The head after every stored event up to `position`: from the
        checkpoint at or before it, then the events in between."""
        start = self._tip(self.db.query, at_most=position)
        head = start.head if start is not None else GENESIS
        for row in stored_rows(self.db.query, self.db.is_postgres, self.events_table, start.position if start else 0,
                               position):
            head = link(head, *row)
        return head

    def verify(self, expect: tuple[int, bytes] | None = None) -> Verdict:
        """Recomputes the chain from the stored events and checks it against
        the checkpoints (and the head an auditor expects at a position), in
        one snapshot of the store."""
        with self.db.snapshot() as query:
            tip = self._tip(query)
            return verify(stored_rows(query, self.db.is_postgres, self.events_table, 0), self.checkpoints(query), expect,
                          chained=tip.position if tip else 0)


def _checkpoint(row: tuple) -> Checkpoint:
    return Checkpoint(int(row[0]), int(row[1]), bytes(row[2]), bytes(row[3]))


class Heads:
    """The head at each event of a follower that reads the log in chunks
    (the publisher): from the checkpoints when it starts or goes back, then
    from the chunks it reads."""

    def __init__(self, chain: LogChain):
        self.chain = chain
        self._known: dict[int, bytes] = {}  # position -> head: where the last chunk started and ended

    def of(self, position: int, notifications: Sequence[Any]) -> dict[int, bytes]:
        """The head at each of `notifications`, read after `position`."""
        start = self._known[position] if position in self._known else self.chain.head_at(position)
        head, heads = start, {}
        for notification in notifications:
            head = heads[notification.id] = link(head, *row_of(notification))
        self._known = {position: start}
        if notifications:
            self._known[notifications[-1].id] = head
        return heads


# -- verifying ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    ok: bool
    events: int  # stored events
    position: int  # of the last one (0: none)
    head: bytes  # the chain recomputed over all of them
    chained: int  # the position the checkpoints reach
    first_break: int | None
    reason: str | None
    expected: dict[str, Any] | None  # {"position", "head", "found", "ok"} of --expect-head

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "events": self.events, "position": self.position, "head": self.head.hex(),
            "chained": self.chained, "first_break": self.first_break, "reason": self.reason,
            "detail": BREAKS.get(self.reason or ""), "expected": self.expected,
        }


class _Broken(Exception):
    def __init__(self, position: int, reason: str):
        super().__init__(position, reason)
        self.position = position
        self.reason = reason


def _entries(checkpoints: Iterable[Checkpoint]) -> Iterator[tuple[int, bytes, bytes | None]]:
    """What the checkpoints say each chained event's head was: (position,
    first 8 bytes of the head, the whole head at a checkpoint's own event)."""
    position = events = 0
    for cp in checkpoints:
        trail = cp.trail
        entries = [_ENTRY.unpack_from(trail, i) for i in range(0, len(trail) - len(trail) % _ENTRY.size, _ENTRY.size)]
        if (len(trail) % _ENTRY.size or len(entries) != cp.events - events or not entries
                or entries[-1] != (cp.position, cp.head[:8]) or entries[0][0] <= position):
            raise _Broken(cp.position, "checkpoint")
        for at, prefix in entries[:-1]:
            yield at, prefix, None
        yield cp.position, cp.head[:8], cp.head
        position, events = cp.position, cp.events


class _Check:
    """Walks the stored events and the checkpoints' entries side by side."""

    def __init__(self, checkpoints: Iterable[Checkpoint]):
        self.entries = _entries(checkpoints)
        self.pending: tuple[int, bytes, bytes | None] | None = None

    def start(self) -> None:
        self.pending = next(self.entries, None)

    def event(self, position: int, head: bytes) -> None:
        """The stored event at `position`, whose recomputed head is `head`."""
        pending = self.pending
        if pending is None:
            return  # after the chain's tip: not followed yet
        if pending[0] < position:
            raise _Broken(pending[0], "missing")
        if pending[0] > position:
            raise _Broken(position, "inserted")
        if head[:8] != pending[1] or (pending[2] is not None and head != pending[2]):
            raise _Broken(position, "changed")
        self.pending = next(self.entries, None)

    def end(self) -> None:
        if self.pending is not None:
            raise _Broken(self.pending[0], "missing")


def verify(rows: Iterable[Row], checkpoints: Iterable[Checkpoint], expect: tuple[int, bytes] | None = None, *,
           chained: int = 0) -> Verdict:
    """The first break between the stored events and the checkpoints, and
    whether the head at `expect`'s position is `expect`'s head. The rest of
    the log is hashed all the same, for the current head. `chained`: the
    position the checkpoints reach (reported as it is)."""
    head, events, position = GENESIS, 0, 0
    expected_found: bytes | None = None
    broken: _Broken | None = None
    check = _Check(checkpoints)
    try:
        check.start()
    except _Broken as error:
        broken = error
    for row in rows:
        if expect is not None and expected_found is None and row[0] > expect[0]:
            expected_found = head
        head = link(head, *row)
        events, position = events + 1, row[0]
        if broken is None:
            try:
                check.event(position, head)
            except _Broken as error:
                broken = error
    if broken is None:
        try:
            check.end()
        except _Broken as error:
            broken = error
    return _verdict(head, events, position, chained, broken, expect, head if expected_found is None else expected_found)


def _verdict(head: bytes, events: int, position: int, chained: int, broken: _Broken | None,
             expect: tuple[int, bytes] | None, found: bytes) -> Verdict:
    expected = None
    if expect is not None:
        expected = {"position": expect[0], "head": expect[1].hex(), "found": found.hex(), "ok": found == expect[1]}
        if broken is None and found != expect[1]:
            broken = _Broken(expect[0], "expected_head")
    return Verdict(
        ok=broken is None, events=events, position=position, head=head, chained=chained,
        first_break=broken.position if broken else None, reason=broken.reason if broken else None, expected=expected,
    )
