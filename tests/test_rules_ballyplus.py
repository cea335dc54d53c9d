"""Rule 6 — Баллы Плюс partner app (`ballyplus_transfer`): 1 partner point =
1 point, credited when the event is applied; lot date = the event's date.

Every expected number is worked out by hand from RULES.md in a comment."""

MEMBER = "79990000601"


def test_partner_points_are_credited_one_to_one_when_the_transfer_is_applied(programme):
    # given an enrolled member
    programme.enroll(MEMBER, "2026-01-01 00:00")
    # when a transfer of 137 partner points arrives (no tick in between)
    report = programme.ballyplus(MEMBER, 137, "2026-01-05 10:00", event_id="bp-1")
    # then 137 x 1 = 137 points are credited at once
    assert report.outcomes == {"applied": 1}
    assert programme.balance(MEMBER) == 137
    accrued = programme.history(MEMBER)[-1]
    assert (accrued["kind"], accrued["points"], accrued["rule"], accrued["source_event_id"]) == (
        "accrued", 137, "ballyplus", "bp-1"
    )


def test_one_partner_point_is_one_point(programme):
    # given an enrolled member
    programme.enroll(MEMBER, "2026-01-01 00:00")
    # when the smallest transfer, 1 partner point, arrives
    programme.ballyplus(MEMBER, 1, "2026-01-05 10:00")
    # then 1 x 1 = 1 point
    assert programme.balance(MEMBER) == 1


def test_the_largest_transfer_is_credited_in_full(programme):
    # given an enrolled member
    programme.enroll(MEMBER, "2026-01-01 00:00")
    # when the largest transfer the contract allows, 1 000 000 partner points, arrives
    programme.ballyplus(MEMBER, 1_000_000, "2026-01-05 10:00")
    # then 1 000 000 x 1 = 1 000 000 points
    assert programme.balance(MEMBER) == 1_000_000


def test_each_transfer_forms_its_own_lot_dated_on_its_moscow_date(programme):
    # given an enrolled member
    programme.enroll(MEMBER, "2026-01-01 00:00")
    # when 10 partner points arrive at 2026-03-13T21:30Z (= 2026-03-14 00:30 Moscow) and 5 on 2026-03-20
    programme.ballyplus(MEMBER, 10, "2026-03-13T21:30:00+00:00")
    programme.ballyplus(MEMBER, 5, "2026-03-20 10:00")
    # then two lots: 2026-03-14 -> 2027-03-14 with 10, 2026-03-20 -> 2027-03-20 with 5
    assert programme.lots(MEMBER) == [("2026-03-14", "2027-03-14", 10), ("2026-03-20", "2027-03-20", 5)]


def test_a_transfer_held_before_the_enrollment_arrives_is_credited_on_enrollment(programme):
    # given a transfer of 50 on 15 January for an msisdn not enrolled yet
    held = programme.ballyplus(MEMBER, 50, "2026-01-15 10:00")
    assert held.outcomes == {"held": 1}
    assert programme.balance(MEMBER) == 0
    # when the enrollment of 10 January arrives
    programme.enroll(MEMBER, "2026-01-10 10:00")
    # then the transfer (after the enrollment time) is credited 50, dated its own day
    assert programme.lots(MEMBER) == [("2026-01-15", "2027-01-15", 50)]


def test_a_transfer_from_before_the_enrollment_time_earns_nothing(programme):
    # given a member enrolled on 10 January
    programme.enroll(MEMBER, "2026-01-10 10:00")
    # when a transfer of 50 that occurred on 9 January arrives
    report = programme.ballyplus(MEMBER, 50, "2026-01-09 10:00")
    # then it is not eligible (rule 1): 0 points
    assert report.outcomes == {"not_eligible": 1}
    assert programme.balance(MEMBER) == 0
