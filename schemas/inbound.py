"""Inbound message models: one strict, frozen pydantic model per contract type.

The field names and rules are the contract in EVENTS.md. The models are
written to validate the Python objects a JSON parser produces (``dict``,
``list``, ``str``, ``int``, ``float``, ``bool``, ``None``); the parsing edge in
:mod:`schemas.intake` parses the bytes once and validates the resulting dict.

Type rules that go beyond pydantic's defaults:

* every string field accepts only a ``str`` (never a number coerced to text);
* money (``amount``) must be given as a *string* (``"10.00"``), never as a JSON
  number, so no float ever enters the money path; it becomes a
  :class:`decimal.Decimal` that keeps the given scale (``"10.00"`` stays
  ``Decimal("10.00")``). A ``Decimal`` instance is also accepted when a model is
  built in Python code (same range and scale rules);
* ``occurred_at`` must be a string in RFC 3339 ``date-time`` form with a
  mandatory offset (``Z`` or ``±HH:MM``); it becomes an aware ``datetime``. An
  aware ``datetime`` instance is also accepted when built in Python code;
* ``partner_points`` must be a JSON integer (not a bool, a float or a string).

Unknown extra fields are ignored, as the contract says.
"""
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from .msisdn import Msisdn

__all__ = [
    "AMOUNT_PATTERN",
    "MAX_AMOUNT",
    "MAX_LINES",
    "MAX_PARTNER_POINTS",
    "TIMESTAMP_PATTERN",
    "BallyplusTransfer",
    "CardPurchase",
    "CardRefund",
    "InboundEvent",
    "MemberEnrolled",
    "MgtsAccountLinked",
    "MgtsBill",
    "PurchaseLine",
    "ReturnLine",
    "ShopPurchase",
    "ShopReturn",
    "TYPE_MODELS",
    "UsageCharged",
]

# --------------------------------------------------------------------------
# Field types
# --------------------------------------------------------------------------

#: JSON Schema / ECMA pattern of a money string (rubles, at most 2 decimals).
AMOUNT_PATTERN = r"^[0-9]+(\.[0-9]{1,2})?$"
MAX_AMOUNT = Decimal("10000000.00")
MAX_PARTNER_POINTS = 1_000_000
MAX_LINES = 200

#: JSON Schema / ECMA pattern of an RFC 3339 date-time with a mandatory offset.
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)

# Python-side matchers use fullmatch on unanchored patterns: in Python's `re`
# a trailing `$` would also match before a final newline ("10.00\n").
_AMOUNT_RE = re.compile(AMOUNT_PATTERN[1:-1])
_TIMESTAMP_RE = re.compile(TIMESTAMP_PATTERN[1:-1])


def _json_kind(value: Any) -> str:
    """How a value looked in the JSON document, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _money(value: Any) -> Decimal:
    if isinstance(value, str):
        if _AMOUNT_RE.fullmatch(value) is None:
            raise PydanticCustomError(
                "amount_format",
                "must be a positive decimal string with at most two decimals, "
                'like "10.00"',
            )
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        # Python-side construction only: JSON never yields a Decimal.
        if not value.is_finite() or value.as_tuple().exponent < -2:  # type: ignore[operator]
            raise PydanticCustomError(
                "amount_format", "must be a finite amount with at most two decimals"
            )
        # keep the scale, but never an exponent form ("1E+2") in dumps
        amount = value if value.as_tuple().exponent <= 0 else value.quantize(Decimal(1))  # type: ignore[operator]
    else:
        raise PydanticCustomError(
            "amount_type",
            'must be a JSON string like "10.00", not {kind}',
            {"kind": _json_kind(value)},
        )
    if amount <= 0:
        raise PydanticCustomError("amount_range", "must be greater than 0")
    if amount > MAX_AMOUNT:
        raise PydanticCustomError("amount_range", "must be at most 10000000.00")
    return amount


def _timestamp(value: Any) -> Any:
    if isinstance(value, str):
        if _TIMESTAMP_RE.fullmatch(value) is None:
            raise PydanticCustomError(
                "timestamp_format",
                "must be an RFC 3339 timestamp with an offset, "
                "like 2026-10-05T14:03:00+03:00",
            )
        return value  # pydantic-core parses it and checks the calendar
    if isinstance(value, datetime):
        return value  # Python-side construction; AwareDatetime checks tzinfo
    raise PydanticCustomError(
        "timestamp_type",
        "must be a JSON string holding an RFC 3339 timestamp, not {kind}",
        {"kind": _json_kind(value)},
    )


Money = Annotated[
    Decimal,
    BeforeValidator(_money),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": AMOUNT_PATTERN,
            "description": "Rubles as a decimal string: greater than 0, "
            "at most two decimals, at most 10000000.00. Never a JSON number.",
            "examples": ["179.41", "10.00", "5"],
        }
    ),
]

Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_timestamp),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
            "description": "RFC 3339 timestamp with an offset.",
            "examples": ["2026-10-05T14:03:00+03:00"],
        }
    ),
]

EventId = Annotated[
    str,
    StringConstraints(strict=True, pattern=r"^[\x20-\x7E]{1,128}$"),
    Field(description="1-128 printable ASCII characters, unique within the source."),
]


Ident = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128)]

Period = Annotated[
    str,
    StringConstraints(strict=True, pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$"),
    Field(description="Billing month, YYYY-MM.", examples=["2026-09"]),
]

PartnerPoints = Annotated[int, Field(strict=True, ge=1, le=MAX_PARTNER_POINTS)]

Service = Literal["mobile", "mobile_internet", "home_internet", "tv"]
Channel = Literal["web", "sms", "shop", "auto"]
Category = Literal["mts_branded", "other", "excluded"]


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------

_CONFIG = ConfigDict(frozen=True, extra="ignore")


def _unique_line_ids(lines: list[Any]) -> list[Any]:
    seen: set[str] = set()
    for line in lines:
        if line.line_id in seen:
            raise PydanticCustomError(
                "duplicate_line_id",
                "line_id '{line_id}' appears more than once in the message",
                {"line_id": line.line_id},
            )
        seen.add(line.line_id)
    return lines


class PurchaseLine(BaseModel):
    """One line of a shop receipt."""

    model_config = _CONFIG

    line_id: Ident
    category: Category
    amount: Money


class ReturnLine(BaseModel):
    """One returned line, naming the purchase receipt's ``line_id``."""

    model_config = _CONFIG

    line_id: Ident
    amount: Money


class _Inbound(BaseModel):
    model_config = _CONFIG

    event_id: EventId
    occurred_at: Timestamp


class MemberEnrolled(_Inbound):
    type: Literal["member_enrolled"]
    msisdn: Msisdn
    channel: Channel


class UsageCharged(_Inbound):
    type: Literal["usage_charged"]
    msisdn: Msisdn
    service: Service
    amount: Money


class ShopPurchase(_Inbound):
    type: Literal["shop_purchase"]
    msisdn: Msisdn
    store_id: Ident
    receipt_id: Ident
    lines: Annotated[
        list[PurchaseLine],
        Field(min_length=1, max_length=MAX_LINES),
        AfterValidator(_unique_line_ids),
    ]


class ShopReturn(_Inbound):
    type: Literal["shop_return"]
    msisdn: Msisdn
    store_id: Ident
    receipt_id: Ident = Field(description="The purchase's receipt_id.")
    lines: Annotated[
        list[ReturnLine],
        Field(min_length=1, max_length=MAX_LINES),
        AfterValidator(_unique_line_ids),
    ]


class MgtsAccountLinked(_Inbound):
    type: Literal["mgts_account_linked"]
    mgts_account: Ident
    msisdn: Msisdn


class MgtsBill(_Inbound):
    type: Literal["mgts_bill"]
    mgts_account: Ident
    period: Period
    amount: Money


class CardPurchase(_Inbound):
    type: Literal["card_purchase"]
    msisdn: Msisdn
    card_id: Ident
    amount: Money


class CardRefund(_Inbound):
    type: Literal["card_refund"]
    msisdn: Msisdn
    card_id: Ident
    amount: Money


class BallyplusTransfer(_Inbound):
    type: Literal["ballyplus_transfer"]
    msisdn: Msisdn
    partner_points: PartnerPoints


InboundEvent = Annotated[
    Union[
        MemberEnrolled,
        UsageCharged,
        ShopPurchase,
        ShopReturn,
        MgtsAccountLinked,
        MgtsBill,
        CardPurchase,
        CardRefund,
        BallyplusTransfer,
    ],
    Field(discriminator="type"),
]

#: type tag -> model class, in contract order.
TYPE_MODELS: dict[str, type[_Inbound]] = {
    "member_enrolled": MemberEnrolled,
    "usage_charged": UsageCharged,
    "shop_purchase": ShopPurchase,
    "shop_return": ShopReturn,
    "mgts_account_linked": MgtsAccountLinked,
    "mgts_bill": MgtsBill,
    "card_purchase": CardPurchase,
    "card_refund": CardRefund,
    "ballyplus_transfer": BallyplusTransfer,
}
