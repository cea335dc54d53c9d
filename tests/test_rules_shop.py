"""Rule 3 — MTS shops (`shop_purchase`, `shop_return`): receipt points =
floor(Σ net mts_branded / 3) + floor(Σ net other / 30), excluded 0; a return
recomputes on net amounts and takes the difference back; unknown_receipt,
receipt_member_mismatch and return_exceeds_purchase are rejected and change
nothing; lot date = the purchase's date.

Every expected number is worked out by hand from RULES.md in a comment."""
import pytest

MEMBER = "79990000301"
OTHER = "79990000302"


@pytest.fixture
def member(programme):
    programme.enroll(MEMBER, "2026-01-01 00:00")
    return programme


def _snapshot(programme, msisdn):
    return programme.balance(msisdn), programme.lots(msisdn), len(programme.history(msisdn))


def test_mts_branded_lines_earn_one_point_per_3_rubles(member):
    # when a receipt holds one mts_branded line of 10.00
    report = member.purchase(MEMBER, "R1", [("1", "mts_branded", "10.00")], "2026-01-05 10:00")
    # then floor(10.00 / 3) = 3
    assert report.outcomes == {"applied": 1}
    assert member.balance(MEMBER) == 3


def test_other_lines_earn_one_point_per_30_rubles(member):
    # when a receipt holds one `other` line of 89.99
    member.purchase(MEMBER, "R1", [("1", "other", "89.99")], "2026-01-05 10:00")
    # then floor(89.99 / 30) = 2
    assert member.balance(MEMBER) == 2


def test_excluded_lines_earn_nothing(member):
    # when a receipt holds one `excluded` line of 5000.00 (a tariff plan, say)
    report = member.purchase(MEMBER, "R1", [("1", "excluded", "5000.00")], "2026-01-05 10:00")
    # then it is applied and earns 0: no lot is formed
    assert report.outcomes == {"applied": 1}
    assert member.balance(MEMBER) == 0
    assert member.lots(MEMBER) == []


def test_receipt_points_floor_the_sum_of_a_categorys_lines_not_each_line(member):
    # when a receipt holds mts_branded 2.00 + 2.00 and other 20.00 + 20.00
    member.purchase(MEMBER, "R1", [
        ("1", "mts_branded", "2.00"), ("2", "mts_branded", "2.00"),
        ("3", "other", "20.00"), ("4", "other", "20.00"),
    ], "2026-01-05 10:00")
    # then floor(4.00 / 3) + floor(40.00 / 30) = 1 + 1 = 2 (per line it would be 0)
    assert member.balance(MEMBER) == 2


def test_the_two_categories_are_floored_separately(member):
    # when a receipt holds mts_branded 2.00 and other 29.00
    member.purchase(MEMBER, "R1", [("1", "mts_branded", "2.00"), ("2", "other", "29.00")], "2026-01-05 10:00")
    # then floor(2/3) + floor(29/30) = 0 + 0 = 0 (2/3 + 29/30 = 1.63 if mixed before flooring)
    assert member.balance(MEMBER) == 0


def test_points_are_floored_per_receipt_not_over_several_receipts(member):
    # when two receipts each hold mts_branded 2.00
    member.purchase(MEMBER, "R1", [("1", "mts_branded", "2.00")], "2026-01-05 10:00")
    member.purchase(MEMBER, "R2", [("1", "mts_branded", "2.00")], "2026-01-05 11:00")
    # then each receipt earns floor(2.00 / 3) = 0, so 0 in all (summed over receipts: floor(4/3) = 1)
    assert member.balance(MEMBER) == 0


def test_a_mixed_receipt_earns_its_categories_and_forms_one_lot_on_the_purchase_date(member):
    # when a receipt holds mts_branded 10.00, other 60.00 and excluded 500.00 on 5 January
    member.purchase(MEMBER, "R1", [
        ("1", "mts_branded", "10.00"), ("2", "other", "60.00"), ("3", "excluded", "500.00"),
    ], "2026-01-05 10:00")
    # then floor(10/3) + floor(60/30) + 0 = 3 + 2 = 5, one lot dated 2026-01-05 expiring 2027-01-05
    assert member.lots(MEMBER) == [("2026-01-05", "2027-01-05", 5)]


def test_the_lot_date_is_the_moscow_date_of_the_purchase(member):
    # when a purchase of mts_branded 30.00 occurs at 2026-03-13T21:30Z = 2026-03-14 00:30 Moscow
    member.purchase(MEMBER, "R1", [("1", "mts_branded", "30.00")], "2026-03-13T21:30:00+00:00")
    # then floor(30/3) = 10 in a lot dated 2026-03-14 expiring 2027-03-14
    assert member.lots(MEMBER) == [("2026-03-14", "2027-03-14", 10)]


def test_a_return_recomputes_the_receipt_on_net_amounts_and_claws_back_the_difference(member):
    # given a receipt of mts_branded 2.00 + 2.00: floor(4.00 / 3) = 1 point
    member.purchase(MEMBER, "R1", [("1", "mts_branded", "2.00"), ("2", "mts_branded", "2.00")], "2026-01-05 10:00")
    # when line 1 (2.00) is returned
    report = member.shop_return(MEMBER, "R1", [("1", "2.00")], "2026-01-06 10:00", event_id="ret-1")
    # then net branded is 2.00: floor(2.00 / 3) = 0, so 1 - 0 = 1 point is clawed back
    # (the returned line alone, floor(2.00 / 3) = 0, would take nothing back)
    assert report.outcomes == {"applied": 1}
    assert member.balance(MEMBER) == 0
    clawback = member.history(MEMBER)[-1]
    assert (clawback["kind"], clawback["points"], clawback["reason"], clawback["source_event_id"]) == (
        "clawed_back", -1, "shop_return", "ret-1"
    )


def test_small_returns_claw_back_once_the_net_amount_loses_a_whole_point(member):
    # given a receipt of mts_branded 10.00: floor(10 / 3) = 3 points
    member.purchase(MEMBER, "R1", [("1", "mts_branded", "10.00")], "2026-01-05 10:00")
    # when 1.00 is returned: net 9.00, floor(9 / 3) = 3, difference 3 - 3 = 0
    member.shop_return(MEMBER, "R1", [("1", "1.00")], "2026-01-06 10:00")
    assert member.balance(MEMBER) == 3
    # and 1.00 more is returned: net 8.00, floor(8 / 3) = 2, difference 3 - 2 = 1
    member.shop_return(MEMBER, "R1", [("1", "1.00")], "2026-01-07 10:00")
    # then 1 point in all has been taken back
    assert member.balance(MEMBER) == 2
    assert member.lots(MEMBER) == [("2026-01-05", "2027-01-05", 2)]


def test_returning_an_other_line_recomputes_that_category_on_the_net_amount(member):
    # given a receipt of other 45.00 + other 20.00: floor(65 / 30) = 2
    member.purchase(MEMBER, "R1", [("1", "other", "45.00"), ("2", "other", "20.00")], "2026-01-05 10:00")
    # when 10.00 of line 1 is returned: net other 35.00 + 20.00 = 55.00, floor(55 / 30) = 1
    member.shop_return(MEMBER, "R1", [("1", "10.00")], "2026-01-06 10:00")
    # then 2 - 1 = 1 point is clawed back
    assert member.balance(MEMBER) == 1


def test_returning_an_excluded_line_takes_nothing_back(member):
    # given a receipt of mts_branded 3.00 + excluded 1000.00: floor(3/3) + 0 = 1
    member.purchase(MEMBER, "R1", [("1", "mts_branded", "3.00"), ("2", "excluded", "1000.00")], "2026-01-05 10:00")
    # when the excluded line is returned in full
    report = member.shop_return(MEMBER, "R1", [("2", "1000.00")], "2026-01-06 10:00")
    # then net is branded 3.00: still 1 point, nothing clawed back
    assert report.outcomes == {"applied": 1}
    assert member.balance(MEMBER) == 1


def test_a_return_for_an_unknown_receipt_is_rejected_and_changes_nothing(member):
    # given a member with a receipt R1 worth floor(30/3) = 10 points
    member.purchase(MEMBER, "R1", [("1", "mts_branded", "30.00")], "2026-01-05 10:00")
    before = _snapshot(member, MEMBER)
    # when a return names receipt R-unknown
    report = member.shop_return(MEMBER, "R-unknown", [("1", "30.00")], "2026-01-06 10:00")
    # then it is rejected as unknown_receipt and nothing changes
    assert report.outcomes == {"rejected": 1}
    assert report.rejected == {"unknown_receipt": 1}
    assert member.runtime.reads.rejections_by_reason() == {"unknown_receipt": 1}
    assert _snapshot(member, MEMBER) == before


def test_a_return_of_another_members_receipt_is_rejected_and_changes_nothing(member):
    # given MEMBER's receipt R1 (floor(30/3) = 10 points) and another enrolled member with 5 points
    member.enroll(OTHER, "2026-01-01 00:00")
    member.purchase(MEMBER, "R1", [("1", "mts_branded", "30.00")], "2026-01-05 10:00")
    member.purchase(OTHER, "R2", [("1", "mts_branded", "15.00")], "2026-01-05 10:00")
    before = (_snapshot(member, MEMBER), _snapshot(member, OTHER))
    # when OTHER returns R1's line
    report = member.shop_return(OTHER, "R1", [("1", "30.00")], "2026-01-06 10:00")
    # then it is rejected as receipt_member_mismatch and nothing changes on either account
    assert report.rejected == {"receipt_member_mismatch": 1}
    assert member.runtime.reads.rejections_by_reason() == {"receipt_member_mismatch": 1}
    assert (_snapshot(member, MEMBER), _snapshot(member, OTHER)) == before
    # and the receipt still holds all 30.00 for its own member: returning it takes 10 back
    assert member.shop_return(MEMBER, "R1", [("1", "30.00")], "2026-01-07 10:00").outcomes == {"applied": 1}
    assert member.balance(MEMBER) == 0


def test_a_return_beyond_what_the_line_still_holds_is_rejected_and_changes_nothing(member):
    # given a receipt of mts_branded 10.00 (floor(10/3) = 3) of which 6.00 was returned:
    # net 4.00, floor(4/3) = 1, so 3 - 1 = 2 clawed back, balance 1
    member.purchase(MEMBER, "R1", [("1", "mts_branded", "10.00")], "2026-01-05 10:00")
    member.shop_return(MEMBER, "R1", [("1", "6.00")], "2026-01-06 10:00")
    assert member.balance(MEMBER) == 1
    before = _snapshot(member, MEMBER)
    # when 5.00 more is returned, but the line holds only 10.00 - 6.00 = 4.00
    report = member.shop_return(MEMBER, "R1", [("1", "5.00")], "2026-01-07 10:00")
    # then it is rejected as return_exceeds_purchase and nothing changes
    assert report.rejected == {"return_exceeds_purchase": 1}
    assert member.runtime.reads.rejections_by_reason() == {"return_exceeds_purchase": 1}
    assert _snapshot(member, MEMBER) == before
    # and the 4.00 the line still holds can be returned: net 0, 0 points, 1 more clawed back
    assert member.shop_return(MEMBER, "R1", [("1", "4.00")], "2026-01-08 10:00").outcomes == {"applied": 1}
    assert member.balance(MEMBER) == 0


def test_a_return_with_one_line_beyond_its_purchase_is_rejected_whole(member):
    # given a receipt of mts_branded 3.00 + 3.00: floor(6/3) = 2
    member.purchase(MEMBER, "R1", [("1", "mts_branded", "3.00"), ("2", "mts_branded", "3.00")], "2026-01-05 10:00")
    before = _snapshot(member, MEMBER)
    # when a return asks line 1: 3.00 (fine) and line 2: 4.00 (holds 3.00)
    report = member.shop_return(MEMBER, "R1", [("1", "3.00"), ("2", "4.00")], "2026-01-06 10:00")
    # then the whole return is rejected; line 1 is not returned either
    assert report.rejected == {"return_exceeds_purchase": 1}
    assert _snapshot(member, MEMBER) == before
    # and line 1 alone can still be returned in full: net 3.00, floor(3/3) = 1, 2 - 1 = 1 back
    member.shop_return(MEMBER, "R1", [("1", "3.00")], "2026-01-07 10:00")
    assert member.balance(MEMBER) == 1


def test_a_return_naming_a_line_that_is_not_on_the_receipt_is_rejected_as_exceeding_it(member):
    # given a receipt with line 1 only (floor(30/3) = 10)
    member.purchase(MEMBER, "R1", [("1", "mts_branded", "30.00")], "2026-01-05 10:00")
    before = _snapshot(member, MEMBER)
    # when a return names line 9: a line that holds nothing
    report = member.shop_return(MEMBER, "R1", [("9", "1.00")], "2026-01-06 10:00")
    # then it asks beyond what that line holds (0.00): return_exceeds_purchase, nothing changed
    assert report.rejected == {"return_exceeds_purchase": 1}
    assert _snapshot(member, MEMBER) == before


def test_a_return_of_a_receipt_bought_before_enrollment_takes_nothing_back(programme):
    # given a member enrolled on 10 January whose receipt of 5 January earned nothing
    programme.enroll(MEMBER, "2026-01-10 09:00")
    programme.ballyplus(MEMBER, 5, "2026-01-11 10:00")
    report = programme.purchase(MEMBER, "R1", [("1", "mts_branded", "30.00")], "2026-01-05 10:00")
    assert report.outcomes == {"not_eligible": 1}
    # when the receipt is returned in full
    report = programme.shop_return(MEMBER, "R1", [("1", "30.00")], "2026-01-12 10:00")
    # then the receipt's points were 0 and stay 0: 0 - 0 = 0 taken back; balance 5 remains
    assert report.outcomes == {"applied": 1}
    assert programme.balance(MEMBER) == 5
