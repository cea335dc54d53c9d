"""Adjustments with a second pair of eyes: small ones apply at once, larger
ones wait for a supervisor other than the requester; an approval applies
once, however many come; a debit never takes a balance below zero; a
rejected or pending adjustment changes nothing."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.web.conftest import ALICE, member_with_points, sign_in
from tests.web.console_support import signed_in_staff

THRESHOLD = 1000  # ACCRUAL_ADJUSTMENT_APPROVAL_ABOVE's default


def balance(client, staff) -> int:
    return client.get(f"/api/v1/ops/members/{ALICE}", headers=staff.headers).json()["balance"]


def adjust(client, staff, points: int, key: str, reason: str = "Начисление по жалобе № 4521"):
    return client.post("/api/v1/ops/adjustments", headers=staff.headers,
                       json={"msisdn": ALICE, "points": points, "reason": reason, "idempotency_key": key})


def adjusted_lines(client, staff) -> list[dict]:
    history = client.get(f"/api/v1/ops/members/{ALICE}/history?kind=adjusted", headers=staff.headers).json()
    return history["items"]


@pytest.fixture
def team(client, clock, programme):
    """Alice has 300 points; an operator, two supervisors and an auditor."""
    member_with_points(programme, ALICE, 300)
    return {
        "ivan": signed_in_staff(client, clock, "ivan", "operator"),
        "olga": signed_in_staff(client, clock, "olga", "supervisor"),
        "petr": signed_in_staff(client, clock, "petr", "supervisor"),
        "anna": signed_in_staff(client, clock, "anna", "auditor"),
    }


def test_a_small_credit_applies_at_once_as_a_new_lot_dated_today(client, team):
    # given 300 points; when an operator credits 500 (at or below 1,000)
    answer = adjust(client, team["ivan"], 500, "k1")
    assert answer.status_code == 201
    assert (answer.json()["status"], answer.json()["balance_after"]) == ("applied", 800)  # 300 + 500
    # then a lot of 500 dated today (25 Nov 2026 in Moscow) is in the balance
    member = client.get(f"/api/v1/ops/members/{ALICE}", headers=team["anna"].headers).json()
    assert member["balance"] == 800
    assert any(lot["remaining"] == 500 and lot["lot_date"] == "2026-11-25" for lot in member["lots"])
    [line] = adjusted_lines(client, team["anna"])
    assert line["points"] == 500 and line["detail"]["requested_by"] == "ivan" and line["log_position"]


def test_a_large_adjustment_waits_and_changes_nothing_until_approved(client, team):
    answer = adjust(client, team["ivan"], THRESHOLD + 1, "k1")
    assert (answer.status_code, answer.json()["status"]) == (201, "pending_approval")
    assert balance(client, team["anna"]) == 300 and adjusted_lines(client, team["anna"]) == []
    approved = client.post(f"/api/v1/ops/adjustments/{answer.json()['adjustment_id']}/approve",
                           headers=team["olga"].headers)
    assert (approved.status_code, approved.json()["status"], approved.json()["decided_by"]) == (200, "applied", "olga")
    assert balance(client, team["anna"]) == 300 + THRESHOLD + 1
    [line] = adjusted_lines(client, team["anna"])
    assert (line["detail"]["requested_by"], line["detail"]["approved_by"]) == ("ivan", "olga")


def test_a_requester_cannot_approve_its_own_adjustment(client, team):
    pending = adjust(client, team["olga"], 5000, "k1").json()
    answer = client.post(f"/api/v1/ops/adjustments/{pending['adjustment_id']}/approve", headers=team["olga"].headers)
    assert (answer.status_code, answer.json()["error"]) == (403, "own_request")
    assert balance(client, team["anna"]) == 300


def test_an_operator_and_an_auditor_cannot_approve(client, team):
    pending = adjust(client, team["olga"], 5000, "k1").json()
    for who in ("ivan", "anna"):
        answer = client.post(f"/api/v1/ops/adjustments/{pending['adjustment_id']}/approve",
                             headers=team[who].headers)
        assert (answer.status_code, answer.json()["error"]) == (403, "forbidden")
    assert balance(client, team["anna"]) == 300


def test_a_rejected_adjustment_changes_nothing_and_cannot_be_approved_after(client, team):
    pending = adjust(client, team["ivan"], 5000, "k1").json()
    rejected = client.post(f"/api/v1/ops/adjustments/{pending['adjustment_id']}/reject", headers=team["olga"].headers)
    assert rejected.json()["status"] == "rejected"
    late = client.post(f"/api/v1/ops/adjustments/{pending['adjustment_id']}/approve", headers=team["petr"].headers)
    assert (late.status_code, late.json()["error"]) == (409, "adjustment_decided")
    assert balance(client, team["anna"]) == 300 and adjusted_lines(client, team["anna"]) == []


def test_a_debit_beyond_the_balance_is_refused_and_changes_nothing(client, team):
    # 300 points; a debit of 301 would leave -1
    answer = adjust(client, team["ivan"], -301, "k1")
    assert (answer.status_code, answer.json()["error"]) == (409, "insufficient_points")
    assert balance(client, team["anna"]) == 300
    listed = client.get("/api/v1/ops/adjustments?status=refused", headers=team["anna"].headers).json()["items"]
    assert [(a["points"], a["refusal"]) for a in listed] == [(-301, "insufficient_points")]
    # the whole balance may go: 300 - 300 = 0
    assert adjust(client, team["ivan"], -300, "k2").json()["balance_after"] == 0


def test_an_approved_debit_that_the_balance_no_longer_covers_is_refused(client, team):
    pending = adjust(client, team["ivan"], -1200, "k1").json()  # waits; 300 points now
    answer = client.post(f"/api/v1/ops/adjustments/{pending['adjustment_id']}/approve", headers=team["olga"].headers)
    assert (answer.status_code, answer.json()["error"]) == (409, "insufficient_points")
    assert balance(client, team["anna"]) == 300


def test_the_same_key_is_one_adjustment_and_another_body_under_it_a_conflict(client, team):
    first = adjust(client, team["ivan"], 200, "k1")
    again = adjust(client, team["ivan"], 200, "k1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["adjustment_id"] == again.json()["adjustment_id"]
    assert balance(client, team["anna"]) == 500  # 300 + 200, once
    other = adjust(client, team["ivan"], 201, "k1")
    assert (other.status_code, other.json()["error"]) == (409, "idempotency_conflict")


def test_twenty_concurrent_approvals_apply_once(client, clock, team):
    supervisors = [team["olga"], team["petr"]] + [signed_in_staff(client, clock, f"sup{i}", "supervisor")
                                                  for i in range(3)]
    pending = adjust(client, team["ivan"], 2500, "k1").json()
    url = f"/api/v1/ops/adjustments/{pending['adjustment_id']}/approve"
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda i: client.post(url, headers=supervisors[i % 5].headers), range(20)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [409] * 19, [a.text for a in answers if a.status_code not in (200, 409)]
    assert balance(client, team["anna"]) == 300 + 2500
    assert len(adjusted_lines(client, team["anna"])) == 1


def test_reasons_are_10_to_500_characters(client, team):
    assert adjust(client, team["ivan"], 10, "k1", reason="коротко").status_code == 422
    assert adjust(client, team["ivan"], 10, "k2", reason="x" * 501).status_code == 422
    assert adjust(client, team["ivan"], 10, "k3", reason="x" * 500).status_code == 201


def test_adjustments_and_decisions_are_in_the_audit_log(client, team):
    pending = adjust(client, team["ivan"], 5000, "k1").json()
    client.post(f"/api/v1/ops/adjustments/{pending['adjustment_id']}/approve", headers=team["olga"].headers)
    entries = client.get("/api/v1/ops/audit-log", headers=team["anna"].headers).json()["items"]
    done = {(e["login"], e["action"], e["target"]) for e in entries}
    assert ("ivan", "adjustment_requested", pending["adjustment_id"]) in done
    assert ("olga", "adjustment_approved", pending["adjustment_id"]) in done
    assert ("anna", "member_viewed", ALICE) not in done  # anna has not looked Alice up yet
    client.get(f"/api/v1/ops/members/{ALICE}", headers=team["anna"].headers)
    entries = client.get("/api/v1/ops/audit-log?action=member_viewed", headers=team["olga"].headers).json()["items"]
    assert [(e["login"], e["target"]) for e in entries] == [("anna", ALICE)]


def test_the_audit_log_refuses_changes(client, team):
    store = client.app.state.context.store
    for statement in ("UPDATE ops_audit SET login = 'someone'", "DELETE FROM ops_audit"):
        with pytest.raises(Exception, match="append-only"):
            store.execute(statement)


def test_the_member_sees_the_adjustment_but_not_what_the_staff_wrote(client, team):
    adjust(client, team["ivan"], 50, "k1", reason="Жалоба 4521: клиент сильно ругался")
    member = sign_in(client, ALICE)
    [line] = [e for e in client.get("/api/v1/me/history", headers=member).json()["items"] if e["kind"] == "adjusted"]
    assert line["points"] == 50
    assert "reason" not in line["detail"] and "requested_by" not in line["detail"]
    assert "ругался" not in client.get("/history", headers=member).text


def test_the_audit_log_is_filtered_by_moscow_dates(client, team):
    # the clock stands at 12:00 Moscow on 25 November 2026: every action so far is of that day
    today = client.get("/api/v1/ops/audit-log?from=2026-11-25&to=2026-11-25", headers=team["anna"].headers).json()
    assert today["total"] > 0
    for other in ("from=2026-11-26", "to=2026-11-24"):
        assert client.get(f"/api/v1/ops/audit-log?{other}", headers=team["anna"].headers).json()["total"] == 0
