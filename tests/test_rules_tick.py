"""Rule 9 — Ticks: `tick as-of D` is 00:00 Moscow of D; it settles every MGTS
period and card month due at or before it (with the re-settlements due),
then expires lots, in that order; the same tick twice changes nothing.

Every expected number is worked out by hand from RULES.md in a comment."""
import pytest

MEMBER = "79990000901"
ACCOUNT = "MGTS-0901"


@pytest.fixture
def member(programme):
    programme.enroll(MEMBER, "2024-12-01 00:00")
    programme.link_mgts(ACCOUNT, MEMBER, "2024-12-01 10:00")
    return programme


def test_a_tick_settles_only_what_is_due_at_its_moment(member):
    # given a January MGTS bill of 10.00 (due 15 February) and January card spend 300.00 (due 25 February)
    member.mgts_bill(ACCOUNT, "2026-01", "10.00", "2026-01-31 10:00")
    member.card_purchase(MEMBER, "300.00", "2026-01-10 10:00")
    # when the tick of 15 February runs
    report = member.tick("2026-02-15")
    # then only MGTS is settled: floor(10 / 5) = 2
    assert report.settled == 1
    assert member.balance(MEMBER) == 2
    # and the tick of 25 February settles the card month: floor(300 / 30) = 10; 2 + 10 = 12
    assert member.tick("2026-02-25").settled == 1
    assert member.balance(MEMBER) == 12


def test_the_same_settlement_tick_twice_changes_nothing(member):
    # given a January MGTS bill of 10.00 and January card spend 300.00, settled by the tick of 25 February
    member.mgts_bill(ACCOUNT, "2026-01", "10.00", "2026-01-31 10:00")
    member.card_purchase(MEMBER, "300.00", "2026-01-10 10:00")
    first = member.tick("2026-02-25")
    assert first.settled == 2
    before = (member.balance(MEMBER), member.lots(MEMBER), member.history(MEMBER))
    # when the same tick runs again
    again = member.tick("2026-02-25")
    # then nothing is settled or expired and nothing changes (2 + 10 = 12 stays)
    assert (again.settled, again.expired_points) == (0, 0)
    assert (member.balance(MEMBER), member.lots(MEMBER), member.history(MEMBER)) == before
    assert member.balance(MEMBER) == 12


def test_the_same_expiry_tick_twice_expires_once(member):
    # given 10 points dated 2026-03-14 and 5 dated 2026-04-01, expired to 5 by the tick of 2027-03-14
    member.ballyplus(MEMBER, 10, "2026-03-14 10:00")
    member.ballyplus(MEMBER, 5, "2026-04-01 10:00")
    assert member.tick("2027-03-14").expired_points == 10
    history = member.history(MEMBER)
    # when the same tick runs again
    report = member.tick("2027-03-14")
    # then nothing more expires: balance 15 - 10 = 5
    assert report.expired_points == 0
    assert member.balance(MEMBER) == 5
    assert member.history(MEMBER) == history


def test_one_back_fill_tick_settles_every_period_and_month_due_in_order(member):
    # given card spend January 10 000.00, February 600.00, March 300.00 and MGTS bills
    # January 10.00, February 20.00
    member.card_purchase(MEMBER, "10000.00", "2026-01-10 10:00")
    member.card_purchase(MEMBER, "600.00", "2026-02-10 10:00")
    member.card_purchase(MEMBER, "300.00", "2026-03-10 10:00")
    member.mgts_bill(ACCOUNT, "2026-01", "10.00", "2026-01-31 10:00")
    member.mgts_bill(ACCOUNT, "2026-02", "20.00", "2026-02-28 10:00")
    # when a single tick of 25 April runs
    report = member.tick("2026-04-25")
    # then MGTS January floor(10/5) = 2 (lot 15 Feb), February floor(20/5) = 4 (lot 15 Mar);
    # card January (rate by December 0: 1/30) floor(10000/30) = 333 (lot 25 Feb),
    # February (rate by 10 000: 1/20) floor(600/20) = 30 (lot 25 Mar),
    # March (rate by 600: 1/30) floor(300/30) = 10 (lot 25 Apr); total 2 + 4 + 333 + 30 + 10 = 379
    assert report.settled == 5
    assert member.balance(MEMBER) == 379
    assert member.lots(MEMBER) == [
        ("2026-02-15", "2027-02-15", 2),
        ("2026-02-25", "2027-02-25", 333),
        ("2026-03-15", "2027-03-15", 4),
        ("2026-03-25", "2027-03-25", 30),
        ("2026-04-25", "2027-04-25", 10),
    ]


def test_a_late_mgts_credit_whose_lot_is_already_past_expiry_is_credited_and_expired_in_the_same_tick(member):
    # given January 2025 MGTS bills of 10.00 settled on 2025-02-15: floor(10/5) = 2 (expiry 2026-02-15),
    # expired by the tick of 2026-02-15, and 3 Баллы Плюс points of 2026-02-01
    member.mgts_bill(ACCOUNT, "2025-01", "10.00", "2025-01-31 10:00")
    member.tick("2025-02-15")
    member.ballyplus(MEMBER, 3, "2026-02-01 10:00")
    member.tick("2026-02-15")
    assert member.balance(MEMBER) == 3
    # when a late January 2025 bill of 5.00 arrives and the tick of 2026-02-16 runs
    member.mgts_bill(ACCOUNT, "2025-01", "5.00", "2026-02-15 10:00")
    report = member.tick("2026-02-16")
    # then settlement first: floor(15/5) - 2 = 1 in a lot dated 2025-02-15, expiry 2026-02-15;
    # then expiry: 2026-02-15 <= 2026-02-16, so that 1 expires in the same tick; balance stays 3
    assert (report.settled, report.expired_points) == (1, 1)
    assert member.balance(MEMBER) == 3
    late = [(h["kind"], h["points"], h["lot_date"]) for h in member.history(MEMBER)[-2:]]
    assert late == [("accrued", 1, "2025-02-15"), ("expired", -1, None)]
    assert member.lots(MEMBER) == [("2026-02-01", "2027-02-01", 3)]


def test_a_late_card_credit_whose_lot_is_already_past_expiry_is_credited_and_expired_in_the_same_tick(member):
    # given January 2026 card spend 300.00 settled on 2026-02-25: floor(300/30) = 10 (expiry 2027-02-25),
    # expired by the tick of 2027-02-25, and 4 Баллы Плюс points of 2027-01-05
    member.card_purchase(MEMBER, "300.00", "2026-01-10 10:00")
    member.tick("2026-02-25")
    member.ballyplus(MEMBER, 4, "2027-01-05 10:00")
    member.tick("2027-02-25")
    assert member.balance(MEMBER) == 4
    # when a late January 2026 purchase of 300.00 arrives and the tick of 2027-03-01 runs
    member.card_purchase(MEMBER, "300.00", "2026-01-20 10:00")
    report = member.tick("2027-03-01")
    # then January is re-settled: floor(600/30) - 10 = 10 in a lot dated 2026-02-25 (expiry
    # 2027-02-25 <= 2027-03-01), expired in the same tick: balance stays 4
    assert (report.settled, report.expired_points) == (1, 10)
    assert member.balance(MEMBER) == 4


def test_a_re_settlement_clawback_in_an_expiry_tick_is_taken_before_the_expiry(member):
    # given January 2026 card spend 300.00 settled on 2026-02-25: 10 points (expiry 2027-02-25),
    # and 10 Баллы Плюс points of 2026-06-01 (expiry 2027-06-01): balance 20
    member.card_purchase(MEMBER, "300.00", "2026-01-10 10:00")
    member.tick("2026-02-25")
    member.ballyplus(MEMBER, 10, "2026-06-01 10:00")
    # and a late January refund of 300.00 that arrives before the next tick
    member.card_refund(MEMBER, "300.00", "2026-01-20 10:00")
    # when the next tick is 2027-02-25, the card lot's expiry day
    report = member.tick("2027-02-25")
    # then the re-settlement comes first: floor(0/30) - 10 = -10, taken from the lot that
    # expires first (the card lot, 10 -> 0); the expiry then finds nothing left to remove.
    # Balance 20 - 10 = 10, the Баллы Плюс lot intact (expiry first would leave 0)
    assert (report.settled, report.expired_points) == (1, 0)
    assert member.balance(MEMBER) == 10
    assert member.lots(MEMBER) == [("2026-06-01", "2027-06-01", 10)]
    assert member.uncollected(MEMBER) == 0
