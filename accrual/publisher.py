"""The outbound side: a follower of the event log that publishes what the
accounts recorded, never written beside the database in the request path.

- every event of a member account goes to `loyalty.points-events.v1` (key
  msisdn), in account order, with the account version, the signed change
  of the balance (`points`), the balance after it, the rule or reason, the
  source event id, and the lots it changed with their dates (`lots`; the
  dates of lots drawn from come from `outbound_lots`, accrual/lot_dates.py);
  a transfer's records also name the other member (`counterpart`), and the
  news of a transfer on the other member's account the points offered and
  the offer's deadline;
- after each chunk, the latest balance of every member it touched goes to
  the compacted `loyalty.balances.v1`;
- every rejection goes to `loyalty.dead-letter.v1` (key: the source key)
  with the original bytes, source topic, partition, offset, reason, detail.

Exactly once on the topics: the publisher's position in the log (with each
member's running balance and the dates of new lots) is committed to the
database only after Kafka has committed the chunk, so a crash in between
publishes the chunk again, and each record carries its log position in a
`notification_id` header (a points event also the head of the log's hash
chain at that position, in a `chain_head` header: a copy of the chain
outside the database, which `accrual verify --expect-head` checks the store
against). At start the publisher reads the last committed record of every
partition it writes and skips what a partition already holds. Records are
sent to explicit partitions (the Java client's murmur2), in order, so "the
last record of the partition" is a sound high-water mark.

One publisher runs per store: the worker that holds the leadership lock
(accrual/leadership.py) runs it. A leader that lost its lock may still
have a chunk in flight when the next leader starts; Kafka's zombie fencing
stops it: each chunk is one Kafka transaction of a producer with one fixed
`transactional.id` for the publisher role, so the new leader's producer
fences the old one's, whose transaction aborts. Subscribers read with
`isolation.level=read_committed` (docs/operations.md), as the publisher's
own recovery does.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable

from aiokafka import AIOKafkaProducer

from accrual.kafka import Names, last_records, partition_for
from accrual.lot_dates import TABLE as LOTS_TABLE
from accrual.lot_dates import LotDates
from engine.account import ADJUSTMENT, MemberAccount
from engine.rejection import Rejection
from projections import chain
from projections.chain import HEADER as CHAIN_HEADER
from projections.chain import Heads, LogChain
from projections.db import Database
from schemas import BalanceMessage, DeadLetterMessage, LotChange, PointsEventMessage

logger = logging.getLogger(__name__)

HEADER = "notification_id"
CHUNK = 2000

STATE_TABLES = (
    "CREATE TABLE IF NOT EXISTS outbound_position (name TEXT PRIMARY KEY, position BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS outbound_balances ("
    " account_id TEXT PRIMARY KEY, msisdn TEXT NOT NULL, balance BIGINT NOT NULL, version BIGINT NOT NULL)",
)

_EVENT_TYPE = {"Opened": "AccountOpened"}
# The news of a transfer on the other member's account has no reason of its own.
_TRANSFER_NEWS = {MemberAccount.TransferOfferReceived: "offered", MemberAccount.TransferAccepted: "accepted"}


def _reason(event: Any) -> str | None:
    """The reason a points event gives: its own, else what the debit was
    for (order, pos) or the side of a transfer (in, out)."""
    return (getattr(event, "reason", None) or getattr(event, "purpose", None) or getattr(event, "direction", None)
            or _TRANSFER_NEWS.get(type(event)))


def _described(event: Any) -> tuple[str | None, str | None, str | None]:
    """(rule, reason, source event id) of a points event. An adjustment's
    own `reason` is the staff's free text, which stays inside: subscribers
    get the machine-readable "adjustment", the rule of a credit's lot, and
    the adjustment id."""
    if isinstance(event, MemberAccount.PointsAdjusted):
        return event.effect.rule, ADJUSTMENT, event.adjustment_id
    source = (getattr(event, "source_event_id", None) or getattr(event, "debit_id", None)
              or getattr(event, "transfer_id", None))
    return getattr(event, "rule", None), _reason(event), source


def _transfer_fields(event: Any) -> dict[str, Any]:
    """`counterpart`, `transfer_points` and `deadline` of a transfer's
    record (None for other events): the other member of every transfer
    event; the points offered and the deadline on the news of a transfer,
    whose own `points` (the balance's change) are 0."""
    if isinstance(event, (MemberAccount.PointsTransferred, MemberAccount.TransferReturned)):
        return {"counterpart": event.counterpart}
    if isinstance(event, MemberAccount.TransferOfferReceived):
        return {"counterpart": event.sender, "transfer_points": event.points, "deadline": event.expires_at}
    if isinstance(event, MemberAccount.TransferAccepted):
        return {"counterpart": event.recipient, "transfer_points": event.points}
    return {}


def create_tables(db: Database, name: str = "kafka") -> None:
    """The publisher's position, running balances and lot dates (idempotent)."""
    from accrual.runtime import schema_lock

    with schema_lock(db.url), db.transaction() as tx:
        for statement in (*STATE_TABLES, LOTS_TABLE, chain.create_statement(db)):
            tx.execute(statement)
        tx.execute(
            "INSERT INTO outbound_position (name, position) VALUES (?, 0) ON CONFLICT (name) DO NOTHING", (name,)
        )


@dataclass(frozen=True)
class Outgoing:
    topic: str
    partition: int
    key: bytes
    value: bytes
    notification_id: int
    chain_head: bytes | None = None  # points events: the log's hash chain at notification_id


class Publisher:
    def __init__(self, app: Any, db: Database, names: Names, name: str = "kafka"):
        self.app = app
        self.db = db
        self.names = names
        self.name = name
        self.partitions = {
            names.points_events: names.streams.points_events.partitions,
            names.balances: names.streams.balances.partitions,
            names.dead_letter: names.streams.dead_letter.partitions,
        }
        # (topic, partition) -> highest notification id the partition holds
        self.published: dict[tuple[str, int], int] = {}
        self.published_events = 0
        self.heads = Heads(LogChain(db, app.recorder.events_table_name))
        create_tables(db, name)

    def position(self) -> int:
        return int(self.db.query("SELECT position FROM outbound_position WHERE name = ?", (self.name,))[0][0])

    async def recover(self, bootstrap: str) -> None:
        """Reads where each partition ended (after a crash, some may hold a
        chunk whose position was not committed here)."""
        self.published.clear()
        for topic, partitions in self.partitions.items():
            for partition, record in (await last_records(bootstrap, topic, partitions)).items():
                headers = dict(record.headers or ())
                if HEADER in headers:
                    self.published[(topic, partition)] = int(headers[HEADER])

    # -- one chunk: read and map (in a thread), send, commit (in a thread) ------

    def read_chunk(self, limit: int = CHUNK) -> tuple[list[Outgoing], Callable[[], None], int]:
        """The records for the next chunk of the log, and the commit that
        records it as published."""
        position = self.position()
        notifications = self.app.recorder.select_notifications(start=position, limit=limit, inclusive_of_start=False)
        if not notifications:
            return [], lambda: None, position
        mapper = self.app.mapper
        events = [(n.id, mapper.to_domain_event(n)) for n in notifications]
        heads = self.heads.of(position, notifications)
        accounts = {
            str(e.originator_id) for _, e in events
            if isinstance(e, MemberAccount.Event) and not isinstance(e, MemberAccount.Opened)
        }
        state = self._load_balances(accounts)
        effects = {n: e.effect for n, e in events if isinstance(e, MemberAccount.Event)}  # (a property: made once)
        lots = LotDates(self.db, self.app.repository)
        lots.load((e, effects[n]) for n, e in events if n in effects)
        touched: dict[str, tuple[str, int, int, Any, int]] = {}  # account -> msisdn, balance, version, at, id
        out: list[Outgoing] = []
        for notification_id, event in events:
            if isinstance(event, Rejection.Recorded):
                out.append(self._dead_letter(event, notification_id))
            elif isinstance(event, MemberAccount.Event):
                account = str(event.originator_id)
                if isinstance(event, MemberAccount.Opened):
                    state[account] = [event.msisdn, 0, event.originator_version]
                msisdn, balance, version = state[account]
                if event.originator_version <= version and not isinstance(event, MemberAccount.Opened):
                    continue  # already folded in (cannot happen with one publisher; kept safe)
                effect = effects[notification_id]
                delta = effect.points
                balance += delta
                state[account] = [msisdn, balance, event.originator_version]
                out.append(self._points_event(event, msisdn, delta, balance, notification_id,
                                              heads[notification_id], lots.changes(event, effect)))
                touched[account] = (msisdn, balance, event.originator_version, event.timestamp, notification_id)
        for msisdn, balance, version, at, notification_id in touched.values():
            out.append(self._balance(msisdn, balance, version, at, notification_id))
        last = notifications[-1].id

        def commit() -> None:
            with self.db.transaction() as tx:
                tx.executemany(
                    "INSERT INTO outbound_balances (account_id, msisdn, balance, version) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (account_id) DO UPDATE SET balance = excluded.balance, version = excluded.version",
                    [(a, *state[a]) for a in touched],
                )
                lots.write(tx)
                tx.execute("UPDATE outbound_position SET position = ? WHERE name = ?", (last, self.name))

        return out, commit, last

    def _load_balances(self, accounts: set[str]) -> dict[str, list]:
        state: dict[str, list] = {}
        ids = sorted(accounts)
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            for account, msisdn, balance, version in self.db.query(
                f"SELECT account_id, msisdn, balance, version FROM outbound_balances WHERE account_id IN ({marks})",
                part,
            ):
                state[account] = [msisdn, int(balance), int(version)]
        return state

    def _record(self, topic: str, key: bytes, value: bytes, notification_id: int,
                chain_head: bytes | None = None) -> Outgoing:
        return Outgoing(topic, partition_for(key, self.partitions[topic]), key, value, notification_id, chain_head)

    def _points_event(self, e: Any, msisdn: str, delta: int, balance: int, notification_id: int,
                      chain_head: bytes, lots: tuple[LotChange, ...]) -> Outgoing:
        name = type(e).__name__
        lot = getattr(e, "lot", None)  # a credit's new lot
        rule, reason, source_event_id = _described(e)
        message = PointsEventMessage(
            msisdn=msisdn,
            account_version=e.originator_version,
            event_type=_EVENT_TYPE.get(name, name),
            points=delta,
            rule=rule,
            reason=reason,
            source_event_id=source_event_id,
            occurred_at=e.timestamp,
            lot_date=lot.lot_date.isoformat() if lot else None,
            expires_on=lot.expires_on.isoformat() if lot else None,
            balance_after=balance,
            lots=lots,
            **_transfer_fields(e),
        )
        return self._record(self.names.points_events, msisdn.encode(), message.model_dump_json().encode(),
                            notification_id, chain_head)

    def _balance(self, msisdn: str, balance: int, version: int, at: Any, notification_id: int) -> Outgoing:
        message = BalanceMessage(msisdn=msisdn, balance=balance, as_of_version=version, updated_at=at)
        return self._record(self.names.balances, msisdn.encode(), message.model_dump_json().encode(),
                            notification_id)

    def _dead_letter(self, e: Any, notification_id: int) -> Outgoing:
        message = DeadLetterMessage(
            source_topic=e.topic, partition=e.partition, offset=e.offset, key=e.key, reason=e.reason,
            detail=e.detail, event_id=e.event_id, original_base64=e.original, received_at=e.timestamp,
        )
        key = (e.key or e.event_id or "").encode("utf-8", "surrogateescape")
        return self._record(self.names.dead_letter, key, message.model_dump_json().encode(), notification_id)

    # -- sending -------------------------------------------------------------------

    async def send(self, producer: AIOKafkaProducer, records: list[Outgoing]) -> int:
        """Sends the records a partition does not hold yet, as one Kafka
        transaction; returns how many. ProducerFenced: another producer of
        the publisher's transactional id (a newer leader) has started."""
        todo = [r for r in records if r.notification_id > self.published.get((r.topic, r.partition), 0)]
        if not todo:
            return 0
        async with producer.transaction():
            futures = []
            for r in todo:
                headers = [(HEADER, str(r.notification_id).encode())]
                if r.chain_head is not None:
                    headers.append((CHAIN_HEADER, r.chain_head.hex().encode()))
                futures.append(await producer.send(r.topic, r.value, key=r.key, partition=r.partition,
                                                   headers=headers))
            await asyncio.gather(*futures)
        return len(todo)


def new_producer(bootstrap: str, transactional_id: str) -> AIOKafkaProducer:
    """The publisher's producer: transactional (idempotent, acks=all), with
    one `transactional_id` per store's publisher role, so that starting it
    fences any earlier one (zombie fencing)."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="accrual-publisher",
        transactional_id=transactional_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=512 * 1024,
        compression_type=None,
    )
