"""The projector follows the application's notification log and writes the
read models. Each batch of notifications is written together with the
position reached, in one transaction, so it can stop anywhere and resume.

Within a batch, the changes to members, history, lots and held events do not
depend on their order and are written with one statement per table at the
end (`_Pending`); card months and MGTS periods do depend on it (a late spend
after a settlement marks the month again) and are written as they come.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterable

from engine.account import OUT, MemberAccount
from engine.calendar import shift_month
from engine.mgts import MgtsAccount
from engine.rejection import Rejection
from engine.transfer import MemberTransfer
from projections.db import Database, Transaction
from projections.tables import Names

BATCH_SIZE = 2000
_ID_CACHE_MAX = 200_000


def kopecks(amount: Decimal) -> int:
    return int(amount * 100)


def utc_text(moment: datetime) -> str:
    """A moment as ISO text in UTC, always with microseconds: text order is time order."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _json(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)


class _Pending:
    """The order-free changes of one batch, written at its end."""

    def __init__(self) -> None:
        self.new_members: list[tuple] = []
        self.members: dict[Any, list] = {}  # account id -> [balance delta, uncollected delta, version, updated_at]
        self.enrolled: list[tuple] = []
        self.history: list[tuple] = []
        self.new_lots: dict[tuple[str, int], list] = {}
        self.lot_debits: dict[tuple[str, int], int] = {}
        self.held: dict[tuple[str, str, str], tuple] = {}
        self.released: set[str] = set()

    def touch(self, e: Any, points: int = 0, uncollected: int = 0) -> None:
        entry = self.members.get(e.originator_id)
        if entry is None:
            self.members[e.originator_id] = [points, uncollected, e.originator_version, e.timestamp]
        else:
            entry[0] += points
            entry[1] += uncollected
            entry[2] = e.originator_version
            entry[3] = e.timestamp

    def debit_lot(self, msisdn: str, lot_id: int, points: int) -> None:
        new = self.new_lots.get((msisdn, lot_id))
        if new is not None:
            new[-1] -= points
        else:
            self.lot_debits[(msisdn, lot_id)] = self.lot_debits.get((msisdn, lot_id), 0) + points

    def release(self, msisdn: str) -> None:
        self.released.add(msisdn)
        for key in [k for k in self.held if k[0] == msisdn]:
            del self.held[key]

    def write(self, tx: Transaction, names: Names) -> None:
        tx.executemany(
            f"INSERT INTO {names.members} (account_id, msisdn, version, updated_at) VALUES (?, ?, ?, ?)",
            self.new_members,
        )
        tx.executemany(
            f"UPDATE {names.members} SET balance = balance + ?, uncollected = uncollected + ?, "
            "version = ?, updated_at = ? WHERE account_id = ?",
            [(b, u, v, t.isoformat(), str(i)) for i, (b, u, v, t) in self.members.items()],
        )
        tx.executemany(f"UPDATE {names.members} SET enrolled_at = ?, channel = ? WHERE account_id = ?", self.enrolled)
        tx.executemany(
            f"INSERT INTO {names.history} (msisdn, version, kind, points, rule, reason, source_event_id, "
            "lot_id, lot_date, expires_on, occurred_at, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            self.history,
        )
        tx.executemany(
            f"INSERT INTO {names.lots} (msisdn, lot_id, rule, lot_date, expires_on, points, remaining) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            list(self.new_lots.values()),
        )
        tx.executemany(
            f"UPDATE {names.lots} SET remaining = remaining - ? WHERE msisdn = ? AND lot_id = ?",
            [(points, msisdn, lot_id) for (msisdn, lot_id), points in self.lot_debits.items()],
        )
        tx.executemany(f"DELETE FROM {names.held} WHERE msisdn = ?", [(m,) for m in self.released])
        tx.executemany(
            f"INSERT INTO {names.held} (msisdn, topic, source_event_id, occurred_at, message) VALUES (?, ?, ?, ?, ?)",
            list(self.held.values()),
        )


class Projector:
    name = "read_models"

    def __init__(self, app: Any, db: Database, names: Names | None = None):
        self.app = app
        self.db = db
        self.names = names or Names()
        self._msisdns: dict[Any, str] = {}
        self._mgts_accounts: dict[Any, str] = {}
        self._pending = _Pending()
        self._followed: list[Any] = []
        self.follow_batch_size = 10_000
        self._handlers: dict[type, Callable[[Transaction, Any], None]] = {
            MemberAccount.Opened: self._opened,
            MemberAccount.MemberEnrolled: self._enrolled,
            MemberAccount.EventHeld: self._held,
            MemberAccount.NotEligible: self._not_eligible,
            MemberAccount.UsageCounted: self._touch,
            MemberAccount.PointsAccrued: self._accrued,
            MemberAccount.PointsClawedBack: self._debited,
            MemberAccount.PointsExpired: self._debited,
            MemberAccount.CardSpendRecorded: self._card_spend,
            MemberAccount.CardMonthSettled: self._card_settled,
            MemberAccount.PointsRedeemed: self._redeemed,
            MemberAccount.PointsRestored: self._restored,
            MemberAccount.PointsTransferred: self._transferred,
            MemberAccount.TransferReturned: self._transfer_returned,
            MemberTransfer.Offered: self._transfer_offered,
            MemberTransfer.Accepted: self._transfer_settled,
            MemberTransfer.Declined: self._transfer_settled,
            MemberTransfer.Returned: self._transfer_settled,
            MgtsAccount.Opened: self._mgts_opened,
            MgtsAccount.Linked: self._mgts_linked,
            MgtsAccount.BillRecorded: self._mgts_bill,
            MgtsAccount.PeriodSettled: self._mgts_settled,
            Rejection.Recorded: self._rejected,
        }

    # -- running -------------------------------------------------------------

    def create_tables(self) -> None:
        with self.db.transaction() as tx:
            for statement in self.names.create_statements():
                tx.execute(statement)
            tx.execute(
                f"INSERT INTO {self.names.tracking} (name, position) VALUES (?, 0) ON CONFLICT (name) DO NOTHING",
                (self.name,),
            )

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
        while True:
            with self.db.transaction() as tx:
                position = self._locked_position(tx)
                if position >= last:
                    break
                notifications = self.app.recorder.select_notifications(
                    start=position, limit=BATCH_SIZE, inclusive_of_start=False
                )
                if not notifications:
                    break
                mapper = self.app.mapper
                self._apply_all(tx, (mapper.to_domain_event(n) for n in notifications), notifications[-1].id)
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
        with self.db.transaction() as tx:
            position = self._locked_position(tx)
            if position + 1 == first:
                self._apply_all(tx, (r.domain_event for r in recordings), last)
                return
        if position < last:
            self.catch_up()

    def _apply_all(self, tx: Transaction, events: Iterable[Any], position: int) -> None:
        self._pending = _Pending()
        if len(self._msisdns) >= _ID_CACHE_MAX:
            self._msisdns.clear()  # bounded; read again from the table (never mid-batch: rows may be pending)
        handlers = self._handlers
        for event in events:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(tx, event)
        self._pending.write(tx, self.names)
        tx.execute(f"UPDATE {self.names.tracking} SET position = ? WHERE name = ?", (position, self.name))

    # -- member accounts -------------------------------------------------------

    def _msisdn(self, tx: Transaction, account_id: Any) -> str:
        msisdn = self._msisdns.get(account_id)
        if msisdn is None:
            rows = tx.query(f"SELECT msisdn FROM {self.names.members} WHERE account_id = ?", (str(account_id),))
            msisdn = rows[0][0]
            self._remember(account_id, msisdn)
        return msisdn

    def _remember(self, account_id: Any, msisdn: str) -> None:
        self._msisdns[account_id] = msisdn

    def _opened(self, tx: Transaction, e: Any) -> None:
        self._pending.new_members.append((str(e.originator_id), e.msisdn, e.originator_version, e.timestamp.isoformat()))
        self._remember(e.originator_id, e.msisdn)

    def _touch(self, tx: Transaction, e: Any, points: int = 0, uncollected: int = 0) -> str:
        self._pending.touch(e, points, uncollected)
        return self._msisdn(tx, e.originator_id)

    def _history(self, msisdn: str, e: Any, kind: str, points: int, **fields: Any) -> None:
        get = fields.get
        self._pending.history.append((
            msisdn, e.originator_version, kind, points, get("rule"), get("reason"), get("source_event_id"),
            get("lot_id"), get("lot_date"), get("expires_on"), e.timestamp.isoformat(), _json(get("detail", {})),
        ))

    def _enrolled(self, tx: Transaction, e: Any) -> None:
        msisdn = self._touch(tx, e)
        self._pending.enrolled.append((e.enrolled_at.isoformat(), e.channel, str(e.originator_id)))
        self._pending.release(msisdn)
        self._history(msisdn, e, "enrolled", 0, source_event_id=e.source_event_id,
                      detail={"channel": e.channel, "released": e.released})

    def _held(self, tx: Transaction, e: Any) -> None:
        msisdn = self._touch(tx, e)
        key = (msisdn, e.topic, e.source_event_id)
        self._pending.held[key] = (*key, e.timestamp.isoformat(), _json(e.message))

    def _not_eligible(self, tx: Transaction, e: Any) -> None:
        msisdn = self._touch(tx, e)
        self._history(msisdn, e, "not_eligible", 0, reason=e.reason, source_event_id=e.source_event_id,
                      detail={"type": e.kind})

    def _accrued(self, tx: Transaction, e: Any) -> None:
        msisdn = self._touch(tx, e, points=e.points)
        self._pending.new_lots[(msisdn, e.lot_id)] = [
            msisdn, e.lot_id, e.rule, e.lot_date, e.expires_on, e.points, e.points
        ]
        self._history(msisdn, e, "accrued", e.points, rule=e.rule, source_event_id=e.source_event_id,
                      lot_id=e.lot_id, lot_date=e.lot_date, expires_on=e.expires_on, detail=e.basis)

    def _debited(self, tx: Transaction, e: Any) -> None:
        clawback = isinstance(e, MemberAccount.PointsClawedBack)
        uncollected = e.uncollected if clawback else 0
        msisdn = self._touch(tx, e, points=-e.points, uncollected=uncollected)
        for lot_id, points in e.allocations:
            self._pending.debit_lot(msisdn, lot_id, points)
        if clawback:
            self._history(msisdn, e, "clawed_back", -e.points, reason=e.reason,
                          source_event_id=e.source_event_id,
                          detail={**e.basis, "points_due": e.points_due, "uncollected": e.uncollected,
                                  "lots": e.allocations})
        else:
            self._history(msisdn, e, "expired", -e.points, reason="expiry",
                          detail={"as_of": e.as_of, "lots": e.allocations})

    # -- rule 10: debits and transfers -----------------------------------------

    def _redeemed(self, tx: Transaction, e: Any) -> None:
        msisdn = self._touch(tx, e, points=-e.points)
        for lot_id, points, *_ in e.allocations:
            self._pending.debit_lot(msisdn, lot_id, points)
        self._history(msisdn, e, "redeemed", -e.points, reason=e.purpose, source_event_id=e.idempotency_key,
                      detail={"debit_id": e.debit_id, "purpose": e.purpose, "reference": e.reference,
                              "lots": e.allocations})
        tx.execute(
            f"INSERT INTO {self.names.debits} (debit_id, msisdn, purpose, points, status, reference, created_at) "
            "VALUES (?, ?, ?, ?, 'debited', ?, ?)",
            (e.debit_id, msisdn, e.purpose, e.points, _json(e.reference), utc_text(e.timestamp)),
        )

    def _restored(self, tx: Transaction, e: Any) -> None:
        msisdn = self._touch(tx, e, points=e.points)
        for lot_id, points, *_ in e.allocations:
            self._pending.debit_lot(msisdn, lot_id, -points)
        self._history(msisdn, e, "restored", e.points, reason=e.purpose,
                      detail={"debit_id": e.debit_id, "purpose": e.purpose, "reference": e.reference,
                              "lots": e.allocations, "lapsed": e.lapsed})
        tx.execute(f"UPDATE {self.names.debits} SET status = 'cancelled' WHERE debit_id = ?", (e.debit_id,))

    def _transferred(self, tx: Transaction, e: Any) -> None:
        outgoing = e.direction == OUT
        msisdn = self._touch(tx, e, points=-e.points if outgoing else e.points)
        if outgoing:
            for lot_id, points, *_ in e.allocations:
                self._pending.debit_lot(msisdn, lot_id, points)
            self._history(msisdn, e, "transfer_out", -e.points, reason="transfer",
                          detail={"transfer_id": e.transfer_id, "to": e.counterpart, "status": e.status,
                                  "lots": e.allocations})
            return
        for lot_id, points, lot_date, expires_on in e.allocations:
            self._pending.new_lots[(msisdn, lot_id)] = [msisdn, lot_id, "transfer", lot_date, expires_on, points, points]
        self._history(msisdn, e, "transfer_in", e.points, rule="transfer",
                      detail={"transfer_id": e.transfer_id, "from": e.counterpart, "lots": e.allocations,
                              "lapsed": e.lapsed})

    def _transfer_returned(self, tx: Transaction, e: Any) -> None:
        msisdn = self._touch(tx, e, points=e.points)
        for lot_id, points, *_ in e.allocations:
            self._pending.debit_lot(msisdn, lot_id, -points)
        self._history(msisdn, e, "transfer_returned", e.points, reason=e.reason,
                      detail={"transfer_id": e.transfer_id, "to": e.counterpart, "lots": e.allocations,
                              "lapsed": e.lapsed})

    def _transfer_offered(self, tx: Transaction, e: Any) -> None:
        tx.execute(
            f"INSERT INTO {self.names.transfers} (transfer_id, sender, recipient, points, status, offered_at, "
            "expires_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
            (str(e.originator_id), e.sender, e.recipient, e.points, utc_text(e.offered_at), utc_text(e.expires_at)),
        )

    def _transfer_settled(self, tx: Transaction, e: Any) -> None:
        status = {MemberTransfer.Accepted: "accepted", MemberTransfer.Declined: "declined",
                  MemberTransfer.Returned: "returned"}[type(e)]
        tx.execute(
            f"UPDATE {self.names.transfers} SET status = ?, settled_at = ? WHERE transfer_id = ?",
            (status, utc_text(e.timestamp), str(e.originator_id)),
        )

    # -- card months and MGTS periods: the tick's agenda (in log order) --------

    def _card_spend(self, tx: Transaction, e: Any) -> None:
        msisdn = self._touch(tx, e)
        tx.execute(
            f"INSERT INTO {self.names.card_months} (msisdn, month, net_kopecks, dirty) VALUES (?, ?, ?, 1) "
            "ON CONFLICT (msisdn, month) DO UPDATE SET net_kopecks = "
            f"{self.names.card_months}.net_kopecks + excluded.net_kopecks, dirty = 1",
            (msisdn, e.month, kopecks(e.amount)),
        )
        # The month after, if settled already, is settled on this month's
        # spend (its rate): it has to be looked at again (rule 5).
        tx.execute(
            f"UPDATE {self.names.card_months} SET dirty = 1 "
            "WHERE msisdn = ? AND month = ? AND settled_points IS NOT NULL AND dirty = 0",
            (msisdn, shift_month(e.month, 1)),
        )

    def _card_settled(self, tx: Transaction, e: Any) -> None:
        msisdn = self._touch(tx, e)
        tx.execute(
            f"UPDATE {self.names.card_months} SET settled_points = ?, dirty = 0 WHERE msisdn = ? AND month = ?",
            (e.points, msisdn, e.month),
        )

    def _mgts_opened(self, tx: Transaction, e: Any) -> None:
        tx.execute(
            f"INSERT INTO {self.names.mgts_accounts} (account_id, mgts_account) VALUES (?, ?)",
            (str(e.originator_id), e.mgts_account),
        )
        self._mgts_accounts[e.originator_id] = e.mgts_account

    def _mgts_account(self, tx: Transaction, e: Any) -> str:
        account = self._mgts_accounts.get(e.originator_id)
        if account is None:
            rows = tx.query(
                f"SELECT mgts_account FROM {self.names.mgts_accounts} WHERE account_id = ?",
                (str(e.originator_id),),
            )
            account = self._mgts_accounts[e.originator_id] = rows[0][0]
        return account

    def _mgts_linked(self, tx: Transaction, e: Any) -> None:
        linked_at = e.linked_at.isoformat()
        tx.execute(
            f"UPDATE {self.names.mgts_accounts} SET msisdn = ?, linked_at = ? "
            "WHERE account_id = ? AND (linked_at IS NULL OR linked_at <= ?)",
            (e.msisdn, linked_at, str(e.originator_id), linked_at),
        )

    def _mgts_bill(self, tx: Transaction, e: Any) -> None:
        tx.execute(
            f"INSERT INTO {self.names.mgts_periods} (mgts_account, period, total_kopecks, dirty) "
            "VALUES (?, ?, ?, 1) ON CONFLICT (mgts_account, period) DO UPDATE SET total_kopecks = "
            f"{self.names.mgts_periods}.total_kopecks + excluded.total_kopecks, dirty = 1",
            (self._mgts_account(tx, e), e.period, kopecks(e.amount)),
        )

    def _mgts_settled(self, tx: Transaction, e: Any) -> None:
        tx.execute(
            f"UPDATE {self.names.mgts_periods} SET settled_points = ?, settled_for = ?, dirty = 0 "
            "WHERE mgts_account = ? AND period = ?",
            (e.points, e.msisdn, self._mgts_account(tx, e), e.period),
        )

    # -- rejections --------------------------------------------------------------

    def _rejected(self, tx: Transaction, e: Any) -> None:
        tx.execute(
            f"INSERT INTO {self.names.rejections} (rejection_id, topic, source_partition, source_offset, event_id, "
            "msisdn, reason, detail, original, received_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (str(e.originator_id), e.topic, e.partition, e.offset, e.event_id, e.msisdn, e.reason, e.detail,
             e.original, e.timestamp.isoformat()),
        )
