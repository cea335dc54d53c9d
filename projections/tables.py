"""The read-model tables. Every name takes a prefix, so `accrual audit` can
build a scratch copy beside the live one. Money is kept in kopecks (integers)
so that sums in SQL stay exact on SQLite as well as on PostgreSQL. Moments
that are compared in SQL (a transfer's `expires_at`) are ISO text in UTC, so
that text order is time order. A history row keeps its `occurred_at` as the
producer wrote it (any offset) and the same moment in UTC, `occurred_utc`,
which the personal account's history is sorted and filtered by.

`rejections` are the dead letters, `status` open until a redrive applies
one (`redriven`), `attempts` counting the delivery as the first; `redrives`
every redrive of one, and every refusal at a release after a redrive held
it (`redriven_by` NULL).

`books` and `closes` are the liability rollforward (projections/books.py):
the points each kind of movement moved in each period of the books, a
period being named by the as-of date of the tick that closed it (`open`
until one does), and the closes in log order. `cohorts` the flows of the
points of each month of lot dates (projections/cohorts.py)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

TABLES = (
    "members",
    "history",
    "lots",
    "held",
    "rejections",
    "redrives",
    "card_months",
    "mgts_accounts",
    "mgts_periods",
    "transfers",
    "debits",
    "books",
    "closes",
    "cohorts",
    "tracking",
)

_DDL = {
    "members": """
        CREATE TABLE IF NOT EXISTS {members} (
            account_id TEXT PRIMARY KEY,
            msisdn TEXT NOT NULL UNIQUE,
            enrolled_at TEXT,
            channel TEXT,
            balance BIGINT NOT NULL DEFAULT 0,
            uncollected BIGINT NOT NULL DEFAULT 0,
            version BIGINT NOT NULL,
            updated_at TEXT NOT NULL)""",
    "history": """
        CREATE TABLE IF NOT EXISTS {history} (
            msisdn TEXT NOT NULL,
            version BIGINT NOT NULL,
            kind TEXT NOT NULL,
            points BIGINT NOT NULL,
            rule TEXT,
            reason TEXT,
            source_event_id TEXT,
            lot_id BIGINT,
            lot_date TEXT,
            expires_on TEXT,
            occurred_at TEXT NOT NULL,
            detail TEXT NOT NULL,
            occurred_utc TEXT,
            PRIMARY KEY (msisdn, version))""",
    "lots": """
        CREATE TABLE IF NOT EXISTS {lots} (
            msisdn TEXT NOT NULL,
            lot_id BIGINT NOT NULL,
            rule TEXT NOT NULL,
            lot_date TEXT NOT NULL,
            expires_on TEXT NOT NULL,
            points BIGINT NOT NULL,
            remaining BIGINT NOT NULL,
            PRIMARY KEY (msisdn, lot_id))""",
    "held": """
        CREATE TABLE IF NOT EXISTS {held} (
            msisdn TEXT NOT NULL,
            topic TEXT NOT NULL,
            source_event_id TEXT NOT NULL,
            occurred_at TEXT NOT NULL,
            message TEXT NOT NULL,
            PRIMARY KEY (msisdn, topic, source_event_id))""",
    "rejections": """
        CREATE TABLE IF NOT EXISTS {rejections} (
            rejection_id TEXT PRIMARY KEY,
            topic TEXT NOT NULL,
            source_partition BIGINT,
            source_offset BIGINT,
            event_id TEXT,
            msisdn TEXT,
            reason TEXT NOT NULL,
            detail TEXT NOT NULL,
            original TEXT NOT NULL,
            received_at TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'open',
            attempts BIGINT NOT NULL DEFAULT 1,
            last_outcome TEXT,
            last_at TEXT,
            last_by TEXT,
            source_key TEXT,
            received_utc TEXT)""",
    "redrives": """
        CREATE TABLE IF NOT EXISTS {redrives} (
            rejection_id TEXT NOT NULL,
            attempt BIGINT NOT NULL,
            redriven_by TEXT,
            attempted_at TEXT NOT NULL,
            outcome TEXT NOT NULL,
            reason TEXT,
            detail TEXT,
            PRIMARY KEY (rejection_id, attempt))""",
    "card_months": """
        CREATE TABLE IF NOT EXISTS {card_months} (
            msisdn TEXT NOT NULL,
            month TEXT NOT NULL,
            net_kopecks BIGINT NOT NULL DEFAULT 0,
            settled_points BIGINT,
            dirty INTEGER NOT NULL,
            PRIMARY KEY (msisdn, month))""",
    "mgts_accounts": """
        CREATE TABLE IF NOT EXISTS {mgts_accounts} (
            account_id TEXT PRIMARY KEY,
            mgts_account TEXT NOT NULL UNIQUE,
            msisdn TEXT,
            linked_at TEXT)""",
    "mgts_periods": """
        CREATE TABLE IF NOT EXISTS {mgts_periods} (
            mgts_account TEXT NOT NULL,
            period TEXT NOT NULL,
            total_kopecks BIGINT NOT NULL DEFAULT 0,
            settled_points BIGINT,
            settled_for TEXT,
            dirty INTEGER NOT NULL,
            PRIMARY KEY (mgts_account, period))""",
    "transfers": """
        CREATE TABLE IF NOT EXISTS {transfers} (
            transfer_id TEXT PRIMARY KEY,
            sender TEXT NOT NULL,
            recipient TEXT NOT NULL,
            points BIGINT NOT NULL,
            status TEXT NOT NULL,
            offered_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            settled_at TEXT)""",
    "debits": """
        CREATE TABLE IF NOT EXISTS {debits} (
            debit_id TEXT PRIMARY KEY,
            msisdn TEXT NOT NULL,
            purpose TEXT NOT NULL,
            points BIGINT NOT NULL,
            status TEXT NOT NULL,
            reference TEXT NOT NULL,
            created_at TEXT NOT NULL)""",
    "books": """
        CREATE TABLE IF NOT EXISTS {books} (
            period TEXT NOT NULL,
            measure TEXT NOT NULL,
            detail TEXT NOT NULL,
            points BIGINT NOT NULL,
            PRIMARY KEY (period, measure, detail))""",
    "closes": """
        CREATE TABLE IF NOT EXISTS {closes} (
            seq BIGINT PRIMARY KEY,
            as_of TEXT NOT NULL UNIQUE)""",
    "cohorts": """
        CREATE TABLE IF NOT EXISTS {cohorts} (
            cohort TEXT NOT NULL,
            flow TEXT NOT NULL,
            points BIGINT NOT NULL,
            PRIMARY KEY (cohort, flow))""",
    "tracking": """
        CREATE TABLE IF NOT EXISTS {tracking} (
            name TEXT PRIMARY KEY,
            position BIGINT NOT NULL)""",
}

_INDEXES = (
    "CREATE INDEX IF NOT EXISTS {history}_by_moment ON {history} (msisdn, occurred_utc, version)",
    "CREATE INDEX IF NOT EXISTS {lots}_expiring ON {lots} (expires_on) WHERE remaining > 0",
    "CREATE INDEX IF NOT EXISTS {card_months}_dirty ON {card_months} (month) WHERE dirty = 1",
    "CREATE INDEX IF NOT EXISTS {mgts_periods}_dirty ON {mgts_periods} (period) WHERE dirty = 1",
    "CREATE INDEX IF NOT EXISTS {rejections}_reason ON {rejections} (reason)",
    "CREATE INDEX IF NOT EXISTS {rejections}_received ON {rejections} (received_utc)",
    "CREATE INDEX IF NOT EXISTS {transfers}_due ON {transfers} (expires_at) WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS {transfers}_sender ON {transfers} (sender)",
    "CREATE INDEX IF NOT EXISTS {transfers}_recipient ON {transfers} (recipient)",
    "CREATE INDEX IF NOT EXISTS {debits}_msisdn ON {debits} (msisdn, created_at)",
)


def utc_text(moment: datetime) -> str:
    """A moment as ISO text in UTC, always with microseconds: text order is time order."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def occurred_utc(occurred_at: str) -> str:
    """A history row's `occurred_utc`: its `occurred_at` (ISO text with the
    producer's offset) as `utc_text`. The projector writes it with this
    function, and so does the upgrade of an older store (`projections.upgrade`)."""
    return utc_text(datetime.fromisoformat(occurred_at))


# How each table is ordered when audit compares a live copy with a rebuilt one.
ORDER_BY = {
    "members": "msisdn",
    "history": "msisdn, version",
    "lots": "msisdn, lot_id",
    "held": "msisdn, topic, source_event_id",
    "rejections": "rejection_id",
    "redrives": "rejection_id, attempt",
    "card_months": "msisdn, month",
    "mgts_accounts": "mgts_account",
    "mgts_periods": "mgts_account, period",
    "transfers": "transfer_id",
    "debits": "debit_id",
    "books": "period, measure, detail",
    "closes": "seq",
    "cohorts": "cohort, flow",
}


@dataclass(frozen=True)
class Names:
    """Table names with a prefix: "" for the live read models."""

    prefix: str = ""

    def __getattr__(self, table: str) -> str:
        if table in TABLES:
            return f"{self.prefix}rm_{table}"
        raise AttributeError(table)

    def mapping(self) -> dict[str, str]:
        return {table: getattr(self, table) for table in TABLES}

    def create_statements(self, indexes: bool = True) -> list[str]:
        names = self.mapping()
        return [_DDL[t].format(**names) for t in TABLES] + (self.index_statements() if indexes else [])

    def index_statements(self) -> list[str]:
        """The secondary indexes (a rebuild creates them after the load)."""
        names = self.mapping()
        return [i.format(**names) for i in _INDEXES]

    def drop_statements(self) -> list[str]:
        return [f"DROP TABLE IF EXISTS {getattr(self, t)}" for t in TABLES]
