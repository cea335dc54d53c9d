"""Rule 1 — Membership (RULES.md): enrollment, already_enrolled, eligibility
from the enrollment time on, and events held until the enrollment arrives.

Every expected number is worked out by hand from RULES.md in a comment."""

MEMBER = "79990000101"
OTHER = "79990000102"


def test_an_enrollment_opens_the_account_with_a_zero_balance(programme):
    # given nothing
    # when the member enrolls
    report = programme.enroll(MEMBER, "2026-01-10 09:00", channel="sms")
    # then the enrollment is applied and the member has an account, balance 0
    assert report.outcomes["applied"] == 1
    assert programme.balances() == {MEMBER: 0}
    member = programme.runtime.reads.member(MEMBER)
    assert member["enrolled_at"] == "2026-01-10T09:00:00+03:00"
    assert member["channel"] == "sms"
    assert [h["kind"] for h in programme.history(MEMBER)] == ["enrolled"]


def test_a_second_different_enrollment_is_rejected_as_already_enrolled(programme):
    # given a member enrolled on 10 January over the web
    programme.enroll(MEMBER, "2026-01-10 09:00", channel="web")
    # when another enrollment (another event_id) for the same msisdn arrives
    report = programme.enroll(MEMBER, "2026-01-01 09:00", channel="sms")
    # then it is rejected as already_enrolled
    assert report.outcomes == {"rejected": 1}
    assert report.rejected == {"already_enrolled": 1}
    assert programme.runtime.reads.rejections_by_reason() == {"already_enrolled": 1}


def test_a_second_enrollment_changes_neither_the_enrollment_time_nor_the_channel(programme):
    # given a member enrolled on 10 January over the web
    programme.enroll(MEMBER, "2026-01-10 09:00", channel="web")
    # when a second enrollment claims 1 January over sms
    programme.enroll(MEMBER, "2026-01-01 09:00", channel="sms")
    # then the account keeps its first enrollment ...
    member = programme.runtime.reads.member(MEMBER)
    assert (member["enrolled_at"], member["channel"]) == ("2026-01-10T09:00:00+03:00", "web")
    assert [h["kind"] for h in programme.history(MEMBER)] == ["enrolled"]
    # ... so a charge of 5.00 on 5 January (before 10 January) still earns nothing
    report = programme.usage(MEMBER, "5.00", "2026-01-05 10:00")
    assert report.outcomes == {"not_eligible": 1}
    assert programme.balance(MEMBER) == 0


def test_an_event_exactly_at_the_enrollment_time_earns(programme):
    # given a member enrolled at 2026-01-10 09:00 Moscow
    programme.enroll(MEMBER, "2026-01-10 09:00")
    # when a charge of 5.00 occurs at that very moment (given in UTC: 06:00Z = 09:00 Moscow)
    report = programme.usage(MEMBER, "5.00", "2026-01-10T06:00:00+00:00")
    # then it earns: floor(5.00 / 5) = 1 point
    assert report.outcomes == {"applied": 1}
    assert programme.balance(MEMBER) == 1


def test_an_event_before_the_enrollment_time_is_recorded_as_not_eligible_and_earns_nothing(programme):
    # given a member enrolled at 2026-01-10 09:00
    programme.enroll(MEMBER, "2026-01-10 09:00")
    # when a charge of 50.00 occurred one minute earlier
    report = programme.usage(MEMBER, "50.00", "2026-01-10 08:59", event_id="u-early")
    # then it is recorded as not eligible (before_enrollment) and earns 0 (not floor(50/5) = 10)
    assert report.outcomes == {"not_eligible": 1}
    assert programme.balance(MEMBER) == 0
    assert programme.lots(MEMBER) == []
    entry = programme.history(MEMBER)[-1]
    assert (entry["kind"], entry["points"], entry["reason"], entry["source_event_id"]) == (
        "not_eligible", 0, "before_enrollment", "u-early"
    )


def test_an_event_for_an_msisdn_not_enrolled_yet_is_held_and_not_credited(programme):
    # given no enrollment for the msisdn
    # when a charge of 50.00 arrives
    report = programme.usage(MEMBER, "50.00", "2026-01-15 10:00")
    # then it is held: counted as held, kept, nothing credited, no member yet
    assert report.outcomes == {"held": 1}
    assert programme.runtime.reads.held_count() == 1
    assert programme.balances() == {}
    assert programme.balance(MEMBER) == 0


def test_held_events_are_applied_when_the_enrollment_arrives(programme):
    # given a charge of 50.00 and a Баллы Плюс transfer of 7 held for a not yet enrolled msisdn
    programme.usage(MEMBER, "50.00", "2026-01-15 10:00")
    programme.ballyplus(MEMBER, 7, "2026-01-16 10:00")
    # when the enrollment (at 2026-01-10, before both) arrives
    report = programme.enroll(MEMBER, "2026-01-10 09:00")
    # then both held events are released and earn: floor(50/5) = 10, plus 7 x 1 = 7 -> 17
    assert report.outcomes == {"applied": 1}
    assert report.released == 2
    assert programme.runtime.reads.held_count() == 0
    assert programme.balance(MEMBER) == 17


def test_a_held_event_from_before_the_enrollment_time_is_recorded_as_not_eligible_on_release(programme):
    # given a charge of 50.00 on 5 January held for a not yet enrolled msisdn
    programme.usage(MEMBER, "50.00", "2026-01-05 10:00", event_id="u-held-early")
    # when the enrollment at 10 January arrives
    report = programme.enroll(MEMBER, "2026-01-10 09:00")
    # then the held charge is released but recorded as not eligible: 0 points
    assert report.released == 1
    assert programme.balance(MEMBER) == 0
    kinds = [(h["kind"], h["reason"], h["source_event_id"]) for h in programme.history(MEMBER)]
    assert ("not_eligible", "before_enrollment", "u-held-early") in kinds


def test_only_the_charges_at_or_after_enrollment_count_toward_the_months_figure(programme):
    # given a member enrolled on 10 January
    programme.enroll(MEMBER, "2026-01-10 09:00")
    # when 2.50 is charged on 5 January (before) and 2.50 on 20 January (after)
    programme.usage(MEMBER, "2.50", "2026-01-05 10:00")
    programme.usage(MEMBER, "2.50", "2026-01-20 10:00")
    # then the January figure is only the eligible 2.50: floor(2.50 / 5) = 0
    # (counting both would give floor(5.00 / 5) = 1)
    assert programme.balance(MEMBER) == 0


def _same_story(programme, msisdn, enrollment_first, tag):
    """One member's events: usage, shop, card, Баллы Плюс, one early charge."""
    events = [
        programme.message("usage_charged", "2026-01-05 10:00", msisdn=msisdn, service="tv", amount="25.00"),
        programme.message("usage_charged", "2026-01-12 10:00", msisdn=msisdn, service="mobile", amount="12.50"),
        programme.message("shop_purchase", "2026-01-14 10:00", msisdn=msisdn, store_id="S1",
                          receipt_id=f"R-{tag}", lines=[
                              {"line_id": "1", "category": "mts_branded", "amount": "10.00"},
                              {"line_id": "2", "category": "other", "amount": "65.00"},
                          ]),
        programme.message("card_purchase", "2026-01-20 10:00", msisdn=msisdn, card_id="c", amount="300.00"),
        programme.message("ballyplus_transfer", "2026-01-21 10:00", msisdn=msisdn, partner_points=4),
    ]
    if enrollment_first:
        programme.enroll(msisdn, "2026-01-10 09:00")
        for event in events:
            programme.send(event)
    else:
        for event in events:
            programme.send(event)
        programme.enroll(msisdn, "2026-01-10 09:00")


def test_enrollment_first_and_spend_first_give_the_same_result(programme):
    # given the same events for two members: one enrolled before they arrived,
    # the other enrolled after they arrived (all of them held until then)
    _same_story(programme, MEMBER, enrollment_first=True, tag="a")
    _same_story(programme, OTHER, enrollment_first=False, tag="b")
    # when January's card spend is settled on 25 February
    programme.tick("2026-02-25")
    # then both have the same balance, lots and history of points:
    #   usage 5 Jan 25.00: before the enrollment (10 Jan) -> not eligible, 0
    #   usage 12 Jan 12.50: floor(12.50 / 5) = 2
    #   shop 14 Jan: floor(10.00 / 3) + floor(65.00 / 30) = 3 + 2 = 5
    #   Баллы Плюс: 4
    #   card January 300.00, December spend 0 -> 1 per 30: floor(300 / 30) = 10
    #   total 2 + 5 + 4 + 10 = 21
    assert programme.balance(MEMBER) == 21
    assert programme.balance(OTHER) == 21
    assert programme.lots(MEMBER) == programme.lots(OTHER) == [
        ("2026-01-12", "2027-01-12", 2),
        ("2026-01-14", "2027-01-14", 5),
        ("2026-01-21", "2027-01-21", 4),
        ("2026-02-25", "2027-02-25", 10),
    ]

    def story(msisdn):
        return sorted(((h["kind"], h["points"], h["rule"], h["reason"], h["lot_date"])
                       for h in programme.history(msisdn)), key=repr)

    assert story(MEMBER) == story(OTHER)


def test_a_held_purchase_and_its_held_return_are_applied_in_arrival_order_on_enrollment(programme):
    # given, for an msisdn not enrolled yet, a receipt of mts_branded 30.00 and then a return of 15.00 of it
    programme.purchase(MEMBER, "R1", [("1", "mts_branded", "30.00")], "2026-01-15 10:00")
    programme.shop_return(MEMBER, "R1", [("1", "15.00")], "2026-01-16 10:00")
    # when the enrollment of 10 January arrives
    report = programme.enroll(MEMBER, "2026-01-10 09:00")
    # then the purchase earns floor(30/3) = 10 and the return recomputes net 15.00:
    # floor(15/3) = 5, taking back 10 - 5 = 5; balance 5
    assert report.released == 2
    assert programme.balance(MEMBER) == 5
    assert [h["kind"] for h in programme.history(MEMBER)] == ["enrolled", "accrued", "clawed_back"]


def test_a_held_return_that_the_rules_refuse_is_rejected_when_the_enrollment_releases_it(programme):
    # given, for an msisdn not enrolled yet, a return naming a receipt nobody bought
    held = programme.shop_return(MEMBER, "R-none", [("1", "3.00")], "2026-01-16 10:00")
    assert held.outcomes == {"held": 1}
    # when the enrollment arrives
    report = programme.enroll(MEMBER, "2026-01-10 09:00")
    # then the return is rejected as unknown_receipt and nothing is changed: balance 0
    assert report.rejected == {"unknown_receipt": 1}
    assert programme.runtime.reads.rejections_by_reason() == {"unknown_receipt": 1}
    assert programme.balance(MEMBER) == 0
