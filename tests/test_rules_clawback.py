"""Rule 8 — Clawbacks: a clawback takes what is due up to the current
balance, first-to-expire lots first; what the balance cannot cover is
recorded as uncollected and never taken from later credits; the balance
never goes negative.

Every expected number is worked out by hand from RULES.md in a comment."""
import pytest

MEMBER = "79990000801"


@pytest.fixture
def member(programme):
    programme.enroll(MEMBER, "2026-01-01 00:00")
    return programme


def _expired_receipt(programme):
    """A receipt of mts_branded 30.00 on 2026-01-10 (floor(30/3) = 10 points,
    lot expiring 2027-01-10) whose 10 points have expired: balance 0."""
    programme.purchase(MEMBER, "R1", [("1", "mts_branded", "30.00")], "2026-01-10 10:00")
    assert programme.tick("2027-01-10").expired_points == 10
    assert programme.balance(MEMBER) == 0


def test_a_clawback_within_the_balance_takes_exactly_what_is_due(member):
    # given a receipt of mts_branded 30.00 (10 points) and 5 Баллы Плюс points: balance 15
    member.purchase(MEMBER, "R1", [("1", "mts_branded", "30.00")], "2026-01-10 10:00")
    member.ballyplus(MEMBER, 5, "2026-01-11 10:00")
    # when the receipt is returned in full: net 0, 0 points, 10 due
    member.shop_return(MEMBER, "R1", [("1", "30.00")], "2026-01-12 10:00")
    # then 10 are taken, nothing is uncollected: balance 15 - 10 = 5
    assert member.balance(MEMBER) == 5
    assert member.uncollected(MEMBER) == 0
    clawback = member.history(MEMBER)[-1]
    assert (clawback["points"], clawback["detail"]["points_due"], clawback["detail"]["uncollected"]) == (-10, 10, 0)


def test_a_clawback_beyond_the_balance_takes_the_balance_and_records_the_rest_as_uncollected(member):
    # given a receipt worth 10 points that have expired, then 3 Баллы Плюс points: balance 3
    _expired_receipt(member)
    member.ballyplus(MEMBER, 3, "2027-01-12 10:00")
    # when the receipt is returned in full: 10 due
    report = member.shop_return(MEMBER, "R1", [("1", "30.00")], "2027-01-15 10:00")
    # then min(10, 3) = 3 are taken, 10 - 3 = 7 are recorded as uncollected, balance 0
    assert report.outcomes == {"applied": 1}
    assert member.balance(MEMBER) == 0
    assert member.uncollected(MEMBER) == 7
    assert member.runtime.reads.member(MEMBER)["uncollected"] == 7
    clawback = member.history(MEMBER)[-1]
    assert (clawback["kind"], clawback["points"]) == ("clawed_back", -3)
    assert (clawback["detail"]["points_due"], clawback["detail"]["uncollected"]) == (10, 7)


def test_a_clawback_on_an_empty_balance_takes_nothing_and_the_balance_stays_at_zero(member):
    # given a receipt worth 10 points that have expired: balance 0
    _expired_receipt(member)
    # when the receipt is returned in full: 10 due
    member.shop_return(MEMBER, "R1", [("1", "30.00")], "2027-01-15 10:00")
    # then min(10, 0) = 0 taken, 10 uncollected, the balance is 0 (never negative)
    assert member.balance(MEMBER) == 0
    assert member.uncollected(MEMBER) == 10


def test_uncollected_points_are_never_taken_from_later_credits(member):
    # given a receipt worth 10 points that have expired, 3 Баллы Плюс points, then a full
    # return: 3 taken, 7 uncollected, balance 0
    _expired_receipt(member)
    member.ballyplus(MEMBER, 3, "2027-01-12 10:00")
    member.shop_return(MEMBER, "R1", [("1", "30.00")], "2027-01-15 10:00")
    # when later credits arrive: 4 Баллы Плюс points and a charge of 10.00 (floor(10/5) = 2)
    member.ballyplus(MEMBER, 4, "2027-01-20 10:00")
    member.usage(MEMBER, "10.00", "2027-01-21 10:00")
    # then they are credited in full: balance 0 + 4 + 2 = 6, uncollected still 7
    assert member.balance(MEMBER) == 6
    assert member.uncollected(MEMBER) == 7
    assert member.lots(MEMBER) == [("2027-01-20", "2028-01-20", 4), ("2027-01-21", "2028-01-21", 2)]


def test_a_card_re_settlement_that_lowers_points_beyond_the_balance_records_the_rest_as_uncollected(member):
    # given January card spend 300.00 settled on 25 February: floor(300/30) = 10 (lot expiring 2027-02-25),
    # expired on 2027-02-25, then 4 Баллы Плюс points: balance 4
    member.card_purchase(MEMBER, "300.00", "2026-01-10 10:00")
    member.tick("2026-02-25")
    member.tick("2027-02-25")
    member.ballyplus(MEMBER, 4, "2027-03-01 10:00")
    assert member.balance(MEMBER) == 4
    # when a late January refund of 300.00 arrives and the next tick runs
    member.card_refund(MEMBER, "300.00", "2026-01-20 10:00")
    member.tick("2027-03-02")
    # then January is re-settled at floor(0/30) = 0: 10 due, min(10, 4) = 4 taken, 6 uncollected
    assert member.balance(MEMBER) == 0
    assert member.uncollected(MEMBER) == 6
    clawback = member.history(MEMBER)[-1]
    assert (clawback["kind"], clawback["points"], clawback["reason"]) == ("clawed_back", -4, "card_resettlement")


def test_uncollected_points_add_up_over_clawbacks(member):
    # given two receipts on 2026-01-10, R1 mts_branded 30.00 (10) and R2 mts_branded 15.00 (5),
    # all 15 points expired on 2027-01-10: balance 0
    member.purchase(MEMBER, "R1", [("1", "mts_branded", "30.00")], "2026-01-10 10:00")
    member.purchase(MEMBER, "R2", [("1", "mts_branded", "15.00")], "2026-01-10 11:00")
    member.tick("2027-01-10")
    # when both are returned in full
    member.shop_return(MEMBER, "R1", [("1", "30.00")], "2027-01-15 10:00")
    member.shop_return(MEMBER, "R2", [("1", "15.00")], "2027-01-15 11:00")
    # then 10 + 5 = 15 are uncollected and the balance is 0
    assert member.uncollected(MEMBER) == 15
    assert member.balance(MEMBER) == 0
