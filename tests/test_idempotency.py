"""EVENTS.md — idempotency and rejections at the edge: the same event_id with
the same content is a duplicate and changes nothing; with other content it is
rejected (`conflicting_duplicate`); event_ids are unique within their source
(topic); a malformed message is rejected with a machine-readable reason and
never stops the stream.

Every expected number is worked out by hand from RULES.md in a comment."""
import base64
import json

import pytest

from projections.tables import Names

MEMBER = "79990001001"


@pytest.fixture
def member(programme):
    programme.enroll(MEMBER, "2026-01-01 00:00")
    return programme


def _usage(programme, amount="10.00", event_id=None, at="2026-01-05 10:00"):
    return programme.message("usage_charged", at, event_id=event_id, msisdn=MEMBER, service="mobile", amount=amount)


def _state(programme):
    return programme.balance(MEMBER), programme.lots(MEMBER), programme.history(MEMBER)


# -- duplicates -----------------------------------------------------------------


def test_a_redelivered_message_changes_nothing_and_is_counted_as_a_duplicate(member):
    # given a charge of 10.00 applied once: floor(10/5) = 2
    message = _usage(member, event_id="u-1")
    assert member.send(message).outcomes == {"applied": 1}
    before = _state(member)
    # when the same message is delivered again
    report = member.send(message)
    # then it is counted as a duplicate and changes nothing: balance still 2
    assert report.outcomes == {"duplicate": 1}
    assert report.rejected == {}
    assert _state(member) == before
    assert member.balance(MEMBER) == 2


def test_a_message_repeated_within_one_batch_is_applied_once(member):
    # given a charge of 10.00
    message = _usage(member, event_id="u-1")
    # when it arrives twice in one batch
    report = member.send(message, message)
    # then once applied, once a duplicate: floor(10/5) = 2, not 4
    assert report.outcomes == {"applied": 1, "duplicate": 1}
    assert member.balance(MEMBER) == 2


def test_a_redelivery_differing_only_in_key_order_whitespace_or_unknown_fields_is_a_duplicate(member):
    # given a charge of 10.00 applied once: 2 points
    message = _usage(member, event_id="u-1")
    member.send(message)
    # when it is delivered again with keys reordered and spaced, and with an unknown extra field
    reordered = json.dumps(dict(reversed(list(message.items()))), indent=2).encode()
    extended = json.dumps({**message, "producer": "billing-7"}).encode()
    report = member.send(reordered, extended)
    # then both are duplicates (same content: unknown fields are ignored); balance still 2
    assert report.outcomes == {"duplicate": 2}
    assert member.balance(MEMBER) == 2


def test_the_same_event_id_with_other_content_is_rejected_as_conflicting_duplicate_and_changes_nothing(member):
    # given a charge of 10.00 applied as event u-1: 2 points
    member.send(_usage(member, amount="10.00", event_id="u-1"))
    before = _state(member)
    # when another message with event_id u-1 but amount 20.00 arrives on the same topic
    report = member.send(_usage(member, amount="20.00", event_id="u-1"))
    # then it is rejected as conflicting_duplicate and nothing changes (not floor(30/5) = 6)
    assert report.outcomes == {"rejected": 1}
    assert report.rejected == {"conflicting_duplicate": 1}
    assert member.runtime.reads.rejections_by_reason() == {"conflicting_duplicate": 1}
    assert _state(member) == before


def test_the_redelivery_of_a_conflicting_duplicate_is_a_duplicate(member):
    # given u-1 applied (10.00) and a conflicting u-1 (20.00) rejected
    member.send(_usage(member, amount="10.00", event_id="u-1"))
    conflicting = _usage(member, amount="20.00", event_id="u-1")
    member.send(conflicting)
    # when the conflicting message is delivered again
    report = member.send(conflicting)
    # then it is a duplicate (of the rejection): no second rejection, balance still 2
    assert report.outcomes == {"duplicate": 1}
    assert report.rejected == {}
    assert member.runtime.reads.rejections_by_reason() == {"conflicting_duplicate": 1}
    assert member.balance(MEMBER) == 2


def test_the_same_event_id_on_two_topics_is_two_different_messages(member):
    # given nothing but the enrollment
    # when event_id E-1 arrives as a charge of 10.00 on mts.usage.v1 and as a transfer of 5 on
    # partner.ballyplus.v1
    usage = _usage(member, event_id="E-1")
    transfer = member.message("ballyplus_transfer", "2026-01-05 11:00", event_id="E-1", msisdn=MEMBER, partner_points=5)
    report = member.send(usage, transfer)
    # then both are applied: floor(10/5) + 5 = 2 + 5 = 7
    assert report.outcomes == {"applied": 2}
    assert member.balance(MEMBER) == 7


def test_a_redelivered_enrollment_is_a_duplicate_not_already_enrolled(programme):
    # given an enrollment applied once
    enrollment = programme.message("member_enrolled", "2026-01-01 00:00", event_id="enr-1", msisdn=MEMBER, channel="web")
    programme.send(enrollment)
    # when it is delivered again
    report = programme.send(enrollment)
    # then it is a duplicate, not a rejection
    assert report.outcomes == {"duplicate": 1}
    assert programme.runtime.reads.rejections_by_reason() == {}


def test_a_redelivered_held_event_is_held_once_and_credited_once(programme):
    # given a charge of 10.00 held for an msisdn not enrolled yet
    message = _usage(programme, event_id="u-held")
    assert programme.send(message).outcomes == {"held": 1}
    # when it is delivered again and then the enrollment arrives
    report = programme.send(message)
    programme.enroll(MEMBER, "2026-01-01 00:00")
    # then the redelivery was a duplicate and the charge earns once: floor(10/5) = 2
    assert report.outcomes == {"duplicate": 1}
    assert programme.balance(MEMBER) == 2


def test_a_conflicting_duplicate_of_a_held_event_is_rejected_and_only_the_original_is_credited(programme):
    # given a charge of 10.00 held as u-held for an msisdn not enrolled yet
    programme.send(_usage(programme, amount="10.00", event_id="u-held"))
    # when a message with the same event_id but amount 50.00 arrives, then the enrollment
    report = programme.send(_usage(programme, amount="50.00", event_id="u-held"))
    programme.enroll(MEMBER, "2026-01-01 00:00")
    # then it was rejected as conflicting_duplicate and only the original earns: floor(10/5) = 2
    assert report.rejected == {"conflicting_duplicate": 1}
    assert programme.balance(MEMBER) == 2


def test_a_redelivered_rule_rejection_is_a_duplicate_and_recorded_once(member):
    # given a return for an unknown receipt, rejected as unknown_receipt
    refused = member.message("shop_return", "2026-01-05 10:00", event_id="ret-1", msisdn=MEMBER,
                             store_id="S1", receipt_id="R-none", lines=[{"line_id": "1", "amount": "3.00"}])
    assert member.send(refused).rejected == {"unknown_receipt": 1}
    # when it is delivered again
    report = member.send(refused)
    # then it is a duplicate; one rejection is on record
    assert report.outcomes == {"duplicate": 1}
    assert member.runtime.reads.rejections_by_reason() == {"unknown_receipt": 1}


def test_a_redelivered_card_purchase_is_counted_once_in_the_months_spend(member):
    # given a January card purchase of 300.00
    purchase = member.message("card_purchase", "2026-01-10 10:00", event_id="cp-1", msisdn=MEMBER,
                              card_id="c", amount="300.00")
    member.send(purchase)
    # when it is delivered again and January is settled
    assert member.send(purchase).outcomes == {"duplicate": 1}
    member.tick("2026-02-25")
    # then spend(January) = 300 (not 600): floor(300/30) = 10
    assert member.balance(MEMBER) == 10


# -- malformed messages ------------------------------------------------------------


def _valid(**changes):
    body = {
        "topic": "mts.usage.v1", "event_id": "bad-1", "type": "usage_charged",
        "occurred_at": "2026-01-05T10:00:00+03:00", "msisdn": MEMBER, "service": "mobile", "amount": "5.00",
    }
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not _DROP}).encode()


_DROP = object()

_LINES = [{"line_id": "1", "category": "mts_branded", "amount": "3.00"}]
_SHOP = dict(topic="mts.shop.v1", type="shop_purchase", store_id="S1", receipt_id="R-bad",
             service=_DROP, amount=_DROP)

MALFORMED = [
    pytest.param(b'{"topic": "mts.usage.v1", "event_id": ', "invalid_json", id="truncated-json"),
    pytest.param(b"[1, 2, 3]", "invalid_json", id="json-array-not-object"),
    pytest.param(b"\xff\xfe{}", "invalid_json", id="not-utf8"),
    pytest.param(_valid(topic="mts.nope.v1"), "unknown_topic", id="unknown-topic"),
    pytest.param(_valid(topic=_DROP), "unknown_topic", id="no-topic"),
    pytest.param(_valid(type="usage_refunded"), "unknown_type", id="unknown-type"),
    pytest.param(_valid(topic="bank.card.v1"), "wrong_topic", id="type-on-wrong-topic"),
    pytest.param(_valid(msisdn="7999000100"), "invalid_msisdn", id="msisdn-10-digits"),
    pytest.param(_valid(msisdn="89990001001"), "invalid_msisdn", id="msisdn-starting-8"),
    pytest.param(_valid(amount="0.00"), "invalid_amount", id="amount-zero"),
    pytest.param(_valid(amount="-5.00"), "invalid_amount", id="amount-negative"),
    pytest.param(_valid(amount="1.234"), "invalid_amount", id="amount-three-decimals"),
    pytest.param(_valid(amount=5.0), "invalid_amount", id="amount-as-json-number"),
    pytest.param(_valid(amount="10000000.01"), "invalid_amount", id="amount-over-maximum"),
    pytest.param(_valid(topic="partner.ballyplus.v1", type="ballyplus_transfer", service=_DROP, amount=_DROP,
                        partner_points=0), "invalid_amount", id="partner-points-zero"),
    pytest.param(_valid(occurred_at="2026-01-05T10:00:00"), "invalid_timestamp", id="timestamp-without-offset"),
    pytest.param(_valid(occurred_at="2026-02-30T10:00:00+03:00"), "invalid_timestamp", id="timestamp-not-a-day"),
    pytest.param(_valid(event_id=""), "invalid_event_id", id="event-id-empty"),
    pytest.param(_valid(event_id="x" * 129), "invalid_event_id", id="event-id-129-chars"),
    pytest.param(_valid(**_SHOP, lines=_LINES + _LINES), "duplicate_line_id", id="duplicate-line-id"),
    pytest.param(_valid(**_SHOP, lines=[]), "invalid_schema", id="receipt-without-lines"),
    pytest.param(_valid(**_SHOP, lines=[{**_LINES[0], "category": "food"}]), "invalid_schema", id="bad-category"),
    pytest.param(_valid(amount=_DROP), "invalid_schema", id="missing-amount"),
    pytest.param(_valid(service="sms"), "invalid_schema", id="unknown-service"),
    pytest.param(_valid(topic="mgts.billing.v1", type="mgts_bill", msisdn=_DROP, service=_DROP,
                        mgts_account="M-1", period="2026-13"), "invalid_schema", id="bad-period"),
]


@pytest.mark.parametrize("line, reason", MALFORMED)
def test_a_malformed_line_is_rejected_with_its_reason_and_never_stops_the_batch(member, line, reason):
    # given a batch: a charge of 5.00, the malformed line, another charge of 5.00
    batch = [_usage(member, amount="5.00"), line, _usage(member, amount="5.00")]
    # when it is applied
    report = member.send(*batch)
    # then the malformed line is rejected with its reason, and both charges around it are
    # applied: floor((5 + 5) / 5) = 2
    assert report.outcomes == {"applied": 2, "rejected": 1}
    assert report.rejected == {reason: 1}
    assert member.runtime.reads.rejections_by_reason() == {reason: 1}
    assert member.balance(MEMBER) == 2


def test_a_rejected_line_is_kept_with_its_original_bytes_and_topic(member):
    # given a line with a malformed amount
    line = _valid(amount="1.234")
    # when it is applied
    member.send(line)
    # then the rejection keeps the source topic, the reason and the bytes exactly as received
    rows = member.runtime.db.query(f"SELECT topic, reason, original FROM {Names().rejections}")
    assert [(topic, reason, base64.b64decode(original)) for topic, reason, original in rows] == [
        ("mts.usage.v1", "invalid_amount", line)
    ]


def test_the_largest_amount_the_contract_allows_is_accepted(member):
    # when a charge of exactly 10 000 000.00 arrives
    report = member.usage(MEMBER, "10000000.00", "2026-01-05 10:00")
    # then it is applied: floor(10000000 / 5) = 2 000 000
    assert report.outcomes == {"applied": 1}
    assert member.balance(MEMBER) == 2_000_000


def test_many_malformed_lines_in_one_batch_are_counted_by_reason(member):
    # given a batch of valid charges of 5.00 around three invalid_amount lines and two wrong_topic lines
    bad = [_valid(amount="0.00"), _valid(amount="1.234"), _valid(amount=5),
           _valid(topic="bank.card.v1"), _valid(topic="mts.shop.v1")]
    batch = [_usage(member, amount="5.00")] + bad + [_usage(member, amount="5.00")]
    # when it is applied
    report = member.send(*batch)
    # then 5 rejected (3 invalid_amount, 2 wrong_topic), 2 applied: floor(10 / 5) = 2
    assert report.outcomes == {"applied": 2, "rejected": 5}
    assert report.rejected == {"invalid_amount": 3, "wrong_topic": 2}
    assert member.runtime.reads.rejections_by_reason() == {"invalid_amount": 3, "wrong_topic": 2}
    assert member.balance(MEMBER) == 2
