"""RULES.md 10 — catalogue orders and shop discounts are debits with an
idempotency key: first-to-expire lots first, never below zero (a request
for more than the balance changes nothing), the same key twice is one
debit; a cancelled debit gives the points back to the same lots.

Lots are made with Баллы Плюс transfers (1 partner point = 1 point, lot date
= the event's date, expiry 12 months later), so every number is by hand."""
from datetime import datetime

import pytest

from engine.calendar import MOSCOW
from engine.errors import (
    IdempotencyConflict,
    InsufficientPoints,
    InvalidAmount,
    NotEnrolled,
    RuleRefusal,
    UnknownDebit,
)
from engine.spending import Debit

ANNA, BORIS = "79990002001", "79990002002"
ORDER = {"item_id": "sku-17", "title": "Наушники"}
POS = {"store_id": "S-042", "receipt": "R-9"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=MOSCOW)


@pytest.fixture
def anna(programme):
    """Anna: 10 points expiring 2027-01-10 (credited second) and 20 points
    expiring 2027-03-05 (credited first)."""
    programme.enroll(ANNA, "2026-01-01 00:00")
    programme.ballyplus(ANNA, 20, "2026-03-05 10:00")
    programme.ballyplus(ANNA, 10, "2026-01-10 10:00")
    return programme


def debit(programme, points, key="k-1", msisdn=ANNA, purpose="order", reference=ORDER, when="2026-04-01T12:00"):
    return programme.runtime.app.debit(
        msisdn, points, purpose=purpose, idempotency_key=key, reference=reference, at=at(when)
    )


def events_stored(programme) -> int:
    return programme.runtime.app.recorder.max_notification_id() or 0


def test_a_debit_takes_points_from_the_lot_that_expires_first(anna):
    # when Anna orders for 15 points
    result = debit(anna, 15)
    # then 10 come from the lot expiring 2027-01-10 and 5 from the one expiring 2027-03-05
    assert result == Debit(result.debit_id, ANNA, 15, "order", "debited", 15, False)
    assert anna.balance(ANNA) == 15
    assert anna.lots(ANNA) == [("2026-03-05", "2027-03-05", 15)]
    line = anna.history(ANNA)[-1]
    assert (line["kind"], line["points"], line["reason"]) == ("redeemed", -15, "order")
    assert line["detail"]["reference"] == ORDER
    assert [lot[:2] for lot in line["detail"]["lots"]] == [[2, 10], [1, 5]]
    assert anna.runtime.reads.debits_of(ANNA) == [{
        "debit_id": result.debit_id, "msisdn": ANNA, "purpose": "order", "points": 15, "status": "debited",
        "reference": ORDER, "created_at": "2026-04-01T09:00:00.000000+00:00",
    }]


def test_a_shop_discount_is_a_debit_of_its_own_purpose(anna):
    result = debit(anna, 30, purpose="pos", reference=POS)
    assert (result.purpose, result.balance_after) == ("pos", 0)
    assert anna.balance(ANNA) == 0
    assert [d["purpose"] for d in anna.runtime.reads.debits_of(ANNA, purpose="pos")] == ["pos"]
    assert anna.runtime.reads.debits_of(ANNA, purpose="order") == []


def test_a_debit_of_more_than_the_balance_is_refused_and_changes_nothing(anna):
    before = (anna.balance(ANNA), anna.lots(ANNA), anna.history(ANNA), events_stored(anna))
    # when Anna asks for 31 of her 30 points
    with pytest.raises(InsufficientPoints) as refused:
        debit(anna, 31, key="big")
    # then it is refused with a reason and nothing is stored: no event, no inbox row
    assert refused.value.reason == "insufficient_points"
    assert (anna.balance(ANNA), anna.lots(ANNA), anna.history(ANNA), events_stored(anna)) == before
    assert anna.runtime.app.recorder.select_inbox([("accrual.orders", "big")]) == {}
    # so the same request succeeds once the balance covers it: 30 + 5 - 31 = 4
    anna.ballyplus(ANNA, 5, "2026-04-02 10:00")
    assert debit(anna, 31, key="big", when="2026-04-03T10:00").balance_after == 4


def test_the_same_key_twice_is_one_debit_answered_twice(anna):
    first = debit(anna, 12)
    again = debit(anna, 12, when="2026-04-01T12:05")
    assert again == Debit(first.debit_id, ANNA, 12, "order", "debited", 18, True)
    assert first.duplicate is False
    assert anna.balance(ANNA) == 18
    assert len(anna.runtime.reads.debits_of(ANNA)) == 1


def test_the_same_key_for_another_request_is_refused_as_idempotency_conflict(anna, programme):
    programme.enroll(BORIS, "2026-01-01 00:00")
    programme.ballyplus(BORIS, 50, "2026-03-01 10:00")
    debit(anna, 12)
    for other in (dict(points=13), dict(msisdn=BORIS, points=12), dict(points=12, reference={"item_id": "x"})):
        with pytest.raises(IdempotencyConflict) as refused:
            debit(anna, **{"key": "k-1", **other})
        assert refused.value.reason == "idempotency_conflict"
    assert (anna.balance(ANNA), anna.balance(BORIS)) == (18, 50)


def test_one_key_may_be_used_once_per_purpose(anna):
    # an order and a shop discount are separate inboxes: the same key names two debits
    order = debit(anna, 5, key="same")
    discount = debit(anna, 5, key="same", purpose="pos", reference=POS)
    assert order.debit_id != discount.debit_id
    assert anna.balance(ANNA) == 20


@pytest.mark.parametrize("points", [0, -1, True, 2.5])
def test_a_debit_is_at_least_one_whole_point(anna, points):
    with pytest.raises(InvalidAmount) as refused:
        debit(anna, points)
    assert refused.value.reason == "invalid_points"
    assert anna.balance(ANNA) == 30


def test_only_an_enrolled_member_can_spend(programme):
    # a member whose events are held (not enrolled yet) and an unknown msisdn
    programme.ballyplus(BORIS, 50, "2026-03-01 10:00")
    for msisdn in (BORIS, "79990002999"):
        with pytest.raises(NotEnrolled) as refused:
            debit(programme, 1, msisdn=msisdn, key=msisdn)
        assert refused.value.reason == "not_enrolled"


def test_an_unknown_purpose_is_refused(anna):
    with pytest.raises(RuleRefusal) as refused:
        debit(anna, 1, purpose="gift")
    assert refused.value.reason == "invalid_purpose"


# -- cancelling ------------------------------------------------------------------


def test_a_cancelled_debit_gives_the_points_back_to_the_same_lots_and_expiry(anna):
    lots_before = anna.lots(ANNA)
    result = debit(anna, 15)
    # when the order is cancelled
    cancelled = anna.runtime.app.cancel_debit(ANNA, result.debit_id, at=at("2026-04-02T09:00"))
    # then both lots are as they were, expiry dates included
    assert cancelled == Debit(result.debit_id, ANNA, 15, "order", "cancelled", 30, False)
    assert anna.lots(ANNA) == lots_before
    assert anna.balance(ANNA) == 30
    line = anna.history(ANNA)[-1]
    assert (line["kind"], line["points"], line["detail"]["lapsed"]) == ("restored", 15, [])
    assert anna.runtime.reads.debits_of(ANNA)[0]["status"] == "cancelled"
    assert anna.runtime.app.debit_status(ANNA, result.debit_id) == cancelled


def test_cancelling_twice_answers_the_cancellation_again(anna):
    result = debit(anna, 15)
    anna.runtime.app.cancel_debit(ANNA, result.debit_id, at=at("2026-04-02T09:00"))
    again = anna.runtime.app.cancel_debit(ANNA, result.debit_id, at=at("2026-04-02T09:01"))
    assert (again.status, again.duplicate, again.balance_after) == ("cancelled", True, 30)
    assert anna.balance(ANNA) == 30
    # and the original request repeated answers the debit as it is now
    assert debit(anna, 15) == Debit(result.debit_id, ANNA, 15, "order", "cancelled", 30, True)


def test_a_lot_emptied_by_the_debit_comes_back_with_its_dates(anna):
    result = debit(anna, 30)
    assert anna.runtime.app.member(ANNA).lots == []
    anna.runtime.app.cancel_debit(ANNA, result.debit_id, at=at("2026-04-02T09:00"))
    assert anna.lots(ANNA) == [("2026-01-10", "2027-01-10", 10), ("2026-03-05", "2027-03-05", 20)]


def test_points_of_a_lot_that_expired_meanwhile_are_not_given_back(anna):
    # given 15 points debited: 10 of the lot expiring 2027-01-10, 5 of the one expiring 2027-03-05
    result = debit(anna, 15)
    # when the order is cancelled on 2027-01-20, after the first lot's expiry
    cancelled = anna.runtime.app.cancel_debit(ANNA, result.debit_id, at=at("2027-01-20T10:00"))
    # then only the 5 points of the other lot come back; the 10 are recorded as lapsed
    assert cancelled.balance_after == 20
    assert anna.lots(ANNA) == [("2026-03-05", "2027-03-05", 20)]
    line = anna.history(ANNA)[-1]
    assert (line["kind"], line["points"]) == ("restored", 5)
    assert [lapsed[:2] for lapsed in line["detail"]["lapsed"]] == [[2, 10]]


def test_only_the_member_of_the_debit_can_cancel_it(anna, programme):
    programme.enroll(BORIS, "2026-01-01 00:00")
    result = debit(anna, 15)
    for msisdn, debit_id in ((BORIS, result.debit_id), (ANNA, "no-such-debit"), ("79990002999", result.debit_id)):
        with pytest.raises(UnknownDebit) as refused:
            anna.runtime.app.cancel_debit(msisdn, debit_id, at=at("2026-04-02T09:00"))
        assert refused.value.reason == "unknown_debit"
    assert anna.runtime.app.debit_status(BORIS, result.debit_id) is None
    assert anna.balance(ANNA) == 15
