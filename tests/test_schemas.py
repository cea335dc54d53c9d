"""Tests of the inbound contract models, the parsing edge, the outbound models
and the JSON Schema export (package ``schemas``)."""
from __future__ import annotations

import base64
import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import (
    INBOUND_ADAPTER,
    REASONS,
    TOPIC_TYPES,
    TYPE_MODELS,
    BalanceMessage,
    BallyplusTransfer,
    CardPurchase,
    CardRefund,
    DeadLetterMessage,
    MemberEnrolled,
    MessageRejected,
    MgtsAccountLinked,
    MgtsBill,
    PointsEventMessage,
    PurchaseLine,
    ReturnLine,
    ShopPurchase,
    ShopReturn,
    UsageCharged,
    content_fingerprint,
    legacy_content_fingerprint,
    export_json_schemas,
    parse_line,
    parse_message,
)

SAMPLE_DIR = Path(__file__).parent / "data" / "sample"
SAMPLE_FILES = sorted(SAMPLE_DIR.glob("*.jsonl"))


def _sample_lines() -> list[bytes]:
    return [line for path in SAMPLE_FILES for line in path.read_bytes().splitlines(keepends=True)]


SAMPLE_LINES = _sample_lines()


def sample_line(event_id: str) -> bytes:
    """The raw line of the sample workload holding ``event_id``."""
    needle = f'"event_id": "{event_id}"'.encode()
    for line in SAMPLE_LINES:
        if needle in line:
            return line
    raise LookupError(event_id)


def sample_obj(event_id: str) -> dict[str, Any]:
    return json.loads(sample_line(event_id))


def as_message(obj: dict[str, Any]) -> tuple[str, bytes]:
    """(topic, Kafka value) for a sample-line dict: the value has no `topic`."""
    obj = dict(obj)
    topic = obj.pop("topic")
    return topic, json.dumps(obj).encode()


def rejected(topic: str, obj: dict[str, Any] | bytes | str) -> MessageRejected:
    raw = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
    with pytest.raises(MessageRejected) as info:
        parse_message(topic, raw)
    return info.value


def line_rejected(raw: bytes | str | dict[str, Any]) -> MessageRejected:
    if isinstance(raw, dict):
        raw = json.dumps(raw)
    with pytest.raises(MessageRejected) as info:
        parse_line(raw)
    return info.value


USAGE = {
    "event_id": "use-1",
    "type": "usage_charged",
    "occurred_at": "2025-01-03T10:58:15+03:00",
    "msisdn": "79756509350",
    "service": "mobile",
    "amount": "179.41",
}
USAGE_TOPIC = "mts.usage.v1"

PURCHASE = {
    "event_id": "shp-1",
    "type": "shop_purchase",
    "occurred_at": "2025-02-17T09:22:13+03:00",
    "msisdn": "79419248154",
    "store_id": "S68",
    "receipt_id": "rcpt-1",
    "lines": [
        {"line_id": "l0", "category": "mts_branded", "amount": "18995.20"},
        {"line_id": "l1", "category": "other", "amount": "188.13"},
    ],
}
RETURN = {
    "event_id": "ret-1",
    "type": "shop_return",
    "occurred_at": "2025-03-13T12:22:12+03:00",
    "msisdn": "79419248154",
    "store_id": "S68",
    "receipt_id": "rcpt-1",
    "lines": [{"line_id": "l0", "amount": "100.00"}],
}
SHOP_TOPIC = "mts.shop.v1"


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    obj = dict(base)
    for key, value in changes.items():
        if value is _DROP:
            obj.pop(key, None)
        else:
            obj[key] = value
    return obj


_DROP = object()


# ---------------------------------------------------------------------------
# the sample workload
# ---------------------------------------------------------------------------


def test_sample_copy_is_present() -> None:
    assert len(SAMPLE_FILES) >= 50
    assert len(SAMPLE_LINES) > 4000


def test_every_sample_line_parses_or_is_rejected() -> None:
    outcomes: dict[str, int] = {}
    for raw in SAMPLE_LINES:
        try:
            topic, event = parse_line(raw)
        except MessageRejected as exc:
            assert exc.reason in REASONS
            assert exc.detail and len(exc.detail) <= 300
            key = exc.reason
        else:
            assert event.type in TOPIC_TYPES[topic]
            key = "ok"
        outcomes[key] = outcomes.get(key, 0) + 1
    # the sample's malformed lines: truncated JSON, bad timestamps, bad
    # amounts, bad msisdns, an unknown service and missing amounts
    assert outcomes["invalid_json"] == 6
    assert outcomes["invalid_timestamp"] == 8
    assert outcomes["invalid_amount"] == 7
    assert outcomes["invalid_msisdn"] == 4
    assert outcomes["invalid_schema"] == 4
    assert outcomes["ok"] > 4000


def test_every_sample_bad_line_is_rejected_and_good_line_accepted() -> None:
    for raw in SAMPLE_LINES:
        if b'"bad-' in raw:
            with pytest.raises(MessageRejected) as info:
                parse_line(raw)
            assert info.value.event_id is not None and info.value.event_id.startswith("bad-")
        else:
            try:
                json.loads(raw)
            except ValueError:
                continue  # truncated lines, checked elsewhere
            parse_line(raw)


def test_sample_lines_via_parse_message_match_parse_line() -> None:
    for raw in SAMPLE_LINES[:500]:
        try:
            topic, event = parse_line(raw)
        except MessageRejected:
            continue
        obj = json.loads(raw)
        value = json.dumps({k: v for k, v in obj.items() if k != "topic"}).encode()
        assert parse_message(topic, value) == event
        assert content_fingerprint(parse_message(topic, value)) == content_fingerprint(event)


# ---------------------------------------------------------------------------
# every type parses from a real sample line
# ---------------------------------------------------------------------------


def test_member_enrolled_from_sample() -> None:
    topic, event = parse_line(sample_line("enr-20261125-1745"))
    assert topic == "loyalty.members.v1"
    assert isinstance(event, MemberEnrolled)
    assert event.msisdn == "79756509350"
    assert event.channel == "shop"
    assert event.occurred_at == datetime(2025, 1, 14, 5, 15, 48, tzinfo=timezone(timedelta(hours=3)))
    assert event.occurred_at.utcoffset() == timedelta(hours=3)


def test_usage_charged_from_sample() -> None:
    topic, event = parse_line(sample_line("use-20261125-1746"))
    assert topic == "mts.usage.v1"
    assert isinstance(event, UsageCharged)
    assert event.event_id == "use-20261125-1746"
    assert event.service == "mobile"
    assert event.amount == Decimal("179.41")
    assert isinstance(event.amount, Decimal)


def test_shop_purchase_from_sample() -> None:
    topic, event = parse_line(sample_line("shp-20261125-1333"))
    assert topic == "mts.shop.v1"
    assert isinstance(event, ShopPurchase)
    assert event.store_id == "S68"
    assert event.receipt_id == "rcpt-20261125-1332"
    assert [line.line_id for line in event.lines] == ["l0", "l1", "l2"]
    assert all(isinstance(line, PurchaseLine) for line in event.lines)
    assert [line.category for line in event.lines] == ["mts_branded", "mts_branded", "other"]
    assert event.lines[0].amount == Decimal("18995.20")
    assert str(event.lines[0].amount) == "18995.20"


def test_shop_return_from_sample() -> None:
    topic, event = parse_line(sample_line("ret-20261125-1974"))
    assert topic == "mts.shop.v1"
    assert isinstance(event, ShopReturn)
    assert event.receipt_id == "rcpt-20261125-1972"
    assert event.lines == [ReturnLine(line_id="l1", amount="18561.28")]


def test_mgts_account_linked_from_sample() -> None:
    topic, event = parse_line(sample_line("lnk-20261125-2131"))
    assert topic == "mgts.billing.v1"
    assert isinstance(event, MgtsAccountLinked)
    assert event.mgts_account == "MGTS66243519"
    assert event.msisdn == "79434122037"


def test_mgts_bill_from_sample() -> None:
    topic, event = parse_line(sample_line("bill-20261125-2132"))
    assert topic == "mgts.billing.v1"
    assert isinstance(event, MgtsBill)
    assert event.period == "2025-01"
    assert isinstance(event.period, str)
    assert event.amount == Decimal("447.53")


def test_card_purchase_from_sample() -> None:
    topic, event = parse_line(sample_line("cp-20261125-2589"))
    assert topic == "bank.card.v1"
    assert isinstance(event, CardPurchase)
    assert event.card_id == "card-20261125-2588"
    assert event.amount == Decimal("8973.37")


def test_card_refund_from_sample() -> None:
    topic, event = parse_line(sample_line("cr-20261125-2590"))
    assert topic == "bank.card.v1"
    assert isinstance(event, CardRefund)
    assert event.amount == Decimal("13524.96")


def test_ballyplus_transfer_from_sample() -> None:
    topic, event = parse_line(sample_line("bp-20261125-1422"))
    assert topic == "partner.ballyplus.v1"
    assert isinstance(event, BallyplusTransfer)
    assert event.partner_points == 400


def test_parse_message_every_type_from_sample() -> None:
    ids = {
        "member_enrolled": "enr-20261125-1745",
        "usage_charged": "use-20261125-1746",
        "shop_purchase": "shp-20261125-1333",
        "shop_return": "ret-20261125-1974",
        "mgts_account_linked": "lnk-20261125-2131",
        "mgts_bill": "bill-20261125-2132",
        "card_purchase": "cp-20261125-2589",
        "card_refund": "cr-20261125-2590",
        "ballyplus_transfer": "bp-20261125-1422",
    }
    assert set(ids) == set(TYPE_MODELS)
    for type_, event_id in ids.items():
        topic, value = as_message(sample_obj(event_id))
        event = parse_message(topic, value)
        assert type(event) is TYPE_MODELS[type_]
        assert event.type == type_
        # str input works as well as bytes
        assert parse_message(topic, value.decode()) == event


def test_topic_table_is_the_contract() -> None:
    assert TOPIC_TYPES == {
        "loyalty.members.v1": frozenset({"member_enrolled"}),
        "mts.usage.v1": frozenset({"usage_charged"}),
        "mts.shop.v1": frozenset({"shop_purchase", "shop_return"}),
        "mgts.billing.v1": frozenset({"mgts_account_linked", "mgts_bill"}),
        "bank.card.v1": frozenset({"card_purchase", "card_refund"}),
        "partner.ballyplus.v1": frozenset({"ballyplus_transfer"}),
    }


def test_models_are_frozen() -> None:
    event = parse_message(USAGE_TOPIC, json.dumps(USAGE))
    with pytest.raises(ValidationError):
        event.amount = Decimal("1.00")  # type: ignore[misc]
    purchase = parse_message(SHOP_TOPIC, json.dumps(PURCHASE))
    with pytest.raises(ValidationError):
        purchase.lines[0].amount = Decimal("1.00")  # type: ignore[misc]


def test_adapter_validates_dicts() -> None:
    event = INBOUND_ADAPTER.validate_python(USAGE)
    assert isinstance(event, UsageCharged)


# ---------------------------------------------------------------------------
# rejections: the sample's malformed lines
# ---------------------------------------------------------------------------


def test_sample_truncated_json_is_invalid_json() -> None:
    truncated = [raw for raw in SAMPLE_LINES if raw.rstrip().endswith(b'"event_id":')]
    assert len(truncated) == 6
    for raw in truncated:
        exc = line_rejected(raw)
        assert exc.reason == "invalid_json"
        assert exc.event_id is None and exc.msisdn is None


@pytest.mark.parametrize("event_id", ["bad-20261125-4412", "bad-20261125-4424"])
def test_sample_three_decimals_is_invalid_amount(event_id: str) -> None:
    exc = line_rejected(sample_line(event_id))
    assert sample_obj(event_id)["amount"] == "1.005"
    assert exc.reason == "invalid_amount"
    assert exc.event_id == event_id
    assert "amount" in exc.detail


@pytest.mark.parametrize("event_id", ["bad-20261125-4419", "bad-20261125-4401"])
def test_sample_negative_amount_is_invalid_amount(event_id: str) -> None:
    assert sample_obj(event_id)["amount"] == "-5.00"
    assert line_rejected(sample_line(event_id)).reason == "invalid_amount"


def test_sample_msisdn_starting_with_8_is_invalid_msisdn() -> None:
    exc = line_rejected(sample_line("bad-20261125-4426"))
    assert exc.reason == "invalid_msisdn"
    assert exc.msisdn == "89161234567"
    assert exc.event_id == "bad-20261125-4426"
    assert "msisdn" in exc.detail


def test_sample_impossible_naive_timestamp_is_invalid_timestamp() -> None:
    exc = line_rejected(sample_line("bad-20261125-4406"))
    assert exc.reason == "invalid_timestamp"
    assert "occurred_at" in exc.detail


def test_sample_unknown_service_is_invalid_schema() -> None:
    exc = line_rejected(sample_line("bad-20261125-4402"))
    assert exc.reason == "invalid_schema"
    assert "service" in exc.detail and "satellite" in exc.detail


def test_sample_missing_amount_is_invalid_schema() -> None:
    exc = line_rejected(sample_line("bad-20261125-4411"))
    assert exc.reason == "invalid_schema"
    assert "amount" in exc.detail and "missing" in exc.detail


# ---------------------------------------------------------------------------
# rejections: one minimal bad input per reason
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"{",
        b'{"event_id": ',
        b"not json",
        b"{'single': 'quotes'}",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b"\xff\xfe{}",
        b'{"event_id": "\xff"}',
        b"\xef\xbb\xbf{}",  # a byte order mark is not part of UTF-8 JSON
        b"[]",
        b"[1, 2]",
        b'"a string"',
        b"42",
        b"null",
        b"true",
        b"[" * 100_000,
        b'{"a": ' * 50_000,
        '{"type": "\ud800"}',  # a lone surrogate in a Python str
        b'{"type": "\\ud800"}',  # a lone surrogate escape
    ],
)
def test_invalid_json(raw: bytes | str) -> None:
    exc = rejected(USAGE_TOPIC, raw)
    assert exc.reason == "invalid_json"
    assert exc.event_id is None and exc.msisdn is None
    assert exc.detail and len(exc.detail) <= 300
    assert line_rejected(raw).reason == "invalid_json"


@pytest.mark.parametrize("value", [None, 42, ["x"], object()])
def test_non_text_values_are_invalid_json(value: Any) -> None:
    with pytest.raises(MessageRejected) as info:
        parse_message(USAGE_TOPIC, value)
    assert info.value.reason == "invalid_json"


def test_memoryview_and_bytearray_are_accepted() -> None:
    raw = json.dumps(USAGE).encode()
    assert parse_message(USAGE_TOPIC, bytearray(raw)) == parse_message(USAGE_TOPIC, memoryview(raw))


def test_invalid_json_precedes_unknown_topic() -> None:
    assert rejected("no.such.topic", b"{").reason == "invalid_json"


@pytest.mark.parametrize("topic", ["no.such.topic", "", "MTS.USAGE.V1", "loyalty.points-events.v1"])
def test_unknown_topic(topic: str) -> None:
    exc = rejected(topic, USAGE)
    assert exc.reason == "unknown_topic"
    assert exc.event_id == "use-1" and exc.msisdn == "79756509350"


def test_unknown_topic_precedes_unknown_type() -> None:
    assert rejected("nope", with_(USAGE, type="bogus")).reason == "unknown_topic"


@pytest.mark.parametrize("topic", [_DROP, None, 5, ["mts.usage.v1"], {"a": 1}, "nope"])
def test_parse_line_missing_or_bad_topic_is_unknown_topic(topic: Any) -> None:
    obj = with_(USAGE, topic=topic)
    exc = line_rejected(obj)
    assert exc.reason == "unknown_topic"
    assert exc.event_id == "use-1"


@pytest.mark.parametrize("type_", [_DROP, None, "", "Usage_Charged", "points_accrued", 5, ["usage_charged"], {}])
def test_unknown_type(type_: Any) -> None:
    exc = rejected(USAGE_TOPIC, with_(USAGE, type=type_))
    assert exc.reason == "unknown_type"
    assert exc.event_id == "use-1"


def test_unknown_type_precedes_wrong_topic_and_schema() -> None:
    assert rejected("bank.card.v1", {"type": "nope"}).reason == "unknown_type"


@pytest.mark.parametrize(
    ("topic", "type_"),
    [
        ("mts.shop.v1", "usage_charged"),
        ("bank.card.v1", "usage_charged"),
        ("mts.usage.v1", "card_purchase"),
        ("loyalty.members.v1", "mgts_account_linked"),
        ("mgts.billing.v1", "member_enrolled"),
        ("partner.ballyplus.v1", "card_refund"),
    ],
)
def test_wrong_topic(topic: str, type_: str) -> None:
    exc = rejected(topic, with_(USAGE, type=type_))
    assert exc.reason == "wrong_topic"
    assert type_ in exc.detail and topic in exc.detail


def test_wrong_topic_precedes_schema_errors() -> None:
    assert rejected("bank.card.v1", {"type": "usage_charged"}).reason == "wrong_topic"


def test_wrong_topic_via_parse_line() -> None:
    assert line_rejected(with_(USAGE, topic="bank.card.v1")).reason == "wrong_topic"


@pytest.mark.parametrize(
    "msisdn",
    [
        "89161234567",
        "7916123456",
        "791612345678",
        "7916123456a",
        "+79161234567",
        " 79161234567",
        "79161234567\n",
        "７９１６１２３４５６７",  # full-width digits
        "",
        79161234567,
        7.9161234567e10,
        True,
        None,
        ["79161234567"],
    ],
)
def test_invalid_msisdn(msisdn: Any) -> None:
    exc = rejected(USAGE_TOPIC, with_(USAGE, msisdn=msisdn))
    assert exc.reason == "invalid_msisdn"
    assert "msisdn" in exc.detail
    assert exc.msisdn == (msisdn if isinstance(msisdn, str) else None)


@pytest.mark.parametrize(
    "amount",
    [
        "1.005",
        "-5.00",
        "0",
        "0.00",
        "0.0",
        "10000000.01",
        "99999999",
        "1e3",
        "1E3",
        "10.",
        ".5",
        "+10.00",
        " 10.00",
        "10.00\n",
        "10,00",
        "1_000",
        "NaN",
        "Infinity",
        "",
        "١٠",  # Arabic-Indic digits
        10,
        10.5,
        0.1,
        True,
        None,
        ["10.00"],
        {"value": "10.00"},
    ],
)
def test_invalid_amount(amount: Any) -> None:
    exc = rejected(USAGE_TOPIC, with_(USAGE, amount=amount))
    assert exc.reason == "invalid_amount"
    assert "amount" in exc.detail


@pytest.mark.parametrize("amount", [10, 10.0, 179.41, 1e2])
def test_json_numbers_are_rejected_for_amount(amount: Any) -> None:
    raw = json.dumps(with_(USAGE, amount=amount))
    assert '"amount": ' + json.dumps(amount) in raw
    exc = rejected(USAGE_TOPIC, raw)
    assert exc.reason == "invalid_amount"
    assert "JSON string" in exc.detail


@pytest.mark.parametrize(
    "amount",
    ["0.01", "1", "1.5", "10.00", "007.50", "10000000", "10000000.00", "10000000.0"],
)
def test_valid_amounts(amount: str) -> None:
    event = parse_message(USAGE_TOPIC, json.dumps(with_(USAGE, amount=amount)))
    assert event.amount == Decimal(amount)


def test_amount_keeps_its_scale() -> None:
    event = parse_message(USAGE_TOPIC, json.dumps(with_(USAGE, amount="10.00")))
    assert str(event.amount) == "10.00"
    assert event.model_dump(mode="json")["amount"] == "10.00"
    event = parse_message(USAGE_TOPIC, json.dumps(with_(USAGE, amount="10.5")))
    assert event.model_dump(mode="json")["amount"] == "10.5"


@pytest.mark.parametrize("type_", ["mgts_bill", "card_purchase", "card_refund"])
def test_invalid_amount_on_every_money_type(type_: str) -> None:
    obj = {
        "mgts_bill": sample_obj("bill-20261125-2132"),
        "card_purchase": sample_obj("cp-20261125-2589"),
        "card_refund": sample_obj("cr-20261125-2590"),
    }[type_]
    obj["amount"] = 12.5
    assert line_rejected(obj).reason == "invalid_amount"
    obj["amount"] = "1.001"
    assert line_rejected(obj).reason == "invalid_amount"


def test_invalid_amount_inside_purchase_lines() -> None:
    lines = [dict(line) for line in PURCHASE["lines"]]
    lines[1]["amount"] = "1.005"
    exc = rejected(SHOP_TOPIC, with_(PURCHASE, lines=lines))
    assert exc.reason == "invalid_amount"
    assert "lines[1].amount" in exc.detail
    lines[1]["amount"] = 188.13
    assert rejected(SHOP_TOPIC, with_(PURCHASE, lines=lines)).reason == "invalid_amount"


def test_invalid_amount_inside_return_lines() -> None:
    exc = rejected(SHOP_TOPIC, with_(RETURN, lines=[{"line_id": "l0", "amount": "-1"}]))
    assert exc.reason == "invalid_amount"


@pytest.mark.parametrize("points", [0, -1, 1_000_001, 1.0, 10.5, "400", True, None, [400]])
def test_invalid_partner_points(points: Any) -> None:
    obj = with_(sample_obj("bp-20261125-1422"), partner_points=points)
    exc = line_rejected(obj)
    assert exc.reason == "invalid_amount"
    assert "partner_points" in exc.detail


@pytest.mark.parametrize("points", [1, 1_000_000])
def test_partner_points_bounds(points: int) -> None:
    _, event = parse_line(json.dumps(with_(sample_obj("bp-20261125-1422"), partner_points=points)))
    assert event.partner_points == points


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2025-01-03T10:58:15",  # naive
        "2025-01-03 10:58:15",
        "2025-01-03T10:58:15.123",  # naive with fraction
        "2025-13-40T00:00:00",  # the sample's
        "2025-13-40T00:00:00+03:00",
        "2025-02-30T10:00:00+03:00",
        "2025-01-03T24:00:00+03:00",
        "2025-01-03T10:58:15+25:00",
        "2025-01-03",
        "2025-01-03T10:58+03:00",  # no seconds
        "2025-01-03T10:58:15+0300",  # offset without colon
        "2025-01-03 10:58:15+03:00",  # space separator
        "2025-01-03T10:58:15+03:00\n",
        "20250103T105815Z",
        "yesterday",
        "",
        1735890000,
        1735890000.5,
        None,
        True,
        ["2025-01-03T10:58:15+03:00"],
    ],
)
def test_invalid_timestamp(occurred_at: Any) -> None:
    exc = rejected(USAGE_TOPIC, with_(USAGE, occurred_at=occurred_at))
    assert exc.reason == "invalid_timestamp"
    assert "occurred_at" in exc.detail


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("2026-10-05T14:03:00+03:00", timedelta(hours=3)),
        ("2026-10-05T11:03:00Z", timedelta(0)),
        ("2026-10-05t11:03:00z", timedelta(0)),
        ("2026-10-05T11:03:00.250Z", timedelta(0)),
        ("2026-10-05T06:33:00-04:30", timedelta(hours=-4, minutes=-30)),
    ],
)
def test_valid_timestamps_are_aware(text: str, offset: timedelta) -> None:
    event = parse_message(USAGE_TOPIC, json.dumps(with_(USAGE, occurred_at=text)))
    assert event.occurred_at.tzinfo is not None
    assert event.occurred_at.utcoffset() == offset


@pytest.mark.parametrize(
    "event_id",
    ["", "x" * 129, "tab\there", "new\nline", "кириллица", "del\x7f", "null\x00", 42, None, True, ["a"]],
)
def test_invalid_event_id(event_id: Any) -> None:
    exc = rejected(USAGE_TOPIC, with_(USAGE, event_id=event_id))
    assert exc.reason == "invalid_event_id"
    assert "event_id" in exc.detail
    assert exc.event_id == (event_id if isinstance(event_id, str) else None)


@pytest.mark.parametrize("event_id", ["a", "x" * 128, " !~", "use-2026/10:05 #1"])
def test_valid_event_ids(event_id: str) -> None:
    assert parse_message(USAGE_TOPIC, json.dumps(with_(USAGE, event_id=event_id))).event_id == event_id


def test_duplicate_line_id_in_purchase() -> None:
    lines = [dict(line) for line in PURCHASE["lines"]]
    lines[1]["line_id"] = "l0"
    exc = rejected(SHOP_TOPIC, with_(PURCHASE, lines=lines))
    assert exc.reason == "duplicate_line_id"
    assert "l0" in exc.detail
    assert exc.event_id == "shp-1"


def test_duplicate_line_id_in_return() -> None:
    lines = [{"line_id": "l0", "amount": "1.00"}, {"line_id": "l0", "amount": "2.00"}]
    assert rejected(SHOP_TOPIC, with_(RETURN, lines=lines)).reason == "duplicate_line_id"


def test_same_line_ids_in_different_messages_are_fine() -> None:
    parse_message(SHOP_TOPIC, json.dumps(PURCHASE))
    parse_message(SHOP_TOPIC, json.dumps(RETURN))


@pytest.mark.parametrize(
    ("base", "topic", "changes"),
    [
        (USAGE, USAGE_TOPIC, {"service": "satellite"}),
        (USAGE, USAGE_TOPIC, {"service": "Mobile"}),
        (USAGE, USAGE_TOPIC, {"service": None}),
        (USAGE, USAGE_TOPIC, {"amount": _DROP}),
        (USAGE, USAGE_TOPIC, {"msisdn": _DROP}),
        (USAGE, USAGE_TOPIC, {"event_id": _DROP}),
        (USAGE, USAGE_TOPIC, {"occurred_at": _DROP}),
        (PURCHASE, SHOP_TOPIC, {"store_id": ""}),
        (PURCHASE, SHOP_TOPIC, {"store_id": "s" * 129}),
        (PURCHASE, SHOP_TOPIC, {"store_id": 68}),
        (PURCHASE, SHOP_TOPIC, {"receipt_id": None}),
        (PURCHASE, SHOP_TOPIC, {"lines": []}),
        (PURCHASE, SHOP_TOPIC, {"lines": "l0"}),
        (PURCHASE, SHOP_TOPIC, {"lines": {"line_id": "l0"}}),
        (PURCHASE, SHOP_TOPIC, {"lines": ["l0"]}),
        (PURCHASE, SHOP_TOPIC, {"lines": [{"line_id": "l0", "category": "food", "amount": "1.00"}]}),
        (PURCHASE, SHOP_TOPIC, {"lines": [{"line_id": "l0", "amount": "1.00"}]}),
        (PURCHASE, SHOP_TOPIC, {"lines": [{"line_id": "", "category": "other", "amount": "1.00"}]}),
        (PURCHASE, SHOP_TOPIC, {"lines": [{"line_id": 0, "category": "other", "amount": "1.00"}]}),
        (
            PURCHASE,
            SHOP_TOPIC,
            {"lines": [{"line_id": f"l{i}", "category": "other", "amount": "1.00"} for i in range(201)]},
        ),
        (RETURN, SHOP_TOPIC, {"lines": []}),
        (RETURN, SHOP_TOPIC, {"lines": [{"line_id": "l0"}]}),
    ],
)
def test_invalid_schema(base: dict[str, Any], topic: str, changes: dict[str, Any]) -> None:
    exc = rejected(topic, with_(base, **changes))
    assert exc.reason == "invalid_schema"
    assert exc.detail.startswith("Field '")


def test_two_hundred_lines_are_fine() -> None:
    lines = [{"line_id": f"l{i}", "category": "other", "amount": "1.00"} for i in range(200)]
    event = parse_message(SHOP_TOPIC, json.dumps(with_(PURCHASE, lines=lines)))
    assert len(event.lines) == 200


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"channel": "fax"}, "invalid_schema"),
        ({"channel": _DROP}, "invalid_schema"),
    ],
)
def test_member_enrolled_channel(changes: dict[str, Any], reason: str) -> None:
    assert line_rejected(with_(sample_obj("enr-20261125-1745"), **changes)).reason == reason


@pytest.mark.parametrize("period", ["2025-13", "2025-00", "2025-1", "25-01", "2025/01", "2025-01-01", 202501, None])
def test_mgts_bill_bad_period_is_invalid_schema(period: Any) -> None:
    exc = line_rejected(with_(sample_obj("bill-20261125-2132"), period=period))
    assert exc.reason == "invalid_schema"
    assert "period" in exc.detail
    assert exc.msisdn is None  # an mgts_bill has no msisdn


@pytest.mark.parametrize("mgts_account", ["", None, 66243519, "M" * 129])
def test_bad_mgts_account_is_invalid_schema(mgts_account: Any) -> None:
    obj = with_(sample_obj("lnk-20261125-2131"), mgts_account=mgts_account)
    assert line_rejected(obj).reason == "invalid_schema"


def test_first_failing_field_wins() -> None:
    # event_id comes before occurred_at, which comes before msisdn and amount
    obj = with_(USAGE, event_id="", occurred_at="bad", msisdn="8", amount="x")
    assert rejected(USAGE_TOPIC, obj).reason == "invalid_event_id"
    obj = with_(USAGE, occurred_at="bad", msisdn="8", amount="x")
    assert rejected(USAGE_TOPIC, obj).reason == "invalid_timestamp"
    obj = with_(USAGE, msisdn="8", amount="x")
    exc = rejected(USAGE_TOPIC, obj)
    assert exc.reason == "invalid_msisdn"
    assert "1 more error" in exc.detail


def test_detail_is_short_and_readable() -> None:
    exc = rejected(USAGE_TOPIC, with_(USAGE, amount="9" * 5000, msisdn="x" * 5000))
    assert len(exc.detail) <= 300
    assert "\n" not in exc.detail
    assert str(exc).startswith("invalid_msisdn: ")
    assert "MessageRejected(reason='invalid_msisdn'" in repr(exc)


def test_rejection_is_an_exception_with_attributes() -> None:
    exc = MessageRejected("invalid_schema", "Field 'x' is required but missing.", "e-1", None)
    assert isinstance(exc, Exception)
    assert (exc.reason, exc.detail, exc.event_id, exc.msisdn) == (
        "invalid_schema",
        "Field 'x' is required but missing.",
        "e-1",
        None,
    )


# ---------------------------------------------------------------------------
# extra fields, fingerprints
# ---------------------------------------------------------------------------


def test_extra_fields_are_ignored() -> None:
    obj = with_(USAGE, extra_field="whatever", nested={"a": [1, 2.5, None]}, amount_usd=3.5)
    event = parse_message(USAGE_TOPIC, json.dumps(obj))
    assert event == parse_message(USAGE_TOPIC, json.dumps(USAGE))
    assert "extra_field" not in event.model_dump()
    lines = [dict(line, colour="red") for line in PURCHASE["lines"]]
    event = parse_message(SHOP_TOPIC, json.dumps(with_(PURCHASE, lines=lines)))
    assert "colour" not in event.model_dump()["lines"][0]


def test_topic_field_is_not_part_of_the_event() -> None:
    topic, event = parse_line(sample_line("use-20261125-1746"))
    assert "topic" not in event.model_dump()


def test_fingerprint_is_stable_under_key_order_whitespace_and_extras() -> None:
    raw = sample_line("shp-20261125-1333")
    obj = json.loads(raw)
    _, event = parse_line(raw)
    fp = content_fingerprint(event)
    assert fp.startswith("v2:") and len(fp) == 67 and int(fp[3:], 16) >= 0

    reordered = dict(reversed(list(obj.items())))
    reordered["lines"] = [dict(reversed(list(line.items()))) for line in obj["lines"]]
    compact = json.dumps(reordered, separators=(",", ":"))
    spaced = json.dumps(with_(obj, unknown=[1, {"x": "y"}], note="redelivery"), indent=4)
    assert content_fingerprint(parse_line(compact)[1]) == fp
    assert content_fingerprint(parse_line(spaced)[1]) == fp
    # the same message without the embedded `topic`, as a Kafka value
    topic, value = as_message(obj)
    assert content_fingerprint(parse_message(topic, value)) == fp


def test_fingerprint_changes_with_any_contract_field() -> None:
    base = content_fingerprint(parse_message(USAGE_TOPIC, json.dumps(USAGE)))
    changes = [
        {"amount": "179.42"},
        {"amount": "179.40"},
        {"amount": "179.4"},
        {"msisdn": "79756509351"},
        {"service": "tv"},
        {"event_id": "use-2"},
        {"occurred_at": "2025-01-03T10:58:16+03:00"},
    ]
    seen = {base}
    for change in changes:
        fp = content_fingerprint(parse_message(USAGE_TOPIC, json.dumps(with_(USAGE, **change))))
        assert fp not in seen, change
        seen.add(fp)


def test_fingerprint_distinguishes_types_with_the_same_fields() -> None:
    obj = sample_obj("cp-20261125-2589")
    purchase = parse_line(json.dumps(obj))[1]
    refund = parse_line(json.dumps(with_(obj, type="card_refund")))[1]
    assert content_fingerprint(purchase) != content_fingerprint(refund)


def test_fingerprint_of_a_changed_line_amount() -> None:
    lines = [dict(line) for line in PURCHASE["lines"]]
    base = content_fingerprint(parse_message(SHOP_TOPIC, json.dumps(PURCHASE)))
    lines[0]["amount"] = "18995.21"
    assert content_fingerprint(parse_message(SHOP_TOPIC, json.dumps(with_(PURCHASE, lines=lines)))) != base


def test_fingerprint_canonical_json_keeps_decimal_strings() -> None:
    import hashlib

    event = parse_message(USAGE_TOPIC, json.dumps(with_(USAGE, amount="10.00")))
    canonical = (
        '{"event_id":"use-1","occurred_at":"2025-01-03T10:58:15+03:00","type":"usage_charged",'
        '"msisdn":"79756509350","service":"mobile","amount":"10.00"}'
    )
    assert content_fingerprint(event) == "v2:" + hashlib.sha256(canonical.encode()).hexdigest()


def test_legacy_fingerprint_is_the_sorted_json_of_earlier_releases() -> None:
    """Inbox rows written before the fingerprint was versioned hold this one."""
    import hashlib

    event = parse_message(USAGE_TOPIC, json.dumps(with_(USAGE, amount="10.00")))
    canonical = (
        '{"amount":"10.00","event_id":"use-1","msisdn":"79756509350",'
        '"occurred_at":"2025-01-03T10:58:15+03:00","service":"mobile","type":"usage_charged"}'
    )
    assert legacy_content_fingerprint(event) == hashlib.sha256(canonical.encode()).hexdigest()


def test_json_dump_round_trips_through_the_adapter() -> None:
    """The engine keeps held messages as model_dump(mode="json") and validates
    them again later: that must give back the same event."""
    for raw in SAMPLE_LINES:
        try:
            _, event = parse_line(raw)
        except MessageRejected:
            continue
        dumped = event.model_dump(mode="json")
        again = INBOUND_ADAPTER.validate_python(dumped)
        assert again == event
        assert content_fingerprint(again) == content_fingerprint(event)
        assert json.loads(json.dumps(dumped)) == dumped


# ---------------------------------------------------------------------------
# Python-side construction
# ---------------------------------------------------------------------------


def test_models_can_be_built_in_python() -> None:
    moment = datetime(2026, 10, 5, 14, 3, tzinfo=timezone(timedelta(hours=3)))
    event = UsageCharged(
        event_id="e-1",
        type="usage_charged",
        occurred_at=moment,
        msisdn="79161234567",
        service="tv",
        amount=Decimal("10.00"),
    )
    assert event.amount == Decimal("10.00") and event.occurred_at == moment
    with pytest.raises(ValidationError):
        UsageCharged(**{**event.model_dump(), "amount": Decimal("1.005")})
    with pytest.raises(ValidationError):
        UsageCharged(**{**event.model_dump(), "amount": Decimal("NaN")})
    with pytest.raises(ValidationError):
        UsageCharged(**{**event.model_dump(), "occurred_at": datetime(2026, 10, 5)})
    with pytest.raises(ValidationError):
        UsageCharged(**{**event.model_dump(), "amount": 10.0})
    hundred = UsageCharged(**{**event.model_dump(), "amount": Decimal("1E+2")})
    assert hundred.model_dump(mode="json")["amount"] == "100"
    assert INBOUND_ADAPTER.validate_python(hundred.model_dump(mode="json")) == hundred
    utc = UsageCharged(**{**event.model_dump(), "occurred_at": moment.astimezone(timezone.utc)})
    assert utc.model_dump(mode="json")["occurred_at"] == "2026-10-05T11:03:00Z"
    assert INBOUND_ADAPTER.validate_python(utc.model_dump(mode="json")) == utc


# ---------------------------------------------------------------------------
# outbound
# ---------------------------------------------------------------------------

NOW = datetime(2026, 10, 5, 14, 3, tzinfo=timezone(timedelta(hours=3)))


def test_points_event_message_round_trip() -> None:
    message = PointsEventMessage(
        msisdn="79161234567",
        account_version=3,
        event_type="PointsAccrued",
        points=179,
        rule="rule-1",
        source_event_id="use-1",
        occurred_at=NOW,
        lot_date=date(2026, 10, 5),
        expires_on=date(2027, 10, 5),
        balance_after=500,
    )
    data = json.loads(message.model_dump_json())
    assert data["lot_date"] == "2026-10-05" and data["reason"] is None
    assert data["occurred_at"] == "2026-10-05T14:03:00+03:00"
    assert PointsEventMessage.model_validate_json(message.model_dump_json()) == message


def test_balance_message() -> None:
    message = BalanceMessage(msisdn="79161234567", balance=0, as_of_version=1, updated_at=NOW)
    assert BalanceMessage.model_validate_json(message.model_dump_json()) == message
    with pytest.raises(ValidationError):
        BalanceMessage(msisdn="79161234567", balance=-1, as_of_version=1, updated_at=NOW)
    with pytest.raises(ValidationError):
        BalanceMessage(msisdn="89161234567", balance=1, as_of_version=1, updated_at=NOW)
    with pytest.raises(ValidationError):
        BalanceMessage(msisdn="79161234567", balance=1, as_of_version=1, updated_at=datetime(2026, 1, 1))


def test_dead_letter_from_rejection_keeps_the_original_bytes() -> None:
    raw = sample_line("bad-20261125-4426")
    with pytest.raises(MessageRejected) as info:
        parse_line(raw)
    letter = DeadLetterMessage.from_rejection(
        info.value, source_topic="mts.usage.v1", original=raw, partition=2, offset=41, key="89161234567"
    )
    assert letter.reason == "invalid_msisdn" and letter.event_id == "bad-20261125-4426"
    assert base64.b64decode(letter.original_base64) == raw
    assert letter.original_bytes() == raw
    assert letter.received_at.tzinfo is not None
    again = DeadLetterMessage.model_validate_json(letter.model_dump_json())
    assert again == letter


def test_dead_letter_for_non_utf8_bytes() -> None:
    raw = b"\xff\xfe\x00garbage"
    with pytest.raises(MessageRejected) as info:
        parse_message("mts.usage.v1", raw)
    letter = DeadLetterMessage.from_rejection(info.value, source_topic="mts.usage.v1", original=raw, received_at=NOW)
    assert letter.original_bytes() == raw
    assert letter.partition is None and letter.event_id is None


# ---------------------------------------------------------------------------
# JSON Schema export
# ---------------------------------------------------------------------------


def test_export_writes_valid_json_schema_files(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "schemas"
    paths = export_json_schemas(target)
    names = {path.name for path in paths}
    expected = {f"{type_}.schema.json" for type_ in TYPE_MODELS} | {
        "inbound.schema.json",
        "points_event.schema.json",
        "balance.schema.json",
        "dead_letter.schema.json",
    }
    assert names == expected
    assert len(paths) == len(expected)
    for path in paths:
        assert path.parent == target and path.is_file()
        schema = json.loads(path.read_text(encoding="utf-8"))
        assert schema["title"] and schema["$id"]
        assert schema["$schema"].startswith("https://json-schema.org/")

    usage = json.loads((target / "usage_charged.schema.json").read_text())
    assert usage["properties"]["amount"]["type"] == "string"
    assert usage["properties"]["amount"]["pattern"] == r"^[0-9]+(\.[0-9]{1,2})?$"
    assert usage["properties"]["type"]["const"] == "usage_charged"
    assert set(usage["required"]) == {"event_id", "type", "occurred_at", "msisdn", "service", "amount"}

    purchase = json.loads((target / "shop_purchase.schema.json").read_text())
    line = purchase["$defs"]["PurchaseLine"]
    assert line["properties"]["amount"]["type"] == "string"
    assert "pattern" in line["properties"]["amount"]

    union = json.loads((target / "inbound.schema.json").read_text())
    assert union["discriminator"]["propertyName"] == "type"
    assert set(union["discriminator"]["mapping"]) == set(TYPE_MODELS)

    bally = json.loads((target / "ballyplus_transfer.schema.json").read_text())
    assert bally["properties"]["partner_points"]["type"] == "integer"

    # exporting twice is idempotent
    assert [p.read_text() for p in export_json_schemas(target)] == [p.read_text() for p in paths]


def test_exported_patterns_agree_with_the_models(tmp_path: Path) -> None:
    import re

    export_json_schemas(tmp_path)
    usage = json.loads((tmp_path / "usage_charged.schema.json").read_text())
    amount = re.compile(usage["properties"]["amount"]["pattern"])
    occurred = re.compile(usage["properties"]["occurred_at"]["pattern"])
    msisdn = re.compile(usage["properties"]["msisdn"]["pattern"])
    for raw in SAMPLE_LINES:
        try:
            _, event = parse_line(raw)
        except MessageRejected:
            continue
        obj = json.loads(raw)
        if "amount" in obj:
            assert amount.match(obj["amount"])
        assert occurred.match(obj["occurred_at"])
        if "msisdn" in obj:
            assert msisdn.match(obj["msisdn"])


# ---------------------------------------------------------------------------
# robustness
# ---------------------------------------------------------------------------


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_ever_raise_message_rejected(raw: bytes) -> None:
    try:
        topic, event = parse_line(raw)
    except MessageRejected as exc:
        assert exc.reason in REASONS
        assert isinstance(exc.detail, str) and 0 < len(exc.detail) <= 300
    else:  # pragma: no cover - astronomically unlikely
        assert event.type in TOPIC_TYPES[topic]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=256))
def test_arbitrary_text_only_ever_raises_message_rejected(raw: str) -> None:
    for call in (lambda: parse_line(raw), lambda: parse_message(USAGE_TOPIC, raw)):
        try:
            call()
        except MessageRejected as exc:
            assert exc.reason in REASONS


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(
        [
            "use-20261125-1746",
            "shp-20261125-1333",
            "ret-20261125-1974",
            "bill-20261125-2132",
            "bp-20261125-1422",
            "enr-20261125-1745",
            "lnk-20261125-2131",
            "cp-20261125-2589",
        ]
    ),
    field=st.sampled_from(
        ["topic", "type", "event_id", "occurred_at", "msisdn", "amount", "service", "channel", "lines",
         "partner_points", "period", "store_id", "receipt_id", "card_id", "mgts_account"]
    ),
    value=_JSON_VALUES,
)
def test_mutated_sample_messages_only_ever_raise_message_rejected(base: str, field: str, value: Any) -> None:
    obj = sample_obj(base)
    obj[field] = value
    raw = json.dumps(obj)
    try:
        topic, event = parse_line(raw)
    except MessageRejected as exc:
        assert exc.reason in REASONS
        assert len(exc.detail) <= 300
    else:
        assert event.type in TOPIC_TYPES[topic]
        content_fingerprint(event)  # never raises for a valid event
