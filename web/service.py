"""What a member and a shop till can do, over the engine and its read models.

Commands go to `AccrualApplication` (the same event log as the streams), one
at a time in this process; each waits, bounded, until the read models show
the log position it reached, so a page shown after an order already has the
new balance. Reads never write: they query the read models on a read-only
connection of their own thread, with no lock and no catching up; the read
models follow the log in a thread of their own (web/reads.py).
"""
from __future__ import annotations

import threading
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool

from accrual.runtime import Runtime
from engine.calendar import MOSCOW
from web.catalog import CATEGORIES, Offer, Reward
from web.clock import Clock
from web.reads import LogFollower, ReadConnections

HISTORY_PAGE_MAX = 100
MEMBER_ADJUSTMENT_DETAIL = ("adjustment_id", "lots")  # the rest of an adjustment's detail is the staff's


class UnknownReward(LookupError):
    pass


class NotFound(LookupError):
    """No such resource for this member or shop (also: it is someone else's)."""


def as_dict(value: Any) -> dict[str, Any]:
    if is_dataclass(value):
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(value).items()}
    return dict(value)


class Cabinet:
    def __init__(self, runtime: Runtime, clock: Clock, catalog: dict[str, Reward], offers: list[Offer]):
        self.runtime = runtime
        self.app = runtime.app
        self.clock = clock
        self.catalog = catalog
        self.offers = offers
        self._lock = threading.RLock()  # the event store's application: one command at a time here
        self.runtime.app.on_saved = None  # the follower reads what commands saved from the log
        self.follower = LogFollower(runtime.app, runtime.settings.database).start()
        self.connections = ReadConnections(runtime.settings.database)

    def close(self) -> None:
        self.follower.close()
        self.connections.close()

    def _command(self, command: Callable[[], Any]) -> Any:
        with self._lock:
            result = command()
            reached = self.app.reached()
        self.follower.wait_for(reached)  # read-your-writes, outside the lock
        return result

    def _app(self, call: Callable[[], Any]) -> Any:
        """A read of the event store itself (a debit's or a transfer's state)."""
        with self._lock:
            return call()

    def _read(self, query: Callable[[Any], Any]) -> Any:
        return query(self.connections.reads())

    async def read(self, query: Callable[[Any], Any]) -> Any:
        """`query` on the read models, from an async endpoint. On SQLite it
        runs right here, on the event loop's own read-only connection: a
        local read of a WAL database waits for no writer and takes tens of
        microseconds, far less than the two hand-offs to the thread pool it
        saves. On PostgreSQL a query waits for the network, so it runs in a
        thread of the pool (one hand-off)."""
        if self.connections.inline:
            return query(self.connections.reads())
        return await run_in_threadpool(self._read, query)

    def today(self) -> date:
        return self.clock.now().astimezone(MOSCOW).date()

    # -- reading ---------------------------------------------------------------------

    def account(self, msisdn: str) -> dict[str, Any]:
        """Balance, lots, the burn forecast and linked MGTS accounts; a number
        that is not a member has an empty account with `enrolled` false."""
        return self._read(self.account_query(msisdn))

    def account_query(self, msisdn: str) -> Callable[[Any], dict[str, Any]]:
        """`account` as a query on the read models (for `read`)."""
        today = self.today()

        def query(reads):
            member = reads.member(msisdn) or {}
            lots = reads.lots(msisdn)
            lapsed, lapsed_on = reads.lapsed(msisdn, today, lots)
            return {
                "msisdn": msisdn,
                "enrolled": bool(member.get("enrolled_at")),
                "enrolled_at": member.get("enrolled_at"),
                "balance": int(member.get("balance") or 0),
                "lots": lots,
                "expiring": {str(days): points for days, points in reads.burn_forecast(msisdn, today, lots=lots).items()},
                "lapsed": lapsed,
                "lapsed_on": lapsed_on,
                "expiry_months": _by_expiry_month(lots, today),
                "mgts_accounts": reads.mgts_accounts_of(msisdn),
            }

        return query

    def history(self, msisdn: str, kinds: list[str], since: date | None, until: date | None,
                page: int, per_page: int, staff: bool = False) -> dict[str, Any]:
        return self._read(self.history_query(msisdn, kinds, since, until, page, per_page, staff))

    def history_query(self, msisdn: str, kinds: list[str], since: date | None, until: date | None,
                      page: int, per_page: int, staff: bool = False) -> Callable[[Any], dict[str, Any]]:
        """`history` as a query on the read models (for `read`). A member
        does not see what the staff wrote about an adjustment (the reason,
        who asked, who approved): the console does (`staff`)."""
        per_page = max(1, min(per_page, HISTORY_PAGE_MAX))

        def query(reads):
            entries, total = reads.history_page(
                msisdn, kinds=kinds or None, since=since, until=until, limit=per_page, offset=(page - 1) * per_page,
            )
            if not staff:
                for entry in entries:
                    if entry["kind"] == "adjusted":
                        entry["detail"] = {k: v for k, v in entry["detail"].items() if k in MEMBER_ADJUSTMENT_DETAIL}
            return {"items": entries, "total": total, "page": page, "per_page": per_page}

        return query

    def offers_now(self) -> list[Offer]:
        today = self.today()
        return [offer for offer in self.offers if offer.valid_on(today)]

    def rewards(self, category: str | None = None) -> list[Reward]:
        return [r for r in self.catalog.values() if category is None or r.category == category]

    def earning(self) -> dict[str, Any]:
        """The programme's sources and rates, from the rules file."""
        rules = self.app.rules
        return {
            "rules_version": rules.version,
            "sources": [
                {"source": "usage", "title": "Услуги связи: мобильная связь, мобильный и домашний интернет, ТВ",
                 "rate": f"1 балл за каждые {rules.usage_rubles_per_point} ₽ в месяц"},
                {"source": "shop", "title": "Покупки в салонах-магазинах МТС",
                 "rate": f"1 балл за {rules.shop_branded_rubles_per_point} ₽ на фирменные товары МТС, "
                         f"1 балл за {rules.shop_other_rubles_per_point} ₽ на прочие товары"},
                {"source": "mgts", "title": "Услуги МГТС (номер МТС указывается в личном кабинете МГТС)",
                 "rate": f"1 балл за {rules.mgts_rubles_per_point} ₽, начисление до "
                         f"{rules.mgts_settlement_day} числа следующего месяца"},
                {"source": "card", "title": "Покупки по карте МТС Банка / МТС Деньги",
                 "rate": "; ".join(
                     (f"траты прошлого месяца до {t.spend_below} ₽: " if t.spend_below is not None else "больше: ")
                     + f"1 балл за {t.rubles_per_point} ₽" for t in rules.card_tiers
                 ) + f"; начисление до {rules.card_settlement_day} числа следующего месяца"},
                {"source": "ballyplus", "title": "Приложение «Баллы Плюс»",
                 "rate": f"1 балл партнёра = {rules.ballyplus_points_per_partner_point} балл"},
            ],
            "expiry_months": rules.expiry_months,
        }

    # -- membership ------------------------------------------------------------------------

    def enroll(self, msisdn: str) -> str:
        return self._command(lambda: self.app.enroll_member(msisdn, "web", self.clock.now()))

    # -- orders from the catalogue ------------------------------------------------------------

    def order(self, msisdn: str, item_id: str, idempotency_key: str) -> dict[str, Any]:
        reward = self.catalog.get(item_id)
        if reward is None:
            raise UnknownReward(item_id)
        debit = self._command(lambda: self.app.debit(
            msisdn, reward.points, purpose="order", idempotency_key=f"order:{msisdn}:{idempotency_key}",
            reference={"item_id": reward.item_id, "title": reward.title}, at=self.clock.now(),
        ))
        return self._order(as_dict(debit), reward)

    def order_status(self, msisdn: str, order_id: str) -> dict[str, Any]:
        debit = self._app(lambda: self.app.debit_status(msisdn, order_id))
        if debit is None or debit.purpose != "order":
            raise NotFound(order_id)
        listed = [d for d in self._read(lambda reads: reads.debits_of(msisdn, purpose="order"))
                  if d["debit_id"] == order_id]
        return self._order({**(listed[0] if listed else {}), **as_dict(debit)}, None)

    def orders(self, msisdn: str) -> list[dict[str, Any]]:
        return [self._order(d, None) for d in self._read(lambda reads: reads.debits_of(msisdn, purpose="order"))]

    def _order(self, debit: dict[str, Any], reward: Reward | None) -> dict[str, Any]:
        reference = debit.get("reference") or {}
        item_id = reward.item_id if reward else reference.get("item_id")
        known = self.catalog.get(item_id) if item_id else None
        return {
            "order_id": debit["debit_id"],
            "item_id": item_id,
            "title": reward.title if reward else reference.get("title") or (known.title if known else ""),
            "points": debit["points"],
            "status": "placed" if debit["status"] == "debited" else "cancelled",
            "balance_after": debit.get("balance_after"),
            "duplicate": bool(debit.get("duplicate", False)),
            "at": debit.get("created_at"),
        }

    # -- transfers between members (RULES.md 10) -------------------------------------------------

    def offer_transfer(self, sender: str, recipient: str, points: int, idempotency_key: str) -> dict[str, Any]:
        return as_dict(self._command(lambda: self.app.offer_transfer(
            sender, recipient, points, idempotency_key=f"transfer:{sender}:{idempotency_key}", at=self.clock.now(),
        )))

    def settle_transfer(self, msisdn: str, transfer_id: str, accept: bool) -> dict[str, Any]:
        self.transfer(msisdn, transfer_id, recipient_only=True)
        act = self.app.accept_transfer if accept else self.app.decline_transfer
        return as_dict(self._command(lambda: act(transfer_id, msisdn, at=self.clock.now())))

    def transfer(self, msisdn: str, transfer_id: str, recipient_only: bool = False) -> dict[str, Any]:
        """A transfer that `msisdn` sent or received (only received, with
        `recipient_only`); someone else's is NotFound, like a missing one."""
        found = self._app(lambda: self.app.transfer(transfer_id))
        parties = () if found is None else (found.recipient,) if recipient_only else (found.sender, found.recipient)
        if msisdn not in parties:
            raise NotFound(transfer_id)
        if found.status == "pending" and found.expires_at <= self.clock.now():
            self.return_lapsed([found.transfer_id])
            found = self._app(lambda: self.app.transfer(transfer_id))
        return as_dict(found)

    def transfers(self, msisdn: str) -> list[dict[str, Any]]:
        listed = self._read(lambda reads: reads.transfers_of(msisdn))
        now = self.clock.now()
        lapsed = [t["transfer_id"] for t in listed
                  if t["status"] == "pending" and datetime.fromisoformat(t["expires_at"]) <= now]
        if lapsed:
            self.return_lapsed(lapsed)
            listed = self._read(lambda reads: reads.transfers_of(msisdn))
        return [dict(t) for t in listed]

    def return_lapsed(self, transfer_ids: list[str]) -> None:
        """Transfers not answered within their window go back to the sender
        as soon as someone looks (the daily tick returns the others)."""
        now = self.clock.now()
        self._command(lambda: [self.app.return_lapsed_transfer(t, now) for t in transfer_ids])

    # -- shop tills --------------------------------------------------------------------------------

    def pos_debit(self, store_id: str, msisdn: str, points: int, idempotency_key: str,
                  receipt_id: str | None, remember: Callable[[str, str], None]) -> dict[str, Any]:
        debit = self._command(lambda: self.app.debit(
            msisdn, points, purpose="pos", idempotency_key=f"pos:{store_id}:{idempotency_key}",
            reference={"store_id": store_id, "receipt": receipt_id}, at=self.clock.now(),
        ))
        remember(debit.debit_id, msisdn)
        return as_dict(debit)

    def pos_cancel(self, msisdn: str, debit_id: str) -> dict[str, Any]:
        return as_dict(self._command(lambda: self.app.cancel_debit(msisdn, debit_id, at=self.clock.now())))

    def pos_status(self, msisdn: str, debit_id: str) -> dict[str, Any]:
        debit = self._app(lambda: self.app.debit_status(msisdn, debit_id))
        if debit is None:
            raise NotFound(debit_id)
        return as_dict(debit)


def _by_expiry_month(lots: list[dict[str, Any]], today: date) -> list[dict[str, Any]]:
    """The points of the lots not yet expired, by the month they expire in:
    [{"month": "2027-07-01", "points": 1200}, ...], soonest first."""
    months: dict[str, int] = {}
    for lot in lots:
        if lot["expires_on"] > today.isoformat():
            key = lot["expires_on"][:7] + "-01"
            months[key] = months.get(key, 0) + lot["remaining"]
    return [{"month": key, "points": points} for key, points in sorted(months.items())]


def category_list() -> list[dict[str, str]]:
    return [{"id": key, "title": title} for key, title in CATEGORIES.items()]
