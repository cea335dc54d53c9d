"""The projector follows the application's notification log and writes the
read models. Each batch of notifications is written together with the
position reached, in one transaction, so it can stop anywhere and resume.

Balances and lots are written from each member-account event's `effect`
(engine.effects), the one statement of what the event did to the points;
the history row of an event also names its rule, reason and source. The
changes of a batch are gathered in memory (`projections.changes`) and
written with one statement per table at its end.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Iterable, Iterator
from uuid import UUID

import orjson

from engine.account import ADJUSTMENT, OUT, MemberAccount
from engine.calendar import shift_month
from engine.closed_day import ClosedDay
from engine.effects import NO_EFFECT
from engine.mgts import MgtsAccount
from engine.rejection import APPLIED, OPEN, REDRIVEN, REJECTED, Rejection
from engine.transfer import MemberTransfer
from projections import books, cohorts, upgrade
from projections.chain import LogChain, create_statement
from projections.changes import Changes, kopecks
from projections.cohorts import book_line
from projections.db import Database, Transaction
from projections.tables import Names, occurred_utc, utc_text

BATCH_SIZE = 2000
REBUILD_BATCH_SIZE = 20_000
ID_CACHE_MAX = 200_000
_MEMBER_EVENTS = frozenset(
    v for v in vars(MemberAccount).values() if isinstance(v, type) and issubclass(v, MemberAccount.Event)
)
_MGTS_EVENTS = frozenset(
    v for v in vars(MgtsAccount).values() if isinstance(v, type) and issubclass(v, MgtsAccount.Event)
)


def _json(value: Any) -> str:
    # Decimals and moments as str(), as the history has always shown them.
    return orjson.dumps(value, default=str, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()


def _lots(items: Iterable[Any]) -> list[list]:
    """Allocations as [lot_id, points], portions as [lot_id, points, lot_date, expires_on]."""
    rows = []
    for item in items:
        if hasattr(item, "lot_date"):
            rows.append([item.lot_id, item.points, item.lot_date.isoformat(), item.expires_on.isoformat()])
        else:
            rows.append([item.lot_id, item.points])
    return rows


class Projector:
    name = "read_models"

    def __init__(self, app: Any, db: Database, names: Names | None = None, *, chain: bool = True):
        """`chain`: extend the log's hash chain with each batch written
        (projections/chain.py); a scratch copy (the audit's) leaves it alone."""
        self.app = app
        self.db = db
        self.names = names or Names()
        self.chain = LogChain(db, app.recorder.events_table_name) if chain else None
        self._msisdns: dict[Any, str] = {}
        self._mgts_accounts: dict[Any, str] = {}
        self._changes = Changes()
        self._effect = NO_EFFECT  # of the event being projected
        self._followed: list[Any] = []
        self.follow_batch_size = 10_000
        self.batch_size = BATCH_SIZE  # notifications read and written together when catching up
        self.id_cache_max = ID_CACHE_MAX  # account ids -> msisdns kept in memory
        self.rebuild_batch_size = REBUILD_BATCH_SIZE
        self._handlers: dict[type, Callable[[Any], object]] = {  # what they return is ignored
            MemberAccount.Opened: self._opened,
            MemberAccount.MemberEnrolled: self._enrolled,
            MemberAccount.EventHeld: self._held,
            MemberAccount.NotEligible: self._not_eligible,
            MemberAccount.UsageCounted: self._points,
            MemberAccount.PointsAccrued: self._accrued,
            MemberAccount.PointsClawedBack: self._clawed_back,
            MemberAccount.PointsExpired: self._expired,
            MemberAccount.CardSpendRecorded: self._card_spend,
            MemberAccount.CardMonthSettled: self._card_settled,
            MemberAccount.PointsRedeemed: self._redeemed,
            MemberAccount.PointsRestored: self._restored,
            MemberAccount.PointsTransferred: self._transferred,
            MemberAccount.TransferReturned: self._transfer_returned,
            # The news of a transfer on the other member's account: the
            # version only, no history line. The recipient sees a pending
            # offer on the Transfers page (`rm_transfers`), and an accepted
            # one as its `transfer_in` line; the sender sees the transfer as
            # its `transfer_out` line, whose status the transfers table keeps.
            MemberAccount.TransferOfferReceived: self._points,
            MemberAccount.TransferAccepted: self._points,
            MemberAccount.PointsAdjusted: self._adjusted,
            MemberTransfer.Offered: self._transfer_offered,
            MemberTransfer.Accepted: self._transfer_settled,
            MemberTransfer.Declined: self._transfer_settled,
            MemberTransfer.Returned: self._transfer_settled,
            MgtsAccount.Opened: self._mgts_opened,
            MgtsAccount.Linked: self._mgts_linked,
            MgtsAccount.BillRecorded: self._mgts_bill,
            MgtsAccount.PeriodSettled: self._mgts_settled,
            Rejection.Recorded: self._rejected,
            Rejection.Redriven: self._redriven,
            Rejection.Refused: self._refused_again,
            ClosedDay.Closed: self._closed_day,
        }

    # -- running -------------------------------------------------------------

    def create_tables(self, indexes: bool = True) -> None:
        """The tables, those of an earlier release with the columns added
        since, filled in (`projections.upgrade`), then the indexes: on
        SQLite all in one write transaction, on PostgreSQL the fill in a
        transaction per batch."""
        with self.db.transaction() as tx:
            for statement in self.names.create_statements(indexes=False):
                tx.execute(statement)
            tx.execute(
                f"INSERT INTO {self.names.tracking} (name, position) VALUES (?, 0) ON CONFLICT (name) DO NOTHING",
                (self.name,),
            )
            if self.chain is not None:
                tx.execute(create_statement(self.db))
            upgrade.add_columns(tx, self.names)
            if not self.db.is_postgres:
                self._fill_and_index(lambda: nullcontext(tx), indexes)
        if self.db.is_postgres:
            self._fill_and_index(self.db.transaction, indexes)
        # Read models of an earlier release had no books and no cohorts. Filled
        # holding the position, so no other projector writes meanwhile; in a
        # transaction of its own, after the DDL's table locks are released (a
        # projector holding the position and waiting for a table locked by
        # `CREATE INDEX IF NOT EXISTS` here would be a deadlock).
        with self.db.transaction() as tx:
            self._locked_position(tx)
            books.fill_from_history(tx, self.names)
            cohorts.fill_from_history(tx, self.names)

    def _fill_and_index(self, transaction: upgrade.Transactions, indexes: bool) -> None:
        upgrade.fill(transaction, self.names, self._kafka_key)
        if indexes:
            with transaction() as tx:
                for statement in self.names.index_statements():
                    tx.execute(statement)

    def rebuild(
        self,
        progress: Callable[[int, int], None] | None = None,
        batches: Iterable[tuple[Changes, int, int, int]] | None = None,
    ) -> int:
        """Drops the read models and builds them again from the whole log, as
        a bulk load: large batches, commits that need not wait for the disk
        (a crash leaves read models to rebuild again, never a wrong one: each
        batch carries its position), secondary indexes built at the end.
        `batches` are the changes worked out elsewhere (`read_changes` in
        another process); without them this projector reads the log itself."""
        self.drop_tables()
        self.create_tables(indexes=False)
        last = self.app.recorder.max_notification_id() or 0
        with self.db.relaxed_durability():
            if batches is None:
                batch_size, self.batch_size = self.batch_size, self.rebuild_batch_size
                try:
                    done = self.catch_up(progress)
                finally:
                    self.batch_size = batch_size
            else:
                done = 0
                for changes, position, upto, count in batches:
                    assert self._write(changes, position, upto), "nothing else writes a rebuild's tables"
                    done += count
                    if progress is not None:
                        progress(done, last)
        with self.db.transaction() as tx:
            for statement in self.names.index_statements():
                tx.execute(statement)
        return done

    def read_changes(
        self, until: int, before_forgetting: Callable[[int], None]
    ) -> Iterator[tuple[Changes, int, int, int]]:
        """The changes of the log up to `until`, batch by batch, for a
        rebuild written by another projector: (changes, position before,
        position after, notifications). When the bounded map of account ids
        is full, `before_forgetting(position)` must return only once the
        writer has written up to `position`, since ids are then looked up in
        the tables."""
        position = 0
        mapper = self.app.mapper
        while position < until:
            notifications = self.app.recorder.select_notifications(
                start=position, limit=self.rebuild_batch_size, inclusive_of_start=False
            )
            if not notifications:
                return
            if len(self._msisdns) >= self.id_cache_max:
                before_forgetting(position)
            events = [mapper.to_domain_event(n) for n in notifications]
            yield self._changes_of(events), position, notifications[-1].id, len(notifications)
            position = notifications[-1].id

    def drop_tables(self) -> None:
        with self.db.transaction() as tx:
            for statement in self.names.drop_statements():
                tx.execute(statement)
        self._msisdns.clear()
        self._mgts_accounts.clear()

    def position(self) -> int:
        rows = self.db.query(f"SELECT position FROM {self.names.tracking} WHERE name = ?", (self.name,))
        return rows[0][0] if rows else 0

    def _locked_position(self, tx: Transaction) -> int:
        """The position, locked for this transaction, so two projectors of
        one store never apply the same notification twice."""
        lock = " FOR UPDATE" if self.db.is_postgres else ""
        return tx.query(f"SELECT position FROM {self.names.tracking} WHERE name = ?{lock}", (self.name,))[0][0]

    def catch_up(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Applies every notification after the recorded position; returns how
        many were applied. `progress(done, total)` is called per batch."""
        if self._followed:
            self.flush()
        done = 0
        last = self.app.recorder.max_notification_id() or 0
        mapper = self.app.mapper
        while True:
            position = self.position()
            if position >= last:
                break
            notifications = self.app.recorder.select_notifications(
                start=position, limit=self.batch_size, inclusive_of_start=False
            )
            if not notifications:
                break
            events = [mapper.to_domain_event(n) for n in notifications]
            if self._write(self._changes_of(events), position, notifications[-1].id, notifications):
                done += len(notifications)
                if progress is not None:
                    progress(done, last)
        return done

    def follow(self, recordings: list[Any]) -> None:
        """Takes a batch the application has just saved. Batches are kept in
        memory and written together once `follow_batch_size` events have
        gathered (or at `flush`), because each read-model transaction
        rewrites many scattered pages: fewer, larger transactions are much
        cheaper. Nothing is lost by a crash meanwhile: the read models catch
        up from the event log."""
        self._followed.extend(recordings)
        if len(self._followed) >= self.follow_batch_size:
            self.flush()

    def flush(self) -> None:
        """Writes the followed batches, from memory (no re-reading, no
        decoding) when they continue the position directly; otherwise
        catches up from the store."""
        recordings, self._followed = self._followed, []
        if not recordings:
            return
        first, last = recordings[0].notification.id, recordings[-1].notification.id
        position = self.position()
        if position + 1 == first:
            changes = self._changes_of([r.domain_event for r in recordings])
            if self._write(changes, position, last, [r.notification for r in recordings]):
                return
        if self.position() < last:
            self.catch_up()

    def history_of(self, events: list[Any]) -> list[tuple]:
        """The history lines these events make (the rows `rm_history` gets),
        without writing anything: for the auditor's export."""
        return self._changes_of(events).history

    def _changes_of(self, events: list[Any]) -> Changes:
        """What these events change in the read models, worked out before any
        table is locked (lookups are reads)."""
        self._changes = Changes()
        if len(self._msisdns) >= self.id_cache_max:
            self._msisdns.clear()  # bounded; read again from the table
        self._look_up(events)
        handlers = self._handlers
        for event in events:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)
        return self._changes

    def _write(self, changes: Changes, position: int, last: int, notifications: list[Any] | None = None) -> bool:
        """One transaction: the changes, the hash chain extended over the
        `notifications` read after `position` (None: the chain reads what it
        lacks) and the position reached, if no other projector of this store
        moved the position meanwhile (then nothing is written, and the
        caller reads on from the new position)."""
        with self.db.transaction() as tx:
            if self._locked_position(tx) != position:
                return False
            changes.write(tx, self.names)
            if self.chain is not None:
                self.chain.follow(tx, position, last, notifications)
            tx.execute(f"UPDATE {self.names.tracking} SET position = ? WHERE name = ?", (last, self.name))
        return True

    def _look_up(self, events: list[Any]) -> None:
        """The msisdns and MGTS numbers of the batch's aggregates that this
        projector has not seen yet, in one query per table."""
        members, mgts, opened = set(), set(), set()
        for e in events:
            kind = type(e)
            if kind is MemberAccount.Opened or kind is MgtsAccount.Opened:
                opened.add(e.originator_id)  # its id comes with it
            elif kind in _MEMBER_EVENTS and e.originator_id not in self._msisdns and e.originator_id not in opened:
                members.add(str(e.originator_id))
            elif kind in _MGTS_EVENTS and e.originator_id not in self._mgts_accounts and e.originator_id not in opened:
                mgts.add(str(e.originator_id))
        for table, column, wanted, found in (
            (self.names.members, "msisdn", members, self._msisdns),
            (self.names.mgts_accounts, "mgts_account", mgts, self._mgts_accounts),
        ):
            ids = sorted(wanted)
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                rows = self.db.query(
                    f"SELECT account_id, {column} FROM {table} WHERE account_id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                for account_id, value in rows:
                    found[UUID(account_id)] = value

    # -- member accounts: every event's effect on the balance and the lots -------

    def _points(self, e: Any) -> str:
        """The event's effect on the member's balance and lots."""
        effect = self._effect = e.effect
        changes = self._changes
        changes.touch(e, effect.points, effect.uncollected)
        msisdn = self._msisdns[e.originator_id]
        if effect is NO_EFFECT:
            return msisdn
        for lot in effect.opened:
            changes.open_lot(msisdn, lot.lot_id, effect.rule, lot.lot_date.isoformat(), lot.expires_on.isoformat(),
                             lot.remaining)
        for allocation in effect.taken:
            changes.change_lot(msisdn, allocation.lot_id, -allocation.points)
        for portion in effect.returned:
            changes.change_lot(msisdn, portion.lot_id, portion.points)
        return msisdn

    def _history(self, msisdn: str, e: Any, kind: str, **fields: Any) -> None:
        """A history row of the event whose effect `_points` has just taken."""
        get = fields.get
        points = self._effect.points
        detail = get("detail", {})
        occurred_at = e.timestamp.isoformat()
        self._changes.history.append((
            msisdn, e.originator_version, kind, points, get("rule"), get("reason"),
            get("source_event_id"), get("lot_id"), get("lot_date"), get("expires_on"), occurred_at,
            _json(detail), occurred_utc(occurred_at),
        ))
        self._changes.books.book(kind, get("rule"), get("reason"), points)
        if points or detail.get("lapsed"):
            book_line(self._changes.cohorts, msisdn, kind, points, get("lot_date"), detail)

    def _opened(self, e: Any) -> None:
        self._changes.new_members.append((str(e.originator_id), e.msisdn, e.originator_version, e.timestamp.isoformat()))
        self._msisdns[e.originator_id] = e.msisdn

    def _enrolled(self, e: Any) -> None:
        msisdn = self._points(e)
        self._changes.enrolled.append((e.enrolled_at.isoformat(), e.channel, str(e.originator_id)))
        self._changes.release(msisdn)
        self._history(msisdn, e, "enrolled", source_event_id=e.source_event_id,
                      detail={"channel": e.channel, "released": e.released})

    def _held(self, e: Any) -> None:
        msisdn = self._points(e)
        key = (msisdn, e.topic, e.source_event_id)
        self._changes.held[key] = (*key, e.timestamp.isoformat(), _json(e.message))

    def _not_eligible(self, e: Any) -> None:
        msisdn = self._points(e)
        self._history(msisdn, e, "not_eligible", reason=e.reason, source_event_id=e.source_event_id,
                      detail={"type": e.kind})

    def _accrued(self, e: Any) -> None:
        msisdn = self._points(e)
        lot = e.lot
        self._history(msisdn, e, "accrued", rule=e.rule, source_event_id=e.source_event_id, lot_id=lot.lot_id,
                      lot_date=lot.lot_date.isoformat(), expires_on=lot.expires_on.isoformat(), detail=e.basis)

    def _clawed_back(self, e: Any) -> None:
        msisdn = self._points(e)
        self._history(msisdn, e, "clawed_back", reason=e.reason, source_event_id=e.source_event_id,
                      detail={**e.basis, "points_due": e.points_due, "uncollected": e.uncollected,
                              "lots": _lots(e.allocations)})

    def _expired(self, e: Any) -> None:
        msisdn = self._points(e)
        self._history(msisdn, e, "expired", reason="expiry",
                      detail={"as_of": e.as_of.isoformat(), "lots": _lots(e.allocations)})

    # -- rule 10: debits and transfers -----------------------------------------

    def _redeemed(self, e: Any) -> None:
        msisdn = self._points(e)
        self._history(msisdn, e, "redeemed", reason=e.purpose, source_event_id=e.idempotency_key,
                      detail={"debit_id": e.debit_id, "purpose": e.purpose, "reference": e.reference,
                              "lots": _lots(e.portions)})
        self._changes.new_debits.append(
            (e.debit_id, msisdn, e.purpose, e.points, _json(e.reference), utc_text(e.timestamp))
        )

    def _restored(self, e: Any) -> None:
        msisdn = self._points(e)
        self._history(msisdn, e, "restored", reason=e.purpose,
                      detail={"debit_id": e.debit_id, "purpose": e.purpose, "reference": e.reference,
                              "lots": _lots(e.portions), "lapsed": _lots(e.lapsed)})
        self._changes.cancelled_debits.append(e.debit_id)

    def _transferred(self, e: Any) -> None:
        msisdn = self._points(e)
        if e.direction == OUT:
            self._history(msisdn, e, "transfer_out", reason="transfer",
                          detail={"transfer_id": e.transfer_id, "to": e.counterpart, "status": e.status,
                                  "lots": _lots(e.portions)})
        else:
            self._history(msisdn, e, "transfer_in", rule="transfer",
                          detail={"transfer_id": e.transfer_id, "from": e.counterpart, "lots": _lots(e.portions),
                                  "lapsed": _lots(e.lapsed)})

    def _transfer_returned(self, e: Any) -> None:
        msisdn = self._points(e)
        self._history(msisdn, e, "transfer_returned", reason=e.reason,
                      detail={"transfer_id": e.transfer_id, "to": e.counterpart, "lots": _lots(e.portions),
                              "lapsed": _lots(e.lapsed)})

    # -- issue 13: the loyalty team's adjustments ---------------------------------

    def _adjusted(self, e: Any) -> None:
        """A credit names its new lot (as a portion, so the cohorts find its
        date in the line), a debit the lots it took from. The staff's text
        is in the detail, for the back office; the reason column says only
        "adjustment", as the outbound event does."""
        msisdn = self._points(e)
        lot = e.lot
        if lot is None:
            self._history(msisdn, e, "adjusted", reason=ADJUSTMENT, source_event_id=e.adjustment_id,
                          detail=self._adjustment(e, _lots(e.portions)))
            return
        self._history(msisdn, e, "adjusted", rule=ADJUSTMENT, reason=ADJUSTMENT, source_event_id=e.adjustment_id,
                      lot_id=lot.lot_id, lot_date=lot.lot_date.isoformat(), expires_on=lot.expires_on.isoformat(),
                      detail=self._adjustment(e, [[lot.lot_id, lot.remaining, lot.lot_date.isoformat(),
                                                   lot.expires_on.isoformat()]]))

    @staticmethod
    def _adjustment(e: Any, lots: list[list]) -> dict[str, Any]:
        return {"adjustment_id": e.adjustment_id, "reason": e.reason, "requested_by": e.requested_by,
                "approved_by": e.approved_by, "lots": lots}

    def _transfer_offered(self, e: Any) -> None:
        self._changes.new_transfers.append(
            (str(e.originator_id), e.sender, e.recipient, e.points, utc_text(e.offered_at), utc_text(e.expires_at))
        )

    def _transfer_settled(self, e: Any) -> None:
        status = {MemberTransfer.Accepted: "accepted", MemberTransfer.Declined: "declined",
                  MemberTransfer.Returned: "returned"}[type(e)]
        self._changes.transfer_settlements[str(e.originator_id)] = (status, utc_text(e.timestamp))

    # -- card months and MGTS periods: the tick's agenda -------------------------

    def _card_spend(self, e: Any) -> None:
        msisdn = self._points(e)
        # The month after, if settled already, is settled on this month's
        # spend (its rate): it has to be looked at again (rule 5).
        self._changes.card_spend(msisdn, e.month, shift_month(e.month, 1), kopecks(e.amount))

    def _card_settled(self, e: Any) -> None:
        msisdn = self._points(e)
        self._changes.card_settled(msisdn, e.month, e.points)

    def _mgts_opened(self, e: Any) -> None:
        self._changes.new_mgts_accounts.append((str(e.originator_id), e.mgts_account))
        self._mgts_accounts[e.originator_id] = e.mgts_account

    def _mgts_account(self, e: Any) -> str:
        return self._mgts_accounts[e.originator_id]

    def _mgts_linked(self, e: Any) -> None:
        self._changes.mgts_link(str(e.originator_id), e.linked_at.isoformat(), e.msisdn)

    def _mgts_bill(self, e: Any) -> None:
        self._changes.mgts_bill(self._mgts_account(e), e.period, kopecks(e.amount))

    def _mgts_settled(self, e: Any) -> None:
        self._changes.mgts_settled(self._mgts_account(e), e.period, e.points, e.msisdn)

    # -- rejections --------------------------------------------------------------

    def _rejected(self, e: Any) -> None:
        self._changes.rejections.append(
            (str(e.originator_id), e.topic, e.partition, e.offset, e.event_id, e.msisdn, e.reason, e.detail,
             e.original, e.timestamp.isoformat(), e.key, utc_text(e.timestamp))
        )

    def _redriven(self, e: Any) -> None:
        status = REDRIVEN if e.outcome == APPLIED else OPEN
        self._changes.attempt(str(e.originator_id), e.attempt, e.by, utc_text(e.timestamp), e.outcome, e.reason,
                              e.detail, status)

    def _refused_again(self, e: Any) -> None:
        self._changes.attempt(str(e.originator_id), e.attempt, None, utc_text(e.timestamp), REJECTED, e.reason,
                              e.detail, OPEN)

    def _kafka_key(self, rejection_id: str) -> str | None:
        """The Kafka key of a dead letter's record, from its Rejection (for
        the upgrade of a store whose read model did not keep it)."""
        return self.app.repository.get(UUID(rejection_id)).key

    # -- the books ------------------------------------------------------------------

    def _closed_day(self, e: Any) -> None:
        """A tick closed the books' period (projections/books.py)."""
        self._changes.books.close(e.as_of.isoformat())
