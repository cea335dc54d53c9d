"""The lots a points event changed, with their dates, for the outbound
message (issue 14: a subscriber keeps every member's lots by expiry date
without asking the engine).

An event's effect (`engine.effects`) names the lots it opens and returns to
with their dates, but a draw names only the lot id and the points. Spending,
a transfer sent and a debit adjustment carry their draws' dates in their
`portions`; an expiry and a clawback do not. So the publisher keeps the
dates of every lot it has published, per account, in `outbound_lots`,
written in the transaction that commits its position (as
`outbound_balances` is). It stays right:

- after a restart: a chunk published again writes the same rows again (a
  lot's id and dates never change, so the insert ignores a row it has);
- on a replay from position 0, with the table kept or dropped: the lots are
  opened again, in log order, before anything draws from them;
- on a store upgraded from a release without the table: a draw from a lot
  the table does not know (opened before the upgrade) is dated from the
  account as it stood just before the event (a lot points are taken from is
  in the balance then, with its dates), and that account's lots are all
  added to the table, so it happens once per account.

Why not the read model `rm_lots`: the projector writes it, behind or ahead
of the publisher, and it is dropped and rebuilt on its own; the publisher
answers from the log and its own tables only.
"""
from __future__ import annotations

from datetime import date
from typing import Any, Iterable

from engine.effects import Effect
from projections.db import Database, Transaction
from schemas import LotChange

TABLE = (
    "CREATE TABLE IF NOT EXISTS outbound_lots (account_id TEXT NOT NULL, lot_id BIGINT NOT NULL,"
    " lot_date TEXT NOT NULL, expires_on TEXT NOT NULL, PRIMARY KEY (account_id, lot_id))"
)
QUERY_PAIRS_MAX = 500  # (account, lot) keys per query, well under either store's limit on parameters

Dates = tuple[date, date]  # (lot_date, expires_on)


def lot_changes(effect: Effect, dates: dict[int, Dates]) -> tuple[LotChange, ...]:
    """The effect's lot changes, draws first, then returns, then new lots:
    the order `Effect.apply_to` applies them in. `dates`: lot id -> dates of
    every lot the effect draws from."""
    return (
        *(LotChange(lot_id=a.lot_id, lot_date=dates[a.lot_id][0], expires_on=dates[a.lot_id][1],
                    points=-a.points, change="taken") for a in effect.taken),
        *(LotChange(lot_id=p.lot_id, lot_date=p.lot_date, expires_on=p.expires_on, points=p.points,
                    change="returned") for p in effect.returned),
        *(LotChange(lot_id=lot.lot_id, lot_date=lot.lot_date, expires_on=lot.expires_on, points=lot.remaining,
                    change="opened") for lot in effect.opened),
    )


def _dated_by_itself(event: Any, effect: Effect) -> dict[int, Dates]:
    """Lot id -> dates of the lots the event itself dates: those it opens or
    returns to, and, for a debit that keeps its draws as portions, those."""
    dates = {lot.lot_id: (lot.lot_date, lot.expires_on) for lot in effect.opened}
    dates.update((p.lot_id, (p.lot_date, p.expires_on)) for p in effect.returned)
    if effect.taken:  # (a received transfer's portions are its new lots, already among `opened`)
        dates.update((p.lot_id, (p.lot_date, p.expires_on)) for p in getattr(event, "portions", ()))
    return dates


class LotDates:
    """The lot dates one chunk of the log needs, then the rows it adds."""

    def __init__(self, db: Database, repository: Any):
        self.db = db
        self.repository = repository
        self.known: dict[tuple[str, int], Dates] = {}
        self.added: dict[tuple[str, int], Dates] = {}  # to insert at the commit

    def load(self, events: Iterable[tuple[Any, Effect]]) -> None:
        """Reads the dates of the lots the (event, effect)s draw from without
        dating them (an expiry, a clawback), in a few queries."""
        keys: set[tuple[str, int]] = set()
        for event, effect in events:
            if effect.taken:
                dated = _dated_by_itself(event, effect)
                keys.update((str(event.originator_id), a.lot_id) for a in effect.taken if a.lot_id not in dated)
        wanted = sorted(keys)
        for start in range(0, len(wanted), QUERY_PAIRS_MAX):
            part = wanted[start:start + QUERY_PAIRS_MAX]
            accounts = sorted({account for account, _ in part})
            lots = sorted({lot_id for _, lot_id in part})
            for account, lot_id, lot_date, expires_on in self.db.query(
                "SELECT account_id, lot_id, lot_date, expires_on FROM outbound_lots "
                f"WHERE account_id IN ({','.join('?' * len(accounts))}) AND lot_id IN ({','.join('?' * len(lots))})",
                [*accounts, *lots],
            ):
                self.known[(account, int(lot_id))] = (date.fromisoformat(lot_date), date.fromisoformat(expires_on))

    def changes(self, event: Any, effect: Effect) -> tuple[LotChange, ...]:
        """The lots a member-account event (of that effect) changed, with
        their dates; learns the lots it opens."""
        if not (effect.taken or effect.returned or effect.opened):
            return ()
        account = str(event.originator_id)
        dates = _dated_by_itself(event, effect)
        for lot in effect.opened:
            self._add(account, lot.lot_id, (lot.lot_date, lot.expires_on))
        undated = [a.lot_id for a in effect.taken if a.lot_id not in dates]
        if any((account, lot_id) not in self.known for lot_id in undated):
            self._learn_from_the_account(event)
        dates.update((lot_id, self.known[(account, lot_id)]) for lot_id in undated)
        return lot_changes(effect, dates)

    def write(self, tx: Transaction) -> None:
        tx.executemany(
            "INSERT INTO outbound_lots (account_id, lot_id, lot_date, expires_on) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (account_id, lot_id) DO NOTHING",
            [(account, lot_id, d.isoformat(), e.isoformat()) for (account, lot_id), (d, e) in self.added.items()],
        )

    def _add(self, account: str, lot_id: int, dates: Dates) -> None:
        self.known[(account, lot_id)] = self.added[(account, lot_id)] = dates

    def _learn_from_the_account(self, event: Any) -> None:
        """A lot opened before the publisher kept lot dates (a store upgraded
        from an earlier release): the account just before the event holds
        every lot the event draws from."""
        account = self.repository.get(event.originator_id, version=event.originator_version - 1)
        for lot in account.lots:
            self._add(str(event.originator_id), lot.lot_id, (lot.lot_date, lot.expires_on))
