"""RULES.md 10 — member-to-member transfers: at least 1 point, to an enrolled
member, accepted within 24 hours; the sender's points are held meanwhile and
return on refusal or time-out (rule 9: the tick returns what timed out);
accepted points keep their lots' expiry dates.

Anna's lots (Баллы Плюс): 10 points expiring 2027-01-10, 20 expiring 2027-03-05."""
from datetime import datetime, timedelta

import pytest

from engine.calendar import MOSCOW
from engine.errors import (
    IdempotencyConflict,
    InsufficientPoints,
    InvalidAmount,
    NotEnrolled,
    RecipientNotEnrolled,
    SelfTransfer,
    TransferExpired,
    TransferSettled,
    UnknownTransfer,
)
from engine.spending import Transfer

ANNA, BORIS, VERA = "79990003001", "79990003002", "79990003003"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=MOSCOW)


OFFERED = at("2026-06-10T15:00")


@pytest.fixture
def members(programme):
    programme.enroll(ANNA, "2026-01-01 00:00")
    programme.enroll(BORIS, "2026-01-01 00:00")
    programme.ballyplus(ANNA, 20, "2026-03-05 10:00")
    programme.ballyplus(ANNA, 10, "2026-01-10 10:00")
    programme.ballyplus(BORIS, 3, "2026-05-01 10:00")
    return programme


def offer(programme, points=15, key="t-1", sender=ANNA, recipient=BORIS, when=OFFERED) -> Transfer:
    return programme.runtime.app.offer_transfer(sender, recipient, points, idempotency_key=key, at=when)


def test_an_offer_holds_the_senders_points_first_to_expire(members):
    transfer = offer(members)
    assert transfer == Transfer(
        transfer.transfer_id, ANNA, BORIS, 15, "pending", OFFERED, OFFERED + timedelta(hours=24), None, False
    )
    # Anna's 15 points leave her balance now: 10 of the 2027-01-10 lot, 5 of the 2027-03-05 lot
    assert members.balance(ANNA) == 15
    assert members.lots(ANNA) == [("2026-03-05", "2027-03-05", 15)]
    assert members.balance(BORIS) == 3
    line = members.history(ANNA)[-1]
    assert (line["kind"], line["points"], line["detail"]["to"], line["detail"]["status"]) == (
        "transfer_out", -15, BORIS, "held")
    assert members.runtime.app.transfer(transfer.transfer_id) == transfer
    seen = members.runtime.reads.transfers_of(BORIS)
    assert [(t["sender"], t["status"], t["expires_at"]) for t in seen] == [
        (ANNA, "pending", "2026-06-11T12:00:00.000000+00:00")]


def test_an_accepted_transfer_credits_lots_that_keep_the_senders_expiry(members):
    transfer = offer(members)
    accepted = members.runtime.app.accept_transfer(transfer.transfer_id, BORIS, at=at("2026-06-11T14:59"))
    assert (accepted.status, accepted.settled_at, accepted.duplicate) == ("accepted", at("2026-06-11T14:59"), False)
    assert (members.balance(ANNA), members.balance(BORIS)) == (15, 18)
    assert members.lots(BORIS) == [
        ("2026-01-10", "2027-01-10", 10), ("2026-03-05", "2027-03-05", 5), ("2026-05-01", "2027-05-01", 3)]
    line = members.history(BORIS)[-1]
    assert (line["kind"], line["points"], line["detail"]["from"]) == ("transfer_in", 15, ANNA)
    assert [t["status"] for t in members.runtime.reads.transfers_of(ANNA)] == ["accepted"]
    # accepting again answers the same; declining now is refused
    again = members.runtime.app.accept_transfer(transfer.transfer_id, BORIS, at=at("2026-06-11T15:30"))
    assert (again.status, again.settled_at, again.duplicate) == ("accepted", at("2026-06-11T14:59"), True)
    with pytest.raises(TransferSettled) as refused:
        members.runtime.app.decline_transfer(transfer.transfer_id, BORIS, at=at("2026-06-11T15:30"))
    assert refused.value.reason == "transfer_settled"
    assert members.balance(BORIS) == 18


def test_a_declined_transfer_returns_the_points_to_the_senders_same_lots(members):
    lots_before = members.lots(ANNA)
    transfer = offer(members, points=30)  # empties both of Anna's lots
    declined = members.runtime.app.decline_transfer(transfer.transfer_id, BORIS, at=at("2026-06-10T16:00"))
    assert declined.status == "declined"
    assert (members.balance(ANNA), members.balance(BORIS)) == (30, 3)
    assert members.lots(ANNA) == lots_before
    line = members.history(ANNA)[-1]
    assert (line["kind"], line["points"], line["reason"]) == ("transfer_returned", 30, "declined")
    assert members.runtime.app.decline_transfer(transfer.transfer_id, BORIS, at=at("2026-06-10T16:01")).duplicate
    with pytest.raises(TransferSettled):
        members.runtime.app.accept_transfer(transfer.transfer_id, BORIS, at=at("2026-06-10T16:02"))


def test_a_transfer_not_accepted_within_24_hours_returns_to_the_sender_at_the_next_tick(members):
    transfer = offer(members)  # expires 2026-06-11 15:00 Moscow
    # the tick of 2026-06-11 (00:00) is before the window closes: nothing returns
    assert members.tick("2026-06-11").returned_transfers == 0
    assert members.runtime.app.transfer(transfer.transfer_id).status == "pending"
    # after the window the offer can no longer be accepted, even before a tick returned it
    with pytest.raises(TransferExpired) as refused:
        members.runtime.app.accept_transfer(transfer.transfer_id, BORIS, at=at("2026-06-11T15:00"))
    assert refused.value.reason == "transfer_expired"
    assert members.balance(BORIS) == 3
    # the tick of 2026-06-12 closes 2026-06-11: the transfer goes back to Anna
    assert members.tick("2026-06-12").returned_transfers == 1
    returned = members.runtime.app.transfer(transfer.transfer_id)
    assert (returned.status, returned.settled_at) == ("returned", at("2026-06-12T00:00"))
    assert (members.balance(ANNA), members.balance(BORIS)) == (30, 3)
    assert members.lots(ANNA) == [("2026-01-10", "2027-01-10", 10), ("2026-03-05", "2027-03-05", 20)]
    assert members.history(ANNA)[-1]["reason"] == "timed_out"
    # the same tick again changes nothing
    assert members.tick("2026-06-12").returned_transfers == 0
    with pytest.raises(TransferSettled):
        members.runtime.app.accept_transfer(transfer.transfer_id, BORIS, at=at("2026-06-12T10:00"))


def test_points_returned_after_their_lot_expired_are_not_credited_back(members):
    # offered on 2027-01-09 15:00: 10 points of the lot expiring 2027-01-10 are held
    transfer = offer(members, points=12, when=at("2027-01-09T15:00"))
    # the recipient accepts on 2027-01-10 10:00, after that lot expired: only 2 points arrive
    members.runtime.app.accept_transfer(transfer.transfer_id, BORIS, at=at("2027-01-10T10:00"))
    assert members.balance(BORIS) == 5
    line = members.history(BORIS)[-1]
    assert (line["points"], [lapsed[:2] for lapsed in line["detail"]["lapsed"]]) == (2, [[2, 10]])


def test_an_offer_is_idempotent_by_its_key(members):
    first = offer(members)
    again = offer(members, when=OFFERED + timedelta(minutes=1))
    assert again == Transfer(**{**first.__dict__, "duplicate": True})
    assert members.balance(ANNA) == 15
    with pytest.raises(IdempotencyConflict) as refused:
        offer(members, points=14)
    assert refused.value.reason == "idempotency_conflict"


def test_refused_offers_change_nothing(members, programme):
    programme.ballyplus(VERA, 5, "2026-05-01 10:00")  # Vera's events are held: not enrolled
    before = (members.balance(ANNA), members.lots(ANNA), members.history(ANNA))
    cases = [
        (dict(points=0), InvalidAmount, "invalid_points"),
        (dict(points=31), InsufficientPoints, "insufficient_points"),
        (dict(recipient=ANNA), SelfTransfer, "self_transfer"),
        (dict(recipient=VERA), RecipientNotEnrolled, "recipient_not_enrolled"),
        (dict(recipient="79990003999"), RecipientNotEnrolled, "recipient_not_enrolled"),
        (dict(sender=VERA, recipient=ANNA), NotEnrolled, "not_enrolled"),
    ]
    for n, (kwargs, error, reason) in enumerate(cases):
        with pytest.raises(error) as refused:
            offer(members, key=f"refused-{n}", **kwargs)
        assert refused.value.reason == reason
    assert (members.balance(ANNA), members.lots(ANNA), members.history(ANNA)) == before
    assert members.runtime.reads.transfers_of(ANNA) == []


def test_only_the_recipient_can_answer_a_transfer(members, programme):
    programme.enroll(VERA, "2026-01-01 00:00")
    transfer = offer(members)
    for who, transfer_id in ((VERA, transfer.transfer_id), (ANNA, transfer.transfer_id),
                             (BORIS, "00000000-0000-0000-0000-000000000000"), (BORIS, "not-a-uuid")):
        for answer in (members.runtime.app.accept_transfer, members.runtime.app.decline_transfer):
            with pytest.raises(UnknownTransfer) as refused:
                answer(transfer_id, who, at=at("2026-06-10T16:00"))
            assert refused.value.reason == "unknown_transfer"
    # a member's id is not a transfer either
    from engine.ids import member_id
    with pytest.raises(UnknownTransfer):
        members.runtime.app.accept_transfer(str(member_id(BORIS)), BORIS, at=at("2026-06-10T16:00"))
    assert members.runtime.app.transfer("not-a-uuid") is None
    assert members.runtime.app.transfer(transfer.transfer_id).status == "pending"
    assert members.balance(VERA) == 0
