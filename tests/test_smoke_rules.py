"""A few rules end to end through the test driver (the rule-by-rule suite is
in test_rules_*.py)."""


def test_usage_charges_split_in_one_month_never_lose_points(programme):
    programme.enroll("79990000001", "2026-01-01 00:00")
    programme.usage("79990000001", "2.50", "2026-01-05")
    programme.usage("79990000001", "2.50", "2026-01-06")
    assert programme.balance("79990000001") == 1


def test_a_spend_before_enrollment_is_held_then_applied(programme):
    report = programme.usage("79990000002", "50.00", "2026-01-05")
    assert report.outcomes["held"] == 1
    assert programme.balances() == {}
    assert programme.runtime.reads.held() == {"79990000002": 1}
    programme.enroll("79990000002", "2026-01-01 00:00")
    assert programme.balance("79990000002") == 10
    assert programme.runtime.reads.held() == {}
