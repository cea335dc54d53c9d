"""Dead letters in the console: listed with their reason, bytes and counts;
redriven by a supervisor once the defect behind an `internal_error` is
fixed (applied once, a second redrive refused); a still-invalid message
stays a dead letter with both attempts shown."""
from __future__ import annotations

from tests.test_redrive import an_internal_error
from tests.web.conftest import ALICE
from tests.web.console_support import signed_in_staff


def test_an_internal_error_redriven_after_the_fix_applies_once(client, clock, programme, monkeypatch):
    # given Alice enrolled and a Баллы Плюс transfer of 40 the engine broke on, the defect since fixed
    programme.enroll(ALICE, "2026-01-01 00:00")
    dead = an_internal_error(programme, monkeypatch, "bp-broken", 40, msisdn=ALICE)
    olga = signed_in_staff(client, clock, "olga", "supervisor")
    listed = client.get("/api/v1/ops/dead-letters?reason=internal_error", headers=olga.headers).json()
    assert [d["id"] for d in listed["items"]] == [dead] and listed["by_reason"] == {"internal_error": 1}
    assert '"bp-broken"' in listed["items"][0]["original"]["text"]
    # when Olga redrives it
    answer = client.post(f"/api/v1/ops/dead-letters/{dead}/redrive", headers=olga.headers)
    assert (answer.status_code, answer.json()["outcome"]) == (200, "applied")
    # then the 40 points are in Alice's balance, once
    member = client.get(f"/api/v1/ops/members/{ALICE}", headers=olga.headers).json()
    assert member["balance"] == 40
    again = client.post(f"/api/v1/ops/dead-letters/{dead}/redrive", headers=olga.headers)
    assert (again.status_code, again.json()["error"]) == (409, "already_redriven")
    assert client.get(f"/api/v1/ops/members/{ALICE}", headers=olga.headers).json()["balance"] == 40
    letter = client.get(f"/api/v1/ops/dead-letters/{dead}", headers=olga.headers).json()
    assert letter["status"] == "redriven"
    assert [(a["by"], a["outcome"]) for a in letter["attempts"]] == [(None, "rejected"), ("olga", "applied")]
    log = client.get("/api/v1/ops/audit-log?action=dead_letter_redriven", headers=olga.headers).json()["items"]
    assert [(e["login"], e["target"], e["detail"]["outcome"]) for e in log] == [("olga", dead, "applied")]


def test_a_still_invalid_message_stays_a_dead_letter_with_both_attempts(client, clock, programme):
    report = programme.send(programme.message("usage_charged", "2026-11-20 10:00", msisdn="7916000000X",
                                              amount="100.00", service="mobile"))
    assert report.rejected == {"invalid_msisdn": 1}
    olga = signed_in_staff(client, clock, "olga", "supervisor")
    [letter] = client.get("/api/v1/ops/dead-letters", headers=olga.headers).json()["items"]
    answer = client.post(f"/api/v1/ops/dead-letters/{letter['id']}/redrive", headers=olga.headers).json()
    assert (answer["outcome"], answer["reason"]) == ("rejected", "invalid_msisdn")
    after = client.get(f"/api/v1/ops/dead-letters/{letter['id']}", headers=olga.headers).json()
    assert after["status"] == "open"
    assert [(a["outcome"], a["reason"]) for a in after["attempts"]] == [
        ("rejected", "invalid_msisdn"), ("rejected", "invalid_msisdn")]


def test_an_auditor_reads_dead_letters_and_cannot_redrive(client, clock, programme):
    programme.send(programme.message("usage_charged", "2026-11-20 10:00", msisdn="7916000000X",
                                     amount="100.00", service="mobile"))
    anna = signed_in_staff(client, clock, "anna", "auditor")
    [letter] = client.get("/api/v1/ops/dead-letters", headers=anna.headers).json()["items"]
    answer = client.post(f"/api/v1/ops/dead-letters/{letter['id']}/redrive", headers=anna.headers)
    assert (answer.status_code, answer.json()["error"]) == (403, "forbidden")
    assert client.get(f"/api/v1/ops/dead-letters/{letter['id']}", headers=anna.headers).json()["attempts"][-1][
        "by"] is None
