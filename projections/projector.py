"""The projector follows the application's notification log and writes the
read models. Each batch of notifications is written together with the
position reached, in one transaction, so it can stop anywhere and resume."""
from __future__ import annotations

import json
from collections import OrderedDict
from decimal import Decimal
from typing import Any, Callable

from engine.account import MemberAccount
from engine.calendar import shift_month
from engine.mgts import MgtsAccount
from engine.rejection import Rejection
from projections.db import Database, Transaction
from projections.tables import Names

BATCH_SIZE = 2000
_ID_CACHE_MAX = 200_000


def kopecks(amount: Decimal) -> int:
    return int(amount * 100)


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Projector:
    name = "read_models"

    def __init__(self, app: Any, db: Database, names: Names | None = None):
        self.app = app
        self.db = db
        self.names = names or Names()
        self._msisdns: OrderedDict[str, str] = OrderedDict()
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

    def drop_tables(self) -> None:
        with self.db.transaction() as tx:
            for statement in self.names.drop_statements():
                tx.execute(statement)
        self._msisdns.clear()

    def position(self) -> int:
        rows = self.db.query(f"SELECT position FROM {self.names.tracking} WHERE name = ?", (self.name,))
        return rows[0][0] if rows else 0

    def catch_up(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Applies every notification after the recorded position; returns how
        many were applied. `progress(done, total)` is called per batch."""
        position = self.position()
        last = self.app.recorder.max_notification_id() or 0
        done = 0
        while position < last:
            notifications = self.app.recorder.select_notifications(
                start=position, limit=BATCH_SIZE, inclusive_of_start=False
            )
            if not notifications:
                break
            with self.db.transaction() as tx:
                for notification in notifications:
                    self._apply(tx, notification)
                position = notifications[-1].id
                tx.execute(
                    f"INSERT INTO {self.names.tracking} (name, position) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                    (self.name, position),
                )
            done += len(notifications)
            if progress is not None:
                progress(done, last)
        return done

    def _apply(self, tx: Transaction, notification: Any) -> None:
        event = self.app.mapper.to_domain_event(notification)
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(tx, event)

    # -- member accounts -------------------------------------------------------

    def _msisdn(self, tx: Transaction, account_id: Any) -> str:
        key = str(account_id)
        msisdn = self._msisdns.get(key)
        if msisdn is None:
            rows = tx.query(f"SELECT msisdn FROM {self.names.members} WHERE account_id = ?", (key,))
            msisdn = rows[0][0]
            self._remember(key, msisdn)
        return msisdn

    def _remember(self, key: str, msisdn: str) -> None:
        self._msisdns[key] = msisdn
        if len(self._msisdns) > _ID_CACHE_MAX:
            self._msisdns.popitem(last=False)

    def _opened(self, tx: Transaction, e: Any) -> None:
        tx.execute(
            f"INSERT INTO {self.names.members} (account_id, msisdn, version, updated_at) VALUES (?, ?, ?, ?)",
            (str(e.originator_id), e.msisdn, e.originator_version, e.timestamp.isoformat()),
        )
        self._remember(str(e.originator_id), e.msisdn)

    def _touch(self, tx: Transaction, e: Any, points: int = 0, uncollected: int = 0) -> str:
        msisdn = self._msisdn(tx, e.originator_id)
        tx.execute(
            f"UPDATE {self.names.members} SET balance = balance + ?, uncollected = uncollected + ?, "
            "version = ?, updated_at = ? WHERE account_id = ?",
            (points, uncollected, e.originator_version, e.timestamp.isoformat(), str(e.originator_id)),
        )
        return msisdn

    def _history(self, tx: Transaction, msisdn: str, e: Any, kind: str, points: int, **fields: Any) -> None:
        tx.execute(
            f"INSERT INTO {self.names.history} (msisdn, version, kind, points, rule, reason, source_event_id, "
            "lot_id, lot_date, expires_on, occurred_at, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                msisdn,
                e.originator_version,
                kind,
                points,
                fields.get("rule"),
                fields.get("reason"),
                fields.get("source_event_id"),
                fields.get("lot_id"),
                fields.get("lot_date"),
                fields.get("expires_on"),
                e.timestamp.isoformat(),
                _json(fields.get("detail", {})),
            ),
        )

    def _enrolled(self, tx: Transaction, e: Any) -> None:
        msisdn = self._touch(tx, e)
        tx.execute(
            f"UPDATE {self.names.members} SET enrolled_at = ?, channel = ? WHERE account_id = ?",
            (e.enrolled_at.isoformat(), e.channel, str(e.originator_id)),
        )
        tx.execute(f"DELETE FROM {self.names.held} WHERE msisdn = ?", (msisdn,))
        self._history(tx, msisdn, e, "enrolled", 0, source_event_id=e.source_event_id,
                      detail={"channel": e.channel, "released": e.released})

    def _held(self, tx: Transaction, e: Any) -> None:
        msisdn = self._touch(tx, e)
        tx.execute(
            f"INSERT INTO {self.names.held} (msisdn, topic, source_event_id, occurred_at, message) "
            "VALUES (?, ?, ?, ?, ?)",
            (msisdn, e.topic, e.source_event_id, e.timestamp.isoformat(), _json(e.message)),
        )

    def _not_eligible(self, tx: Transaction, e: Any) -> None:
        msisdn = self._touch(tx, e)
        self._history(tx, msisdn, e, "not_eligible", 0, reason=e.reason, source_event_id=e.source_event_id,
                      detail={"type": e.kind})

    def _accrued(self, tx: Transaction, e: Any) -> None:
        msisdn = self._touch(tx, e, points=e.points)
        tx.execute(
            f"INSERT INTO {self.names.lots} (msisdn, lot_id, rule, lot_date, expires_on, points, remaining) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (msisdn, e.lot_id, e.rule, e.lot_date, e.expires_on, e.points, e.points),
        )
        self._history(tx, msisdn, e, "accrued", e.points, rule=e.rule, source_event_id=e.source_event_id,
                      lot_id=e.lot_id, lot_date=e.lot_date, expires_on=e.expires_on, detail=e.basis)

    def _debited(self, tx: Transaction, e: Any) -> None:
        clawback = isinstance(e, MemberAccount.PointsClawedBack)
        uncollected = e.uncollected if clawback else 0
        msisdn = self._touch(tx, e, points=-e.points, uncollected=uncollected)
        tx.executemany(
            f"UPDATE {self.names.lots} SET remaining = remaining - ? WHERE msisdn = ? AND lot_id = ?",
            [(points, msisdn, lot_id) for lot_id, points in e.allocations],
        )
        if clawback:
            self._history(tx, msisdn, e, "clawed_back", -e.points, reason=e.reason,
                          source_event_id=e.source_event_id,
                          detail={**e.basis, "points_due": e.points_due, "uncollected": e.uncollected,
                                  "lots": e.allocations})
        else:
            self._history(tx, msisdn, e, "expired", -e.points, reason="expiry",
                          detail={"as_of": e.as_of, "lots": e.allocations})

    # -- card months and MGTS periods: the tick's agenda ----------------------

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
        following = shift_month(e.month, 1)
        tx.execute(
            f"UPDATE {self.names.card_months} SET dirty = 1 "
            "WHERE msisdn = ? AND month = ? AND settled_points IS NOT NULL",
            (msisdn, following),
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

    def _mgts_account(self, tx: Transaction, e: Any) -> str:
        rows = tx.query(
            f"SELECT mgts_account FROM {self.names.mgts_accounts} WHERE account_id = ?", (str(e.originator_id),)
        )
        return rows[0][0]

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

