"""Rule 5 — MTS Bank / MTS Dengi card (`card_purchase`, `card_refund`):
spend(M) = purchases − refunds of Moscow month M (from the enrollment time
on), floored at 0, over all cards; the rate of M is set by spend(M−1)
(< 10 000 → 1/30, 10 000 ≤ … < 30 000 → 1/20, ≥ 30 000 → 1/10); M is settled
on the 25th of the following month at 00:00 Moscow; a late event re-settles M
and, if M's spend changes the rate of a settled M+1, M+1 as well; lot date =
the 25th.

Every expected number is worked out by hand from RULES.md in a comment."""
import pytest

MEMBER = "79990000501"


@pytest.fixture
def member(programme):
    programme.enroll(MEMBER, "2025-12-01 00:00")
    return programme


def test_a_month_is_settled_on_the_25th_of_the_following_month(member):
    # given card purchases of 300.00 in January (December spend 0 -> 1 point per 30)
    report = member.card_purchase(MEMBER, "300.00", "2026-01-10 10:00")
    assert report.outcomes == {"applied": 1}
    assert member.balance(MEMBER) == 0
    # when the tick of 25 February runs
    report = member.tick("2026-02-25")
    # then floor(300 / 30) = 10 points in a lot dated 2026-02-25
    assert report.settled == 1
    assert member.balance(MEMBER) == 10
    assert member.lots(MEMBER) == [("2026-02-25", "2027-02-25", 10)]
    accrued = member.history(MEMBER)[-1]
    assert (accrued["kind"], accrued["points"], accrued["rule"]) == ("accrued", 10, "card")


def test_a_tick_the_day_before_the_25th_settles_nothing(member):
    # given January card spend of 300.00
    member.card_purchase(MEMBER, "300.00", "2026-01-10 10:00")
    # when the tick of 24 February runs
    report = member.tick("2026-02-24")
    # then nothing is settled; the 25th settles floor(300 / 30) = 10
    assert report.settled == 0
    assert member.balance(MEMBER) == 0
    member.tick("2026-02-25")
    assert member.balance(MEMBER) == 10


def test_the_spend_of_all_a_members_cards_is_one_figure(member):
    # given 15.00 on card-1 and 15.00 on card-2 in January
    member.card_purchase(MEMBER, "15.00", "2026-01-10 10:00", card_id="card-1")
    member.card_purchase(MEMBER, "15.00", "2026-01-11 10:00", card_id="card-2")
    # when January is settled
    member.tick("2026-02-25")
    # then floor((15 + 15) / 30) = 1 (per card: 0 + 0)
    assert member.balance(MEMBER) == 1


def test_refunds_of_the_month_are_subtracted_from_its_spend(member):
    # given January purchases of 300.00 and a January refund of 60.00
    member.card_purchase(MEMBER, "300.00", "2026-01-10 10:00")
    member.card_refund(MEMBER, "60.00", "2026-01-15 10:00")
    # when January is settled
    member.tick("2026-02-25")
    # then floor((300 - 60) / 30) = floor(240 / 30) = 8
    assert member.balance(MEMBER) == 8


def test_refunds_beyond_the_months_purchases_floor_its_spend_at_zero(member):
    # given December purchases of 3000.00, settled on 25 January: floor(3000 / 30) = 100
    member.card_purchase(MEMBER, "3000.00", "2025-12-10 10:00")
    member.tick("2026-01-25")
    assert member.balance(MEMBER) == 100
    # and in January a purchase of 300.00 and a refund of 3000.00 (of December's purchase)
    member.card_purchase(MEMBER, "300.00", "2026-01-10 10:00")
    member.card_refund(MEMBER, "3000.00", "2026-01-12 10:00")
    # when January is settled
    member.tick("2026-02-25")
    # then spend(January) = max(300 - 3000, 0) = 0: 0 points, and nothing is taken from December's 100
    assert member.balance(MEMBER) == 100


def test_the_month_of_a_card_event_is_its_moscow_month(member):
    # given a purchase of 300.00 at 2026-01-31T21:30Z, which is 2026-02-01 00:30 Moscow
    member.card_purchase(MEMBER, "300.00", "2026-01-31T21:30:00+00:00")
    # when January is settled on 25 February, it has no spend
    member.tick("2026-02-25")
    assert member.balance(MEMBER) == 0
    # then February (rate by January's spend 0: 1 per 30) is settled on 25 March: floor(300 / 30) = 10
    member.tick("2026-03-25")
    assert member.lots(MEMBER) == [("2026-03-25", "2027-03-25", 10)]


def test_the_rate_of_a_month_is_set_by_the_month_before_not_by_the_month_itself(member):
    # given no spend in January and 30 000.00 in February
    member.card_purchase(MEMBER, "30000.00", "2026-02-10 10:00")
    # when February is settled on 25 March
    member.tick("2026-03-25")
    # then spend(January) = 0 < 10 000 sets 1 per 30: floor(30000 / 30) = 1000 (not 30000 / 10 = 3000)
    assert member.balance(MEMBER) == 1000


def test_spend_of_exactly_10000_rubles_sets_the_next_months_rate_to_one_point_per_20(member):
    # given January spend 10 000.00 and February spend 600.00
    member.card_purchase(MEMBER, "10000.00", "2026-01-10 10:00")
    member.card_purchase(MEMBER, "600.00", "2026-02-10 10:00")
    # when both are settled (25 February and 25 March)
    member.tick("2026-02-25")
    member.tick("2026-03-25")
    # then January (rate by December 0: 1/30) floor(10000 / 30) = 333;
    # February (10 000 <= spend(January) < 30 000: 1/20) floor(600 / 20) = 30; total 363
    assert member.lots(MEMBER) == [("2026-02-25", "2027-02-25", 333), ("2026-03-25", "2027-03-25", 30)]
    assert member.balance(MEMBER) == 363


def test_spend_just_below_10000_rubles_keeps_the_next_months_rate_at_one_point_per_30(member):
    # given January spend 9 999.99 and February spend 600.00
    member.card_purchase(MEMBER, "9999.99", "2026-01-10 10:00")
    member.card_purchase(MEMBER, "600.00", "2026-02-10 10:00")
    # when both are settled
    member.tick("2026-03-25")
    # then January floor(9999.99 / 30) = 333 (333 x 30 = 9990);
    # February (spend(January) < 10 000: 1/30) floor(600 / 30) = 20; total 353
    assert member.lots(MEMBER) == [("2026-02-25", "2027-02-25", 333), ("2026-03-25", "2027-03-25", 20)]


def test_spend_of_exactly_30000_rubles_sets_the_next_months_rate_to_one_point_per_10(member):
    # given January spend 30 000.00 and February spend 600.00
    member.card_purchase(MEMBER, "30000.00", "2026-01-10 10:00")
    member.card_purchase(MEMBER, "600.00", "2026-02-10 10:00")
    # when both are settled
    member.tick("2026-03-25")
    # then January floor(30000 / 30) = 1000; February (spend(January) >= 30 000: 1/10)
    # floor(600 / 10) = 60; total 1060
    assert member.lots(MEMBER) == [("2026-02-25", "2027-02-25", 1000), ("2026-03-25", "2027-03-25", 60)]


def test_spend_just_below_30000_rubles_keeps_the_next_months_rate_at_one_point_per_20(member):
    # given January spend 29 999.99 and February spend 600.00
    member.card_purchase(MEMBER, "29999.99", "2026-01-10 10:00")
    member.card_purchase(MEMBER, "600.00", "2026-02-10 10:00")
    # when both are settled
    member.tick("2026-03-25")
    # then January floor(29999.99 / 30) = 999 (999 x 30 = 29970);
    # February (10 000 <= 29 999.99 < 30 000: 1/20) floor(600 / 20) = 30; total 1029
    assert member.lots(MEMBER) == [("2026-02-25", "2027-02-25", 999), ("2026-03-25", "2027-03-25", 30)]


def test_refunds_count_in_the_spend_that_sets_the_next_months_rate(member):
    # given January purchases of 10 500.00 and a January refund of 600.00, February spend 600.00
    member.card_purchase(MEMBER, "10500.00", "2026-01-10 10:00")
    member.card_refund(MEMBER, "600.00", "2026-01-20 10:00")
    member.card_purchase(MEMBER, "600.00", "2026-02-10 10:00")
    # when both are settled
    member.tick("2026-03-25")
    # then spend(January) = 10500 - 600 = 9900 < 10 000: January floor(9900 / 30) = 330;
    # February at 1/30: floor(600 / 30) = 20; total 350
    assert member.balance(MEMBER) == 350


def test_card_spend_before_the_enrollment_time_neither_earns_nor_sets_the_rate(programme):
    # given a member enrolled on 20 January; 10 000.00 spent on 10 January (before) and 300.00 on 25 January
    programme.enroll(MEMBER, "2026-01-20 10:00")
    early = programme.card_purchase(MEMBER, "10000.00", "2026-01-10 10:00")
    programme.card_purchase(MEMBER, "300.00", "2026-01-25 10:00")
    programme.card_purchase(MEMBER, "600.00", "2026-02-10 10:00")
    assert early.outcomes == {"not_eligible": 1}
    # when January and February are settled
    programme.tick("2026-03-25")
    # then spend(January) = 300 (only from the enrollment time on): floor(300 / 30) = 10;
    # February's rate by 300 < 10 000 is 1/30: floor(600 / 30) = 20; total 30
    # (counting the early 10 000 would give floor(10300/30) = 343 and floor(600/20) = 30)
    assert programme.balance(MEMBER) == 30


def test_a_late_event_re_settles_its_month_at_the_next_tick(member):
    # given January spend 300.00 settled on 25 February: floor(300 / 30) = 10
    member.card_purchase(MEMBER, "300.00", "2026-01-10 10:00")
    member.tick("2026-02-25")
    # when a late January purchase of 300.00 arrives
    member.card_purchase(MEMBER, "300.00", "2026-01-28 10:00")
    assert member.balance(MEMBER) == 10  # nothing before the next tick
    report = member.tick("2026-02-26")
    # then January is re-settled: floor(600 / 30) - 10 = 20 - 10 = 10 more, lot dated the 25th
    assert report.settled == 1
    assert member.lots(MEMBER) == [("2026-02-25", "2027-02-25", 10), ("2026-02-25", "2027-02-25", 10)]


def test_a_late_purchase_re_settles_its_month_and_the_next_month_whose_rate_it_raised(member):
    # given January spend 9 990.00 and February 600.00, both settled:
    #   January floor(9990 / 30) = 333 (lot 25 Feb); February at 1/30 floor(600 / 30) = 20 (lot 25 Mar)
    member.card_purchase(MEMBER, "9990.00", "2026-01-10 10:00")
    member.card_purchase(MEMBER, "600.00", "2026-02-10 10:00")
    member.tick("2026-03-25")
    assert member.balance(MEMBER) == 353
    # when a late January purchase of 30.00 arrives and the next tick runs
    member.card_purchase(MEMBER, "30.00", "2026-01-28 10:00")
    report = member.tick("2026-03-26")
    # then January: floor(10020 / 30) = 334, credit 334 - 333 = 1, lot dated 2026-02-25;
    # spend(January) 10 020 >= 10 000 makes February 1/20: floor(600 / 20) = 30,
    # credit 30 - 20 = 10, lot dated 2026-03-25; balance 353 + 1 + 10 = 364
    assert report.settled == 2
    assert member.balance(MEMBER) == 364
    assert member.lots(MEMBER) == [
        ("2026-02-25", "2027-02-25", 333),
        ("2026-02-25", "2027-02-25", 1),
        ("2026-03-25", "2027-03-25", 20),
        ("2026-03-25", "2027-03-25", 10),
    ]


def test_a_late_refund_re_settles_its_month_and_the_next_month_whose_rate_it_lowered(member):
    # given January spend 10 020.00 and February 600.00, both settled:
    #   January floor(10020 / 30) = 334; February at 1/20 floor(600 / 20) = 30; balance 364
    member.card_purchase(MEMBER, "10020.00", "2026-01-10 10:00")
    member.card_purchase(MEMBER, "600.00", "2026-02-10 10:00")
    member.tick("2026-03-25")
    assert member.balance(MEMBER) == 364
    # when a late January refund of 30.00 arrives and the next tick runs
    member.card_refund(MEMBER, "30.00", "2026-01-28 10:00")
    member.tick("2026-03-26")
    # then January: floor(9990 / 30) = 333, 1 taken back; February at 1/30: floor(600/30) = 20,
    # 10 taken back; balance 364 - 1 - 10 = 353. Both clawbacks take from the lot that expires
    # first (January's, 2027-02-25): 334 - 11 = 323 left; February's 30 untouched
    assert member.balance(MEMBER) == 353
    clawbacks = [(h["points"], h["reason"]) for h in member.history(MEMBER) if h["kind"] == "clawed_back"]
    assert clawbacks == [(-1, "card_resettlement"), (-10, "card_resettlement")]
    assert member.lots(MEMBER) == [("2026-02-25", "2027-02-25", 323), ("2026-03-25", "2027-03-25", 30)]


def test_a_late_event_that_changes_only_the_next_months_rate_still_re_settles_the_next_month(member):
    # given January spend 9 999.00 and February 600.00, both settled:
    #   January floor(9999 / 30) = 333; February at 1/30 floor(600 / 30) = 20; balance 353
    member.card_purchase(MEMBER, "9999.00", "2026-01-10 10:00")
    member.card_purchase(MEMBER, "600.00", "2026-02-10 10:00")
    member.tick("2026-03-25")
    # when a late January purchase of 1.00 arrives and the next tick runs
    member.card_purchase(MEMBER, "1.00", "2026-01-28 10:00")
    member.tick("2026-03-26")
    # then January: floor(10000 / 30) = 333, no change; but spend(January) = 10 000 makes
    # February 1/20: floor(600 / 20) = 30, credit 10 dated 2026-03-25; balance 363
    assert member.balance(MEMBER) == 363
    assert member.lots(MEMBER)[-1] == ("2026-03-25", "2027-03-25", 10)


def test_a_late_first_event_of_a_month_without_spend_re_settles_the_next_month(member):
    # given no January spend and February 600.00 settled on 25 March at 1/30: floor(600/30) = 20
    member.card_purchase(MEMBER, "600.00", "2026-02-10 10:00")
    member.tick("2026-03-25")
    assert member.balance(MEMBER) == 20
    # when a late January purchase of 10 000.00 arrives and the next tick runs
    member.card_purchase(MEMBER, "10000.00", "2026-01-28 10:00")
    member.tick("2026-03-26")
    # then January is settled: floor(10000/30) = 333 (lot 25 Feb); February is re-settled at 1/20:
    # floor(600/20) = 30, credit 30 - 20 = 10 (lot 25 Mar); balance 20 + 333 + 10 = 363
    assert member.balance(MEMBER) == 363
    assert member.lots(MEMBER) == [
        ("2026-02-25", "2027-02-25", 333),
        ("2026-03-25", "2027-03-25", 20),
        ("2026-03-25", "2027-03-25", 10),
    ]
