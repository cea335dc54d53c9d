"""What an event of a member account does to the member's points.

Every event of `MemberAccount` states its `effect`: the signed change of the
balance, the lots it opens, the points it takes from lots and the points it
returns to lots, and any clawback the balance could not cover. This is the
one statement of the programme's arithmetic: the aggregate applies it to its
state (`apply_to`), the read models write it to their tables, and the
outbound publisher reports its `points`. An event that changes nothing says
so (`NO_EFFECT`); one that says nothing fails the tests.

Effects are built by `credit`, `debit` and `give_back`, which derive
`points` from the lots, so an effect's points are always its lots' changes.
(A named tuple: one is made for every event applied, read or published.)
"""
from __future__ import annotations

from typing import NamedTuple

from engine.lots import Allocation, Lot, Portion


class Effect(NamedTuple):
    points: int = 0  # the change of the balance, signed
    opened: tuple[Lot, ...] = ()  # new lots, each with the points it starts with
    rule: str | None = None  # the rule the opened lots were earned by ("transfer": received from a member)
    taken: tuple[Allocation, ...] = ()  # points taken out of lots
    returned: tuple[Portion, ...] = ()  # points back into the lots they came from (re-opened if they emptied)
    uncollected: int = 0  # a clawback's points the balance could not cover

    def apply_to(self, lots: list[Lot]) -> list[Lot]:
        """The lots after this effect; lots that empty leave the list, lots
        that points return to come back with their dates."""
        if not (self.taken or self.returned or self.opened):
            return lots
        change: dict[int, int] = {}
        for allocation in self.taken:
            change[allocation.lot_id] = change.get(allocation.lot_id, 0) - allocation.points
        if self.returned:
            dates = {lot.lot_id: (lot.lot_date, lot.expires_on) for lot in lots}
            for portion in self.returned:
                assert dates.get(portion.lot_id, (portion.lot_date, portion.expires_on)) == (
                    portion.lot_date, portion.expires_on), "points go back to the same lot"
                change[portion.lot_id] = change.get(portion.lot_id, 0) + portion.points
        after: list[Lot] = []
        for lot in lots:
            delta = change.pop(lot.lot_id, 0)
            if delta == 0:
                after.append(lot)
                continue
            remaining = lot.remaining + delta
            assert remaining >= 0, f"an allocation never exceeds its lot ({lot})"
            if remaining:
                after.append(Lot(lot.lot_id, lot.lot_date, lot.expires_on, remaining))
        for portion in self.returned:  # into lots that had emptied
            points = change.pop(portion.lot_id, None)
            if points is not None:
                after.append(Lot(portion.lot_id, portion.lot_date, portion.expires_on, points))
        assert not change, f"allocations name lots not in the balance: {sorted(change)}"
        known = {lot.lot_id for lot in after}
        for lot in self.opened:
            assert lot.lot_id not in known, "a new lot has a new id"
            after.append(lot)
        return after


NO_EFFECT = Effect()


def credit(lots: tuple[Lot, ...], rule: str) -> Effect:
    """New lots: the balance grows by what they hold."""
    if not lots:
        return NO_EFFECT
    return Effect(sum(lot.remaining for lot in lots), lots, rule)


def debit(allocations: tuple[Allocation, ...], uncollected: int = 0) -> Effect:
    """Points taken from lots (a clawback also says what it could not take)."""
    assert uncollected >= 0
    return Effect(-sum(a.points for a in allocations), taken=allocations, uncollected=uncollected)


def give_back(portions: tuple[Portion, ...]) -> Effect:
    """Points back into the lots they came from."""
    if not portions:
        return NO_EFFECT
    return Effect(sum(p.points for p in portions), returned=portions)
