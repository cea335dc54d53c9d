"""Rule 7 — Expiry: a lot expires 12 calendar months after its lot date at
00:00 Moscow (2026-03-14 → 2027-03-14; 29 February → 1 March); each tick
removes the points left in lots whose expiry is at or before its moment;
every debit takes from the lot that expires first (ties: credited first).

Every expected number is worked out by hand from RULES.md in a comment."""
import pytest

MEMBER = "79990000701"


@pytest.fixture
def member(programme):
    programme.enroll(MEMBER, "2025-01-01 00:00")
    return programme


def test_a_lot_dated_2026_03_14_expires_on_2027_03_14(member):
    # when 10 points are credited on 2026-03-14
    member.ballyplus(MEMBER, 10, "2026-03-14 10:00")
    # then the lot expires 12 calendar months later, 2027-03-14
    assert member.lots(MEMBER) == [("2026-03-14", "2027-03-14", 10)]


def test_a_lot_dated_29_february_expires_on_1_march(member):
    # when 10 points are credited on 2028-02-29 (a leap day)
    member.ballyplus(MEMBER, 10, "2028-02-29 10:00")
    # then 12 months later, 2029-02-29, does not exist: the expiry moves to 2029-03-01
    assert member.lots(MEMBER) == [("2028-02-29", "2029-03-01", 10)]


def test_a_tick_the_day_before_the_expiry_leaves_the_lot(member):
    # given 10 points in a lot dated 2026-03-14 (expiry 2027-03-14)
    member.ballyplus(MEMBER, 10, "2026-03-14 10:00")
    # when the tick of 2027-03-13 runs
    report = member.tick("2027-03-13")
    # then nothing expires
    assert report.expired_points == 0
    assert member.balance(MEMBER) == 10


def test_the_tick_of_the_expiry_date_removes_the_points_left_in_the_lot(member):
    # given 10 points in a lot dated 2026-03-14 (expiry 2027-03-14 00:00)
    member.ballyplus(MEMBER, 10, "2026-03-14 10:00")
    # when the tick of 2027-03-14 (00:00, at the expiry) runs
    report = member.tick("2027-03-14")
    # then the 10 points expire
    assert report.expired_points == 10
    assert member.balance(MEMBER) == 0
    assert member.lots(MEMBER) == []
    entry = member.history(MEMBER)[-1]
    assert (entry["kind"], entry["points"], entry["reason"]) == ("expired", -10, "expiry")


def test_a_29_february_lot_survives_28_february_and_expires_on_1_march(member):
    # given 10 points in a lot dated 2028-02-29 (expiry 2029-03-01)
    member.ballyplus(MEMBER, 10, "2028-02-29 10:00")
    # when the tick of 2029-02-28 runs, nothing expires
    assert member.tick("2029-02-28").expired_points == 0
    assert member.balance(MEMBER) == 10
    # then the tick of 2029-03-01 expires the 10 points
    assert member.tick("2029-03-01").expired_points == 10
    assert member.balance(MEMBER) == 0


def test_a_late_tick_expires_every_lot_whose_expiry_has_passed_and_no_other(member):
    # given lots of 10 (2026-03-14), 5 (2026-05-01) and 7 (2026-09-01)
    member.ballyplus(MEMBER, 10, "2026-03-14 10:00")
    member.ballyplus(MEMBER, 5, "2026-05-01 10:00")
    member.ballyplus(MEMBER, 7, "2026-09-01 10:00")
    # when the first tick after them is 2027-06-01
    report = member.tick("2027-06-01")
    # then the lots expiring 2027-03-14 and 2027-05-01 go: 10 + 5 = 15; the 7 (2027-09-01) stay
    assert report.expired_points == 15
    assert member.lots(MEMBER) == [("2026-09-01", "2027-09-01", 7)]


def test_expiry_removes_only_the_points_left_in_a_lot(member):
    # given a receipt of mts_branded 30.00 on 2026-03-14: floor(30/3) = 10,
    # then 21.00 returned: net 9.00, floor(9/3) = 3, so 10 - 3 = 7 clawed back, 3 left
    member.purchase(MEMBER, "R1", [("1", "mts_branded", "30.00")], "2026-03-14 10:00")
    member.shop_return(MEMBER, "R1", [("1", "21.00")], "2026-03-20 10:00")
    # when the tick of 2027-03-14 runs
    report = member.tick("2027-03-14")
    # then the 3 points left expire (not the 10 credited)
    assert report.expired_points == 3
    assert member.balance(MEMBER) == 0


def test_a_debit_takes_from_the_lot_that_expires_first_not_the_one_credited_first(member):
    # given three lots: A) 5 dated 2026-03-10 (credited first), B) 5 dated 2026-03-05
    # (credited second, expires first), C) receipt of mts_branded 30.00 dated 2026-03-20: 10
    member.ballyplus(MEMBER, 5, "2026-03-10 10:00")
    member.ballyplus(MEMBER, 5, "2026-03-05 10:00")
    member.purchase(MEMBER, "R1", [("1", "mts_branded", "30.00")], "2026-03-20 10:00")
    # when 21.00 of the receipt is returned: net 9.00, floor(9/3) = 3, 10 - 3 = 7 due
    member.shop_return(MEMBER, "R1", [("1", "21.00")], "2026-03-25 10:00")
    # then the 7 come from B (expires 2027-03-05): 5, then A (2027-03-10): 2 -> A 3, C 10 left
    assert member.lots(MEMBER) == [("2026-03-10", "2027-03-10", 3), ("2026-03-20", "2027-03-20", 10)]
    assert member.balance(MEMBER) == 13


def test_a_debit_between_lots_expiring_the_same_day_takes_from_the_lot_credited_first(member):
    # given two lots dated 2026-03-05: first 5 Баллы Плюс points, then a receipt of
    # mts_branded 30.00 worth floor(30/3) = 10
    member.ballyplus(MEMBER, 5, "2026-03-05 09:00")
    member.purchase(MEMBER, "R1", [("1", "mts_branded", "30.00")], "2026-03-05 10:00")
    # when 24.00 of the receipt is returned: net 6.00, floor(6/3) = 2, 10 - 2 = 8 due
    member.shop_return(MEMBER, "R1", [("1", "24.00")], "2026-03-06 10:00")
    # then the 8 come from the Баллы Плюс lot (credited first): 5, then the shop lot: 3;
    # left: the shop lot with 10 - 3 = 7
    lots = [(lot["rule"], lot["remaining"]) for lot in member.runtime.reads.lots(MEMBER)]
    assert lots == [("shop", 7)]
