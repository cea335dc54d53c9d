"""Rule 4 — MGTS fixed-line services (`mgts_account_linked`, `mgts_bill`):
bills of a period are summed and settled on the 15th of the following month
at 00:00 Moscow for the msisdn linked at that moment, floor(total / 5); a
late bill is settled at the next tick as floor(new total / 5) minus what was
earned; a settlement waits for the link and the enrollment and is eligible
only if the enrollment time is at or before the settlement moment; lot date =
the 15th, also for late settlements.

Every expected number is worked out by hand from RULES.md in a comment."""
import pytest

MEMBER = "79990000401"
OTHER = "79990000402"
ACCOUNT = "MGTS-0001"


@pytest.fixture
def linked(programme):
    """An enrolled member whose MGTS account earns for it."""
    programme.enroll(MEMBER, "2026-01-01 00:00")
    programme.link_mgts(ACCOUNT, MEMBER, "2026-01-01 10:00")
    return programme


def test_a_bill_earns_nothing_until_its_period_is_settled(linked):
    # when a bill of 50.00 for January arrives
    report = linked.mgts_bill(ACCOUNT, "2026-01", "50.00", "2026-01-31 10:00")
    # then it is applied but nothing is credited yet
    assert report.outcomes == {"applied": 1}
    assert linked.balance(MEMBER) == 0


def test_bills_of_a_period_are_summed_and_settled_on_the_15th_of_the_following_month(linked):
    # given bills of 2.50 and 2.50 for January
    linked.mgts_bill(ACCOUNT, "2026-01", "2.50", "2026-01-20 10:00")
    linked.mgts_bill(ACCOUNT, "2026-01", "2.50", "2026-01-31 10:00")
    # when the tick of 15 February runs
    report = linked.tick("2026-02-15")
    # then January earns floor((2.50 + 2.50) / 5) = 1 point in a lot dated the 15th
    assert report.settled == 1
    assert linked.balance(MEMBER) == 1
    assert linked.lots(MEMBER) == [("2026-02-15", "2027-02-15", 1)]
    accrued = linked.history(MEMBER)[-1]
    assert (accrued["kind"], accrued["points"], accrued["rule"]) == ("accrued", 1, "mgts")


def test_a_tick_the_day_before_the_15th_settles_nothing(linked):
    # given a January bill of 50.00
    linked.mgts_bill(ACCOUNT, "2026-01", "50.00", "2026-01-31 10:00")
    # when the tick of 14 February runs (00:00 on the 14th is before 00:00 on the 15th)
    report = linked.tick("2026-02-14")
    # then nothing is settled
    assert report.settled == 0
    assert linked.balance(MEMBER) == 0
    # and the tick of the 15th settles it: floor(50 / 5) = 10
    assert linked.tick("2026-02-15").settled == 1
    assert linked.balance(MEMBER) == 10


def test_each_period_is_settled_on_its_own_total(linked):
    # given bills of 4.00 for January and 4.00 for February
    linked.mgts_bill(ACCOUNT, "2026-01", "4.00", "2026-01-31 10:00")
    linked.mgts_bill(ACCOUNT, "2026-02", "4.00", "2026-02-28 10:00")
    # when one back-fill tick of 15 March settles both (due 15 February and 15 March)
    report = linked.tick("2026-03-15")
    # then floor(4/5) + floor(4/5) = 0 + 0 = 0 (summed across periods: floor(8/5) = 1)
    assert report.settled == 2
    assert linked.balance(MEMBER) == 0


def test_the_period_is_the_bills_period_not_the_month_it_arrives_in(linked):
    # given a bill of 20.00 for January sent on 3 February
    linked.mgts_bill(ACCOUNT, "2026-01", "20.00", "2026-02-03 10:00")
    # when the tick of 15 February runs
    linked.tick("2026-02-15")
    # then it is settled with January: floor(20 / 5) = 4
    assert linked.balance(MEMBER) == 4


def test_a_late_bill_is_settled_at_the_next_tick_as_the_new_total_minus_what_was_earned(linked):
    # given a January bill of 12.00 settled on 15 February: floor(12 / 5) = 2
    linked.mgts_bill(ACCOUNT, "2026-01", "12.00", "2026-01-31 10:00")
    linked.tick("2026-02-15")
    assert linked.balance(MEMBER) == 2
    # when a late January bill of 3.00 arrives
    linked.mgts_bill(ACCOUNT, "2026-01", "3.00", "2026-02-18 10:00")
    # then nothing changes before the next tick
    assert linked.balance(MEMBER) == 2
    # and the next tick credits floor((12 + 3) / 5) - 2 = 3 - 2 = 1, its lot dated the 15th
    report = linked.tick("2026-02-19")
    assert report.settled == 1
    assert linked.balance(MEMBER) == 3
    assert linked.lots(MEMBER) == [("2026-02-15", "2027-02-15", 2), ("2026-02-15", "2027-02-15", 1)]


def test_a_late_bill_that_does_not_lift_the_periods_points_credits_nothing(linked):
    # given a January bill of 12.00 settled on 15 February: floor(12 / 5) = 2
    linked.mgts_bill(ACCOUNT, "2026-01", "12.00", "2026-01-31 10:00")
    linked.tick("2026-02-15")
    # when a late bill of 2.00 arrives and the next tick runs
    linked.mgts_bill(ACCOUNT, "2026-01", "2.00", "2026-02-18 10:00")
    linked.tick("2026-02-19")
    # then floor(14 / 5) - 2 = 2 - 2 = 0: nothing more
    assert linked.balance(MEMBER) == 2
    assert linked.lots(MEMBER) == [("2026-02-15", "2027-02-15", 2)]


def test_a_late_bill_settled_in_a_later_month_still_dates_its_lot_on_the_15th(linked):
    # given a January bill of 10.00 settled on 15 February: floor(10 / 5) = 2
    linked.mgts_bill(ACCOUNT, "2026-01", "10.00", "2026-01-31 10:00")
    linked.tick("2026-02-15")
    # when a late January bill of 25.00 arrives in April and the tick of 2 April runs
    linked.mgts_bill(ACCOUNT, "2026-01", "25.00", "2026-04-01 10:00")
    linked.tick("2026-04-02")
    # then floor(35 / 5) - 2 = 7 - 2 = 5, in a lot dated 2026-02-15 (expiry 2027-02-15)
    assert linked.balance(MEMBER) == 7
    assert linked.lots(MEMBER) == [("2026-02-15", "2027-02-15", 2), ("2026-02-15", "2027-02-15", 5)]


def test_a_settlement_without_a_link_waits_for_the_first_tick_after_the_link(programme):
    # given an enrolled member and a January bill of 10.00 on an MGTS account with no link
    programme.enroll(MEMBER, "2026-01-01 00:00")
    programme.mgts_bill(ACCOUNT, "2026-01", "10.00", "2026-01-31 10:00")
    # when the tick of 15 February runs, nothing is settled
    assert programme.tick("2026-02-15").settled == 0
    assert programme.balance(MEMBER) == 0
    # and once the link arrives (20 February) the next tick settles: floor(10 / 5) = 2
    programme.link_mgts(ACCOUNT, MEMBER, "2026-02-20 10:00")
    assert programme.tick("2026-02-21").settled == 1
    # then the lot is dated the 15th, not the day of the tick
    assert programme.lots(MEMBER) == [("2026-02-15", "2027-02-15", 2)]


def test_a_settlement_waits_for_the_linked_member_to_enroll(programme):
    # given a link to an msisdn not enrolled yet and a January bill of 10.00
    programme.link_mgts(ACCOUNT, MEMBER, "2026-01-01 10:00")
    programme.mgts_bill(ACCOUNT, "2026-01", "10.00", "2026-01-31 10:00")
    # when the tick of 15 February runs, nothing is settled
    assert programme.tick("2026-02-15").settled == 0
    # and the enrollment (of 10 February, before the settlement moment) arrives afterwards
    programme.enroll(MEMBER, "2026-02-10 10:00")
    programme.tick("2026-02-16")
    # then the next tick settles it: floor(10 / 5) = 2 in a lot dated the 15th
    assert programme.balance(MEMBER) == 2
    assert programme.lots(MEMBER) == [("2026-02-15", "2027-02-15", 2)]


def test_a_settlement_waits_while_the_linked_msisdn_has_only_held_events(programme):
    # given a link to an msisdn not enrolled yet, which has a held Баллы Плюс transfer, and a
    # January bill of 10.00
    programme.link_mgts(ACCOUNT, MEMBER, "2026-01-01 10:00")
    assert programme.ballyplus(MEMBER, 3, "2026-02-12 10:00").outcomes == {"held": 1}
    programme.mgts_bill(ACCOUNT, "2026-01", "10.00", "2026-01-31 10:00")
    # when the tick of 15 February runs, nothing is settled
    assert programme.tick("2026-02-15").settled == 0
    # and the enrollment of 10 February arrives, then the next tick runs
    programme.enroll(MEMBER, "2026-02-10 10:00")
    assert programme.tick("2026-02-16").settled == 1
    # then the held transfer earns 3 and January floor(10 / 5) = 2 dated the 15th: balance 5
    assert programme.lots(MEMBER) == [("2026-02-12", "2027-02-12", 3), ("2026-02-15", "2027-02-15", 2)]


def test_a_member_enrolled_exactly_at_the_settlement_moment_is_eligible(programme):
    # given a link and a January bill of 10.00, and the member enrolled at 2026-02-15 00:00 Moscow
    programme.link_mgts(ACCOUNT, MEMBER, "2026-01-01 10:00")
    programme.mgts_bill(ACCOUNT, "2026-01", "10.00", "2026-01-31 10:00")
    programme.enroll(MEMBER, "2026-02-14T21:00:00+00:00")  # = 2026-02-15T00:00+03:00
    # when the tick of 15 February runs
    programme.tick("2026-02-15")
    # then enrollment time <= settlement moment: floor(10 / 5) = 2
    assert programme.balance(MEMBER) == 2


def test_a_member_enrolled_after_the_settlement_moment_is_not_eligible(programme):
    # given a link and a January bill of 10.00, and the member enrolled at 2026-02-15 00:01
    programme.link_mgts(ACCOUNT, MEMBER, "2026-01-01 10:00")
    programme.mgts_bill(ACCOUNT, "2026-01", "10.00", "2026-01-31 10:00")
    programme.enroll(MEMBER, "2026-02-15 00:01")
    # when the ticks of 15 and 16 February run
    programme.tick("2026-02-15")
    programme.tick("2026-02-16")
    # then the enrollment is after the settlement moment (00:00 on the 15th): January earns 0
    assert programme.balance(MEMBER) == 0
    assert programme.lots(MEMBER) == []


def test_a_later_link_replaces_the_earlier_one(programme):
    # given two enrolled members; the account linked to MEMBER on 1 January, then to OTHER on 20 January
    programme.enroll(MEMBER, "2026-01-01 00:00")
    programme.enroll(OTHER, "2026-01-01 00:00")
    programme.link_mgts(ACCOUNT, MEMBER, "2026-01-01 10:00")
    programme.link_mgts(ACCOUNT, OTHER, "2026-01-20 10:00")
    programme.mgts_bill(ACCOUNT, "2026-01", "10.00", "2026-01-31 10:00")
    # when January is settled on 15 February
    programme.tick("2026-02-15")
    # then OTHER, linked at that moment, earns floor(10 / 5) = 2; MEMBER nothing
    assert programme.balances() == {MEMBER: 0, OTHER: 2}


def test_an_older_link_arriving_late_does_not_replace_a_newer_one(programme):
    # given two enrolled members; the link to OTHER (20 January) arrives before the link to MEMBER (1 January)
    programme.enroll(MEMBER, "2026-01-01 00:00")
    programme.enroll(OTHER, "2026-01-01 00:00")
    programme.link_mgts(ACCOUNT, OTHER, "2026-01-20 10:00")
    programme.link_mgts(ACCOUNT, MEMBER, "2026-01-01 10:00")
    programme.mgts_bill(ACCOUNT, "2026-01", "10.00", "2026-01-31 10:00")
    # when January is settled on 15 February
    programme.tick("2026-02-15")
    # then the later link (by occurred_at) is OTHER's: OTHER earns floor(10 / 5) = 2
    assert programme.balances() == {MEMBER: 0, OTHER: 2}


def test_a_period_earns_for_the_msisdn_linked_at_the_settlement_moment_not_one_linked_after_it(programme):
    # given two enrolled members; the account is linked to MEMBER on 1 January; January bill 10.00;
    # and a link to OTHER that occurred on 20 February (after the settlement moment, 15 February 00:00)
    # is received before the back-fill tick of the 15th runs
    programme.enroll(MEMBER, "2026-01-01 00:00")
    programme.enroll(OTHER, "2026-01-01 00:00")
    programme.link_mgts(ACCOUNT, MEMBER, "2026-01-01 10:00")
    programme.mgts_bill(ACCOUNT, "2026-01", "10.00", "2026-01-31 10:00")
    programme.link_mgts(ACCOUNT, OTHER, "2026-02-20 10:00")
    # when the tick of 15 February runs
    programme.tick("2026-02-15")
    # then RULES.md 4: "it earns floor(total / 5) points ... for the msisdn linked at that moment"
    # -- at 2026-02-15 00:00 the link was MEMBER's: MEMBER earns floor(10 / 5) = 2, OTHER 0
    assert programme.balances() == {MEMBER: 2, OTHER: 0}


def test_bills_of_two_mgts_accounts_are_not_summed_together(linked):
    # given a second MGTS account linked to the same member; January bills of 2.50 on each
    linked.link_mgts("MGTS-0002", MEMBER, "2026-01-01 10:00")
    linked.mgts_bill(ACCOUNT, "2026-01", "2.50", "2026-01-31 10:00")
    linked.mgts_bill("MGTS-0002", "2026-01", "2.50", "2026-01-31 10:00")
    # when January is settled
    linked.tick("2026-02-15")
    # then each account's period earns floor(2.50 / 5) = 0: 0 in all (summed: floor(5/5) = 1)
    assert linked.balance(MEMBER) == 0


def test_december_is_settled_on_15_january_of_the_next_year(linked):
    # given a December 2025 bill of 25.00
    linked.mgts_bill(ACCOUNT, "2025-12", "25.00", "2025-12-31 10:00")
    # when the ticks of 14 and 15 January 2026 run
    assert linked.tick("2026-01-14").settled == 0
    assert linked.tick("2026-01-15").settled == 1
    # then floor(25 / 5) = 5 in a lot dated 2026-01-15
    assert linked.lots(MEMBER) == [("2026-01-15", "2027-01-15", 5)]
