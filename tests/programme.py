"""A test driver that speaks the programme's language: send the inbound
messages of EVENTS.md (as JSON bytes, through the same edge as the file
ingester), tick, and read balances, lots and history back."""
from __future__ import annotations

import itertools
import json
from datetime import date, datetime, timezone
from typing import Any

from accrual.intake import inbound_from_line
from accrual.runtime import Runtime
from engine.messages import Report
from projections.at_tick import balances_at, tick_position
from projections.books import Books, Period, change
from schemas import TYPE_TOPIC

TOPICS = TYPE_TOPIC  # message type -> inbound topic, as EVENTS.md lists them
RECEIVED_AT = datetime(2026, 11, 25, tzinfo=timezone.utc)


def moment(text: str) -> str:
    """'2026-03-14 10:00' -> RFC 3339 in Moscow time."""
    if "T" in text:
        return text
    day, _, clock = text.partition(" ")
    return f"{day}T{clock or '12:00'}:00+03:00"


class Programme:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self._ids = itertools.count(1)

    # -- sending -----------------------------------------------------------

    def message(self, type_: str, at: str, event_id: str | None = None, **fields: Any) -> dict[str, Any]:
        return {
            "topic": TOPICS[type_],
            "event_id": event_id or f"{type_}-{next(self._ids)}",
            "type": type_,
            "occurred_at": moment(at),
            **fields,
        }

    def send(self, *messages: dict[str, Any] | bytes) -> Report:
        lines = [m if isinstance(m, bytes) else json.dumps(m).encode() for m in messages]
        return self.runtime.apply([[inbound_from_line(line, RECEIVED_AT) for line in lines]])

    def enroll(self, msisdn: str, at: str, channel: str = "web", **kw: Any) -> Report:
        return self.send(self.message("member_enrolled", at, msisdn=msisdn, channel=channel, **kw))

    def usage(self, msisdn: str, amount: str, at: str, service: str = "mobile", **kw: Any) -> Report:
        return self.send(self.message("usage_charged", at, msisdn=msisdn, service=service, amount=amount, **kw))

    def purchase(self, msisdn: str, receipt: str, lines: list[tuple[str, str, str]], at: str, **kw: Any) -> Report:
        """`lines`: (line_id, category, amount)."""
        body = [{"line_id": i, "category": c, "amount": a} for i, c, a in lines]
        return self.send(
            self.message("shop_purchase", at, msisdn=msisdn, store_id="S1", receipt_id=receipt, lines=body, **kw)
        )

    def shop_return(self, msisdn: str, receipt: str, lines: list[tuple[str, str]], at: str, **kw: Any) -> Report:
        body = [{"line_id": i, "amount": a} for i, a in lines]
        return self.send(
            self.message("shop_return", at, msisdn=msisdn, store_id="S1", receipt_id=receipt, lines=body, **kw)
        )

    def link_mgts(self, mgts_account: str, msisdn: str, at: str, **kw: Any) -> Report:
        return self.send(self.message("mgts_account_linked", at, mgts_account=mgts_account, msisdn=msisdn, **kw))

    def mgts_bill(self, mgts_account: str, period: str, amount: str, at: str, **kw: Any) -> Report:
        return self.send(self.message("mgts_bill", at, mgts_account=mgts_account, period=period, amount=amount, **kw))

    def card_purchase(self, msisdn: str, amount: str, at: str, card_id: str = "card-1", **kw: Any) -> Report:
        return self.send(self.message("card_purchase", at, msisdn=msisdn, card_id=card_id, amount=amount, **kw))

    def card_refund(self, msisdn: str, amount: str, at: str, card_id: str = "card-1", **kw: Any) -> Report:
        return self.send(self.message("card_refund", at, msisdn=msisdn, card_id=card_id, amount=amount, **kw))

    def ballyplus(self, msisdn: str, partner_points: int, at: str, **kw: Any) -> Report:
        return self.send(self.message("ballyplus_transfer", at, msisdn=msisdn, partner_points=partner_points, **kw))

    def tick(self, as_of: str) -> Report:
        return self.runtime.tick(date.fromisoformat(as_of))

    # -- reading -----------------------------------------------------------

    def balance(self, msisdn: str) -> int:
        """The balance in the read model, checked against the aggregate."""
        self.runtime.projector.catch_up()
        member = self.runtime.reads.member(msisdn)
        account = self.runtime.app.member(msisdn)
        read_model = 0 if member is None else member["balance"]
        aggregate = 0 if account is None else account.balance
        assert read_model == aggregate, f"read model {read_model} != aggregate {aggregate}"
        return read_model

    def balances(self) -> dict[str, int]:
        self.runtime.projector.catch_up()
        return self.runtime.reads.balances()

    def lots(self, msisdn: str) -> list[tuple[str, str, int]]:
        """(lot_date, expires_on, remaining) of each lot with points left."""
        self.runtime.projector.catch_up()
        return [(lot["lot_date"], lot["expires_on"], lot["remaining"]) for lot in self.runtime.reads.lots(msisdn)]

    def history(self, msisdn: str) -> list[dict[str, Any]]:
        self.runtime.projector.catch_up()
        return self.runtime.reads.history(msisdn)

    def books(self) -> list[Period]:
        """The liability rollforward: a row per period the ticks closed."""
        self.runtime.projector.catch_up()
        return Books(self.runtime.db).periods()

    def moved_since_last_close(self) -> int:
        """What the movements of the open period did to the sum of balances."""
        self.runtime.projector.catch_up()
        return change(Books(self.runtime.db).open_period())

    def balances_at_tick(self, as_of: str) -> dict[str, int]:
        """The balances right after the tick as-of that date, from the log alone."""
        app = self.runtime.app
        return balances_at(app, tick_position(app, date.fromisoformat(as_of)))

    def uncollected(self, msisdn: str) -> int:
        account = self.runtime.app.member(msisdn)
        return 0 if account is None else account.uncollected
