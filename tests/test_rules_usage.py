"""Rule 2 — Communication services (`usage_charged`): per member and Moscow
calendar month, over all services, month points = floor(total / 5); each
event credits the increase of that figure; lot date = the event's date.

Every expected number is worked out by hand from RULES.md in a comment."""
import pytest

MEMBER = "79990000201"


@pytest.fixture
def member(programme):
    programme.enroll(MEMBER, "2026-01-01 00:00")
    return programme


def test_charges_of_2_50_and_2_50_in_one_month_earn_one_point(member):
    # given an enrolled member
    # when 2.50 and then 2.50 are charged in January
    first = member.usage(MEMBER, "2.50", "2026-01-05 10:00")
    second = member.usage(MEMBER, "2.50", "2026-01-06 10:00", event_id="u-second")
    # then: floor(2.50 / 5) = 0 after the first, floor(5.00 / 5) = 1 after the second
    assert first.outcomes == {"applied": 1}
    assert second.outcomes == {"applied": 1}
    assert member.balance(MEMBER) == 1
    accrued = [h for h in member.history(MEMBER) if h["kind"] == "accrued"]
    assert [(h["points"], h["rule"], h["source_event_id"]) for h in accrued] == [(1, "usage", "u-second")]


def test_each_charge_credits_only_the_increase_of_the_months_figure(member):
    # given an enrolled member
    # when 4.00, 4.00, 4.00 and 3.00 are charged in one month
    for day, amount in (("05", "4.00"), ("06", "4.00"), ("07", "4.00"), ("08", "3.00")):
        member.usage(MEMBER, amount, f"2026-01-{day} 10:00")
    # then the month figure goes floor(4/5)=0, floor(8/5)=1, floor(12/5)=2, floor(15/5)=3,
    # so the credits are 0, +1, +1, +1 and the balance is 3 (per charge it would be 0)
    accrued = [h["points"] for h in member.history(MEMBER) if h["kind"] == "accrued"]
    assert accrued == [1, 1, 1]
    assert member.balance(MEMBER) == 3


def test_fifty_charges_of_ten_kopecks_earn_exactly_one_point(member):
    # given an enrolled member
    # when 50 charges of 0.10 arrive in one month (in one batch)
    charges = [
        member.message("usage_charged", "2026-01-05 10:00", msisdn=MEMBER, service="mobile", amount="0.10")
        for _ in range(50)
    ]
    report = member.send(*charges)
    # then 50 x 0.10 = 5.00 exactly (decimal, no float drift): floor(5.00 / 5) = 1
    assert report.outcomes == {"applied": 50}
    assert member.balance(MEMBER) == 1


def test_all_four_services_of_a_month_count_together(member):
    # given an enrolled member
    # when mobile 2.00, mobile_internet 1.00, home_internet 1.00 and tv 1.00 are charged in January
    for service, amount in (("mobile", "2.00"), ("mobile_internet", "1.00"), ("home_internet", "1.00"), ("tv", "1.00")):
        member.usage(MEMBER, amount, "2026-01-05 10:00", service=service)
    # then the month total is 2 + 1 + 1 + 1 = 5.00: floor(5 / 5) = 1 (per service: 0 each)
    assert member.balance(MEMBER) == 1


def test_charges_in_different_months_are_not_summed(member):
    # given an enrolled member
    # when 2.50 is charged in January and 2.50 in February
    member.usage(MEMBER, "2.50", "2026-01-20 10:00")
    member.usage(MEMBER, "2.50", "2026-02-03 10:00")
    # then each month is floor(2.50 / 5) = 0
    assert member.balance(MEMBER) == 0


def test_the_month_of_a_charge_is_its_moscow_month_not_its_utc_month(member):
    # given an enrolled member charged 2.50 on 31 January 20:00 Moscow
    member.usage(MEMBER, "2.50", "2026-01-31 20:00")
    # when 2.50 is charged at 2026-01-31T22:30Z, which is 2026-02-01 01:30 Moscow
    member.usage(MEMBER, "2.50", "2026-01-31T22:30:00+00:00")
    # then January holds 2.50 and February 2.50: 0 + 0 = 0 points
    # (by UTC month both would be January: floor(5.00 / 5) = 1)
    assert member.balance(MEMBER) == 0


def test_a_late_evening_utc_charge_still_in_the_moscow_month_is_summed_with_it(member):
    # given an enrolled member charged 2.50 on 31 January 20:00 Moscow
    member.usage(MEMBER, "2.50", "2026-01-31 20:00")
    # when 2.50 is charged at 2026-01-31T20:30Z, which is 2026-01-31 23:30 Moscow
    member.usage(MEMBER, "2.50", "2026-01-31T20:30:00+00:00")
    # then January holds 5.00: floor(5.00 / 5) = 1, lot date 31 January, expiry 12 months on
    assert member.balance(MEMBER) == 1
    assert member.lots(MEMBER) == [("2026-01-31", "2027-01-31", 1)]


def test_the_lot_date_is_the_moscow_date_of_the_charge(member):
    # given an enrolled member
    # when 5.00 is charged at 2026-03-13T21:30Z, which is 2026-03-14 00:30 Moscow
    member.usage(MEMBER, "5.00", "2026-03-13T21:30:00+00:00")
    # then 1 point in a lot dated 2026-03-14 expiring 2027-03-14 (rule 7's example)
    assert member.lots(MEMBER) == [("2026-03-14", "2027-03-14", 1)]


def test_a_charge_that_lifts_the_figure_by_several_points_credits_them_in_one_lot(member):
    # given an enrolled member charged 3.00 on 5 January (floor(3/5) = 0)
    member.usage(MEMBER, "3.00", "2026-01-05 10:00")
    # when 349.90 is charged on 9 January
    member.usage(MEMBER, "349.90", "2026-01-09 10:00")
    # then the figure goes floor(3.00/5)=0 -> floor(352.90/5)=70: one credit of 70 dated 9 January
    assert member.lots(MEMBER) == [("2026-01-09", "2027-01-09", 70)]
    assert member.balance(MEMBER) == 70
