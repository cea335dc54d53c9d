"""MTS shop receipts (rule 3): what was bought, what was returned, and what
the receipt earned. One aggregate per `receipt_id`, so a return can be checked
against the purchase whichever member it comes from."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from eventsourcing.domain import Aggregate

from engine.errors import ReceiptMemberMismatchError, ReturnExceedsPurchaseError
from engine.ids import receipt_id as receipt_aggregate_id
from engine.rules import RuleSet, points_for

BRANDED, OTHER, EXCLUDED = "mts_branded", "other", "excluded"


@dataclass(frozen=True, slots=True)
class ReceiptLine:
    category: str
    bought: Decimal
    returned: Decimal = Decimal(0)

    @property
    def left(self) -> Decimal:
        return self.bought - self.returned


class Receipt(Aggregate):
    class_version = 2

    class Issued(Aggregate.Created):
        receipt_id: str
        msisdn: str
        store_id: str
        source_event_id: str
        lines: dict
        eligible: bool
        points: int

    def __init__(self, receipt_id: str, msisdn: str, store_id: str, lines: dict, eligible: bool, points: int):
        self.receipt_id = receipt_id
        self.msisdn = msisdn
        self.store_id = store_id
        self.lines: dict[str, ReceiptLine] = {line_id: ReceiptLine(cat, amount) for line_id, (cat, amount) in lines.items()}
        self.eligible = eligible
        self.points = points

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """A snapshot of version 1: lines as [category, bought, returned]."""
        state["lines"] = {line_id: ReceiptLine(*line) for line_id, line in state["lines"].items()}

    @classmethod
    def issue(
        cls,
        receipt: str,
        msisdn: str,
        store_id: str,
        source_event_id: str,
        lines: dict[str, tuple[str, Decimal]],
        eligible: bool,
        rules: RuleSet,
        occurred_at: datetime,
    ) -> Receipt:
        """A purchase. `lines` maps line_id to (category, amount); a receipt
        from before the member's enrollment is kept (returns are checked
        against it) but earns nothing."""
        points = receipt_points({k: (c, a) for k, (c, a) in lines.items()}, rules) if eligible else 0
        return cls._create(
            cls.Issued,
            id=receipt_aggregate_id(receipt),
            receipt_id=receipt,
            msisdn=msisdn,
            store_id=store_id,
            source_event_id=source_event_id,
            lines={k: [c, a] for k, (c, a) in lines.items()},
            eligible=eligible,
            points=points,
            timestamp=occurred_at,
        )

    def check_return(self, msisdn: str, returned: dict[str, Decimal]) -> None:
        if msisdn != self.msisdn:
            raise ReceiptMemberMismatchError(
                f"receipt {self.receipt_id} belongs to another member, not {msisdn}"
            )
        for line_id, amount in returned.items():
            line = self.lines.get(line_id)
            if line is None:
                raise ReturnExceedsPurchaseError(f"line {line_id!r} is not on receipt {self.receipt_id}")
            left = line.left
            if amount > left:
                raise ReturnExceedsPurchaseError(
                    f"line {line_id!r} of receipt {self.receipt_id} holds {left} RUB, return asks {amount} RUB"
                )

    def record_return(
        self, source_event_id: str, msisdn: str, returned: dict[str, Decimal], rules: RuleSet, occurred_at: datetime
    ) -> int:
        """Recomputes the receipt's points on the net amounts; returns the
        points to take back (a clawback, rule 8)."""
        self.check_return(msisdn, returned)
        net = {
            line_id: (line.category, line.left - returned.get(line_id, Decimal(0)))
            for line_id, line in self.lines.items()
        }
        points_after = receipt_points(net, rules) if self.eligible else 0
        points_due = self.points - points_after
        assert points_due >= 0, "a return never raises a receipt's points"
        self.trigger_event(
            self.LinesReturned,
            source_event_id=source_event_id,
            returned=returned,
            points_before=self.points,
            points_after=points_after,
            timestamp=occurred_at,
        )
        return points_due

    class LinesReturned(Aggregate.Event):
        source_event_id: str
        returned: dict
        points_before: int
        points_after: int

        def apply(self, receipt: Receipt) -> None:
            for line_id, amount in self.returned.items():
                line = receipt.lines[line_id]
                receipt.lines[line_id] = replace(line, returned=line.returned + amount)
            receipt.points = self.points_after


def receipt_points(lines: dict[str, tuple[str, Decimal]], rules: RuleSet) -> int:
    """floor(sum of branded / 3) + floor(sum of other / 30); excluded earn 0."""
    branded = sum((amount for category, amount in lines.values() if category == BRANDED), Decimal(0))
    other = sum((amount for category, amount in lines.values() if category == OTHER), Decimal(0))
    return points_for(branded, rules.shop_branded_rubles_per_point) + points_for(
        other, rules.shop_other_rubles_per_point
    )
