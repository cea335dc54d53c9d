"""The dead letters as the back-office console and `accrual dead-letters`
read them: rejected inbound messages with their original bytes, their
redrives, and counts by reason and by Moscow day.

Each function takes a read-only connection (`.query(sql, params)` with `?`
placeholders, as `projections.db.Database`) and the table `Names`. Days are
Moscow days (`since` and `until` both included), compared in SQL on
`received_utc`, the moment in UTC as text, whose text order is time order.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple, Sequence

from engine.calendar import midnight, moscow_date
from projections.tables import Names, utc_text

LIMIT_MAX = 500  # dead letters on one page
DELIVERY = 1  # attempt 1 is the delivery; redrives are 2, 3, ...

_COLUMNS = ("rejection_id, topic, source_partition, source_offset, source_key, event_id, msisdn, reason, detail, "
            "original, received_at, status")


@dataclass(frozen=True)
class Original:
    """The message's bytes as received: base64, and the text when they are UTF-8."""

    base64: str
    text: str | None


@dataclass(frozen=True)
class Attempt:
    number: int  # 1: the delivery
    at: str  # ISO text (the delivery's as received; redrives in UTC)
    by: str | None  # the login of who redrove it (None: the delivery, or a refusal at a release)
    outcome: str  # "rejected" | "applied"
    reason: str | None
    detail: str | None


@dataclass(frozen=True)
class DeadLetter:
    id: str
    topic: str
    partition: int | None
    offset: int | None
    key: str | None  # the Kafka record's key
    event_id: str | None
    msisdn: str | None
    reason: str  # of the delivery
    detail: str
    original: Original
    received_at: str
    status: str  # "open" | "redriven"
    attempts: tuple[Attempt, ...]


class Page(NamedTuple):
    dead_letters: list[DeadLetter]
    total: int  # of the filter, all pages


@dataclass(frozen=True)
class DayCount:
    day: str  # a Moscow date, ISO
    reason: str
    count: int


@dataclass(frozen=True)
class Counts:
    by_reason: dict[str, int]
    by_day: list[DayCount]

    def as_dict(self) -> dict[str, Any]:
        return {"by_reason": self.by_reason,
                "by_day": [{"day": d.day, "reason": d.reason, "count": d.count} for d in self.by_day]}


def dead_letters(
    db: Any, names: Names, *, reason: str | None = None, topic: str | None = None, since: date | None = None,
    until: date | None = None, status: str | None = None, limit: int = 50, offset: int = 0,
) -> Page:
    """The dead letters of the filter, the latest received first."""
    assert 0 < limit <= LIMIT_MAX and offset >= 0
    where, params = _where(reason=reason, topic=topic, since=since, until=until, status=status)
    total = db.query(f"SELECT COUNT(*) FROM {names.rejections}{where}", params)[0][0]
    rows = db.query(
        f"SELECT {_COLUMNS} FROM {names.rejections}{where} ORDER BY received_utc DESC, rejection_id LIMIT ? OFFSET ?",
        (*params, limit, offset),
    )
    redrives = _redrives(db, names, [row[0] for row in rows])
    return Page([_dead_letter(row, redrives.get(row[0], [])) for row in rows], int(total))


def dead_letter(db: Any, names: Names, rejection_id: str) -> DeadLetter | None:
    rows = db.query(f"SELECT {_COLUMNS} FROM {names.rejections} WHERE rejection_id = ?", (rejection_id,))
    if not rows:
        return None
    return _dead_letter(rows[0], _redrives(db, names, [rejection_id]).get(rejection_id, []))


def counts(db: Any, names: Names, since: date | None = None, until: date | None = None) -> Counts:
    """Dead letters received in [since, until] by reason, and by Moscow day
    and reason. SQL groups by the UTC hour (the same text on SQLite and
    PostgreSQL); the hours are folded into Moscow days here (Moscow is a
    whole number of hours from UTC, so an hour is in one Moscow day): at
    most 24 rows a day and reason cross the connection."""
    where, params = _where(since=since, until=until)
    rows = db.query(
        f"SELECT SUBSTR(received_utc, 1, 13), reason, COUNT(*) FROM {names.rejections}{where} "
        "GROUP BY SUBSTR(received_utc, 1, 13), reason",
        params,
    )
    by_reason: dict[str, int] = {}
    by_day: dict[tuple[str, str], int] = {}
    for hour, why, count in rows:
        day = moscow_date(datetime.fromisoformat(f"{hour}:00:00+00:00")).isoformat()
        by_reason[why] = by_reason.get(why, 0) + int(count)
        by_day[(day, why)] = by_day.get((day, why), 0) + int(count)
    return Counts(
        dict(sorted(by_reason.items())),
        [DayCount(day, why, count) for (day, why), count in sorted(by_day.items())],
    )


def _where(**filters: Any) -> tuple[str, tuple]:
    clauses, params = [], []
    for column in ("reason", "topic", "status"):
        if filters.get(column) is not None:
            clauses.append(f"{column} = ?")
            params.append(filters[column])
    if filters.get("since") is not None:
        clauses.append("received_utc >= ?")
        params.append(utc_text(midnight(filters["since"])))
    if filters.get("until") is not None:
        clauses.append("received_utc < ?")
        params.append(utc_text(midnight(filters["until"] + timedelta(days=1))))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _redrives(db: Any, names: Names, ids: Sequence[str]) -> dict[str, list[Attempt]]:
    found: dict[str, list[Attempt]] = {}
    if not ids:
        return found
    rows = db.query(
        f"SELECT rejection_id, attempt, attempted_at, redriven_by, outcome, reason, detail FROM {names.redrives} "
        f"WHERE rejection_id IN ({','.join('?' * len(ids))}) ORDER BY rejection_id, attempt",
        tuple(ids),
    )
    for rejection_id, *attempt in rows:
        found.setdefault(rejection_id, []).append(Attempt(int(attempt[0]), *attempt[1:]))
    return found


def _dead_letter(row: tuple, redrives: list[Attempt]) -> DeadLetter:
    (rejection_id, topic, partition, offset, key, event_id, msisdn, reason, detail, original, received_at,
     status) = row
    delivery = Attempt(DELIVERY, received_at, None, "rejected", reason, detail)
    return DeadLetter(
        rejection_id, topic, partition, offset, key, event_id, msisdn, reason, detail, _original(original),
        received_at, status, (delivery, *redrives),
    )


def _original(encoded: str) -> Original:
    try:
        text: str | None = base64.b64decode(encoded).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        text = None
    return Original(encoded, text)
