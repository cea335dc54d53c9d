"""What the loyalty team's console does, over the engine and the read models:
look a member up, ask for an adjustment and decide it with a second pair of
eyes, and keep the record of every staff action (docs/console.md).

The routes (web.api_ops, web.pages_ops) check the role and turn requests
into calls here; no rule lives in them. An adjustment's request, approval
and outcome are access-control state of the console (`ops_adjustments`);
only its application is a programme event, `PointsAdjusted`, recorded on the
member's account by `AccrualApplication.adjust`, which is idempotent on the
adjustment's id: whoever applies it, however often, it applies once.
"""
from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

from accrual.runtime import Runtime
from engine.calendar import midnight, shift_month
from engine.errors import RuleRefusal
from projections import dead_letters
from web.clock import Clock
from web.service import Cabinet
from web.staff import StaffSession
from web.store import WebStore, stamp

PENDING, APPROVED, APPLIED, REJECTED, REFUSED = "pending_approval", "approved", "applied", "rejected", "refused"
STATUSES = (PENDING, APPROVED, APPLIED, REJECTED, REFUSED)
REASON_LENGTH = (10, 500)
SEARCH_MAX = 50
AUDIT_PAGE_MAX = 200
_ADJUSTMENT_IDS = uuid.UUID("5b0f9a52-6c1e-4d8e-9a57-2f0c1f3de0a4")  # namespace of adjustment ids


class ConsoleRefusal(Exception):
    """A console request that cannot be done; `reason` is machine-readable."""

    def __init__(self, status: int, reason: str, detail: str):
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


@dataclass(frozen=True)
class Adjustment:
    adjustment_id: str
    msisdn: str
    points: int
    reason: str
    requested_by: str
    requested_at: str
    status: str
    decided_by: str | None
    decided_at: str | None
    refusal: str | None
    balance_after: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_ADJUSTMENT_COLUMNS = ("adjustment_id, msisdn, points, reason, requested_by, requested_at, status, decided_by, "
                       "decided_at, refusal, balance_after")


@dataclass(frozen=True)
class AuditEntry:
    audit_id: str
    at: str
    login: str
    role: str
    address: str
    action: str
    target: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class AuditLog:
    """Who did what, when, from where: appended by the application, never
    changed (the table refuses UPDATE and DELETE, web.store)."""

    def __init__(self, store: WebStore, clock: Clock):
        self.store = store
        self.clock = clock

    def record(self, login: str, role: str, address: str, action: str, target: str = "",
               detail: dict[str, Any] | None = None) -> None:
        self.store.execute(
            "INSERT INTO ops_audit (audit_id, at, login, role, address, action, target, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (secrets.token_hex(12), stamp(self.clock.now()), printable(login[:64]), role, printable(address[:64]),
             action, printable(target[:200]),
             json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, default=str)),
        )

    def entries(self, *, login: str | None = None, action: str | None = None, since: date | None = None,
                until: date | None = None, limit: int = 100, offset: int = 0) -> tuple[list[AuditEntry], int]:
        """Newest first, filtered by who, what and Moscow dates (both ends included)."""
        where, params = ["1 = 1"], []
        if login:
            where.append("login = ?")
            params.append(login)
        if action:
            where.append("action = ?")
            params.append(action)
        if since:
            where.append("at >= ?")
            params.append(stamp(midnight(since)))
        if until:
            where.append("at < ?")
            params.append(stamp(midnight(until + timedelta(days=1))))
        clause = " AND ".join(where)
        total = int(self.store.query(f"SELECT COUNT(*) FROM ops_audit WHERE {clause}", tuple(params))[0][0])
        rows = self.store.query(
            f"SELECT audit_id, at, login, role, address, action, target, detail FROM ops_audit WHERE {clause} "
            "ORDER BY at DESC, audit_id LIMIT ? OFFSET ?",
            (*params, max(1, min(limit, AUDIT_PAGE_MAX)), max(0, offset)),
        )
        return [AuditEntry(*row[:7], json.loads(row[7])) for row in rows], total


def printable(text: str) -> str:
    """What a person typed, as the log keeps it: control characters (a NUL
    byte, which PostgreSQL's text refuses) shown as U+FFFD."""
    return "".join(c if c.isprintable() else "\ufffd" for c in text)


def adjustment_id_of(login: str, idempotency_key: str) -> str:
    """One request of one person, one id, however often it is sent."""
    return str(uuid.uuid5(_ADJUSTMENT_IDS, f"{login}\x1f{idempotency_key}"))


class Console:
    def __init__(self, runtime: Runtime, cabinet: Cabinet, store: WebStore, clock: Clock, approval_above: int):
        self.runtime = runtime
        self.app = runtime.app
        self.cabinet = cabinet
        self.store = store
        self.clock = clock
        self.approval_above = approval_above
        self.audit = AuditLog(store, clock)

    # -- members ------------------------------------------------------------------------------

    def search(self, prefix: str) -> list[dict[str, Any]]:
        """Members whose number starts with `prefix` (ASCII digits, checked
        by the caller), at most 50, in number order."""
        assert prefix.isascii() and prefix.isdigit() and len(prefix) <= 11

        def query(reads):
            rows = reads.db.query(
                f"SELECT msisdn, enrolled_at, balance FROM {reads.names.members} WHERE msisdn LIKE ? "
                "ORDER BY msisdn LIMIT ?",
                (prefix + "%", SEARCH_MAX),
            )
            return [{"msisdn": m, "enrolled": bool(e), "enrolled_at": e, "balance": int(b)} for m, e, b in rows]

        return self.cabinet._read(query)

    def member(self, msisdn: str) -> dict[str, Any] | None:
        """Everything the team needs to see why a balance is what it is;
        None for a number the engine has never heard of."""
        account = self.cabinet.account(msisdn)
        stored = self.cabinet._app(lambda: self.app.member(msisdn))
        if stored is None and not account["enrolled"]:
            return None
        rules = self.app.rules

        def others(reads):
            return reads.debits_of(msisdn), reads.transfers_of(msisdn)

        debits, transfers = self.cabinet._read(others)
        card_months = []
        if stored is not None:
            for month in sorted(stored.card_months, reverse=True):
                entry = stored.card_months[month]
                card_months.append({
                    "month": month, "spend": str(entry.spend), "net": str(entry.net), "points": entry.settled,
                    "previous_month_spend": str(stored.card_spend(shift_month(month, -1))),
                    "rubles_per_point": str(rules.card_rubles_per_point(stored.card_spend(shift_month(month, -1)))),
                })
        return {
            **account,
            "channel": stored.channel if stored else None,
            "uncollected": stored.uncollected if stored else 0,
            "held": [{"topic": h.topic, "event_id": h.message.get("event_id"), "type": h.message.get("type"),
                      "occurred_at": str(h.message.get("occurred_at", ""))} for h in (stored.held if stored else [])],
            "card_months": card_months,
            "orders": [d for d in debits if d["purpose"] == "order"],
            "shop_debits": [d for d in debits if d["purpose"] == "pos"],
            "transfers": transfers,
        }

    def history(self, msisdn: str, kinds: list[str], since: date | None, until: date | None, page: int,
                per_page: int) -> dict[str, Any]:
        """The member's history with each line's log position (the
        notification id of its event: where an auditor finds it)."""
        result = self.cabinet.history(msisdn, kinds, since, until, page, per_page, staff=True)
        versions = [entry["version"] for entry in result["items"]]
        positions = self._positions(msisdn, versions)
        for entry in result["items"]:
            entry["log_position"] = positions.get(entry["version"])
        return result

    def _positions(self, msisdn: str, versions: list[int]) -> dict[int, int]:
        if not versions:
            return {}
        from engine.ids import member_id

        table = self.app.recorder.events_table_name
        marks = ", ".join("?" * len(versions))

        def query(reads):
            # The log position: the notification id on PostgreSQL, the rowid on SQLite.
            position = "notification_id" if reads.db.is_postgres else "rowid"
            return reads.db.query(
                f"SELECT originator_version, {position} FROM {table} WHERE originator_id = ? "
                f"AND originator_version IN ({marks})",
                (_stored_id(member_id(msisdn), reads.db), *versions),
            )

        return {int(v): int(n) for v, n in self.cabinet._read(query)}

    # -- adjustments --------------------------------------------------------------------------

    def request_adjustment(self, session: StaffSession, msisdn: str, points: int, reason: str,
                           idempotency_key: str) -> tuple[Adjustment, bool]:
        """A new adjustment, or the one this person already asked for with
        this key (True: a repeat). Small ones are applied at once; the others
        wait for a supervisor other than the requester."""
        reason = reason.strip()
        if not REASON_LENGTH[0] <= len(reason) <= REASON_LENGTH[1]:
            raise ConsoleRefusal(422, "invalid_reason", "a reason has 10 to 500 characters")
        if not all(c.isprintable() or c in "\n\t" for c in reason):
            raise ConsoleRefusal(422, "invalid_reason", "a reason is text: no control characters")
        if points == 0:
            raise ConsoleRefusal(422, "invalid_points", "an adjustment adds or takes at least one point")
        adjustment_id = adjustment_id_of(session.login, idempotency_key)
        now = stamp(self.clock.now())
        immediate = abs(points) <= self.approval_above
        with self.store.transaction() as tx:
            rows = tx.query(f"SELECT {_ADJUSTMENT_COLUMNS} FROM ops_adjustments WHERE adjustment_id = ?",
                            (adjustment_id,))
            if rows:
                existing = Adjustment(*rows[0])
                if (existing.msisdn, existing.points, existing.reason) != (msisdn, points, reason):
                    raise ConsoleRefusal(409, "idempotency_conflict",
                                         "this idempotency key was used for another adjustment")
            else:
                if not self._is_member(msisdn):
                    raise ConsoleRefusal(409, "not_enrolled", f"{msisdn} is not an enrolled member")
                tx.execute(
                    "INSERT INTO ops_adjustments (adjustment_id, msisdn, points, reason, requested_by, "
                    "idempotency_key, requested_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (adjustment_id, msisdn, points, reason, session.login, idempotency_key, now,
                     APPROVED if immediate else PENDING),
                )
        adjustment = self.adjustment(adjustment_id)
        assert adjustment is not None
        if adjustment.status == APPROVED:  # new and small, or a repeat of one a crash left unapplied
            adjustment = self._apply(adjustment)
        return adjustment, bool(rows)

    def _is_member(self, msisdn: str) -> bool:
        return bool(self.cabinet._read(lambda reads: (reads.member(msisdn) or {}).get("enrolled_at")))

    def decide(self, session: StaffSession, adjustment_id: str, approve: bool) -> Adjustment:
        """Approves (and applies) or rejects a pending adjustment. Only one
        decision wins: the status changes from pending in one conditional
        update, and the others are told it was decided. The requester may
        not decide its own request."""
        adjustment = self.adjustment(adjustment_id)
        if adjustment is None:
            raise ConsoleRefusal(404, "unknown_adjustment", "no such adjustment")
        if adjustment.requested_by == session.login:
            raise ConsoleRefusal(403, "own_request", "an adjustment is decided by a supervisor other than its requester")
        if adjustment.status == APPROVED:
            # Approved by someone, and being applied now, or interrupted
            # before it applied: applying is idempotent, so it is finished
            # here either way; the decision itself was someone else's.
            adjustment = self._apply(adjustment)
        if adjustment.status != PENDING:
            raise ConsoleRefusal(409, "adjustment_decided", f"this adjustment is {adjustment.status} already")
        now = stamp(self.clock.now())
        with self.store.transaction() as tx:
            tx.execute(
                "UPDATE ops_adjustments SET status = ?, decided_by = ?, decided_at = ? "
                "WHERE adjustment_id = ? AND status = ?",
                (APPROVED if approve else REJECTED, session.login, now, adjustment_id, PENDING),
            )
            won = tx.cursor.rowcount == 1
        if not won:
            raise ConsoleRefusal(409, "adjustment_decided", "another supervisor decided this adjustment first")
        decided = self.adjustment(adjustment_id)
        assert decided is not None
        return self._apply(decided) if approve else decided

    def _apply(self, adjustment: Adjustment) -> Adjustment:
        """Records `PointsAdjusted` (once, whatever happens around it) and
        the outcome on the request."""
        try:
            adjusted = self.cabinet._command(lambda: self.app.adjust(
                adjustment.msisdn, adjustment.points, adjustment_id=adjustment.adjustment_id,
                reason=adjustment.reason, requested_by=adjustment.requested_by, approved_by=adjustment.decided_by,
                at=datetime.fromisoformat(adjustment.decided_at or adjustment.requested_at),
            ))
        except RuleRefusal as refusal:
            self.store.execute("UPDATE ops_adjustments SET status = ?, refusal = ? WHERE adjustment_id = ? "
                               "AND status = ?", (REFUSED, refusal.reason, adjustment.adjustment_id, APPROVED))
        else:
            self.store.execute("UPDATE ops_adjustments SET status = ?, balance_after = ? WHERE adjustment_id = ? "
                               "AND status = ?",
                               (APPLIED, adjusted.balance_after, adjustment.adjustment_id, APPROVED))
        done = self.adjustment(adjustment.adjustment_id)
        assert done is not None
        return done

    def adjustment(self, adjustment_id: str) -> Adjustment | None:
        rows = self.store.query(f"SELECT {_ADJUSTMENT_COLUMNS} FROM ops_adjustments WHERE adjustment_id = ?",
                                (adjustment_id,))
        return Adjustment(*rows[0]) if rows else None

    def adjustments(self, status: str | None = None, msisdn: str | None = None, limit: int = 100,
                    offset: int = 0) -> tuple[list[Adjustment], int]:
        where, params = ["1 = 1"], []
        if status:
            where.append("status = ?")
            params.append(status)
        if msisdn:
            where.append("msisdn = ?")
            params.append(msisdn)
        clause = " AND ".join(where)
        total = int(self.store.query(f"SELECT COUNT(*) FROM ops_adjustments WHERE {clause}", tuple(params))[0][0])
        rows = self.store.query(
            f"SELECT {_ADJUSTMENT_COLUMNS} FROM ops_adjustments WHERE {clause} "
            "ORDER BY requested_at DESC, adjustment_id LIMIT ? OFFSET ?",
            (*params, max(1, min(limit, 200)), max(0, offset)),
        )
        return [Adjustment(*row) for row in rows], total


class DeadLetters:
    """Rejected feed messages for the console: listed and counted from the
    read models, redriven through the engine (`AccrualApplication.redrive`:
    the original bytes again, under their own key; a message rejected again
    stays a dead letter with both attempts; one that applied cannot be
    redriven again). Redrives are commands of this process, one at a time,
    like the members' (web.service.Cabinet)."""

    def __init__(self, cabinet: Cabinet, clock: Clock):
        self.cabinet = cabinet
        self.app = cabinet.app
        self.clock = clock

    def page(self, *, reason: str | None, topic: str | None, since: date | None, until: date | None,
             status: str | None, limit: int, offset: int) -> dict[str, Any]:
        def query(reads):
            found = dead_letters.dead_letters(reads.db, reads.names, reason=reason, topic=topic, since=since,
                                              until=until, status=status, limit=limit, offset=offset)
            counted = dead_letters.counts(reads.db, reads.names, since, until)
            return found, counted

        found, counted = self.cabinet._read(query)
        return {"items": [asdict(d) for d in found.dead_letters], "total": found.total, **counted.as_dict()}

    def one(self, rejection_id: str) -> dict[str, Any] | None:
        found = self.cabinet._read(lambda reads: dead_letters.dead_letter(reads.db, reads.names, rejection_id))
        return asdict(found) if found is not None else None

    def redrive(self, session: StaffSession, rejection_id: str) -> dict[str, Any]:
        """Raises the engine's refusal (`unknown_dead_letter`, `already_redriven`)."""
        result = self.cabinet._command(lambda: self.app.redrive(rejection_id, by=session.login, at=self.clock.now()))
        return asdict(result)


def _stored_id(aggregate_id: uuid.UUID, db: Any) -> Any:
    """An originator id as the event store keeps it: a uuid on PostgreSQL,
    its hex text on SQLite (eventsourcing's SQLite recorder)."""
    return aggregate_id if db.is_postgres else aggregate_id.hex
