"""The parsing edge: raw Kafka values / JSON Lines records -> inbound events.

Every way a message can be wrong ends in :class:`MessageRejected` with a
machine-readable ``reason`` and a short human-readable ``detail``; nothing
else escapes :func:`parse_message` or :func:`parse_line`.

Reasons, checked in this order (the first that applies wins):

``invalid_json``
    not UTF-8, not JSON (``NaN``/``Infinity`` included), or not a JSON object.
``unknown_topic``
    the topic is not an inbound topic (for :func:`parse_line`: the record has
    no string ``topic`` field, or names an unknown one).
``unknown_type``
    ``type`` is missing, not a string, or not a contract type.
``wrong_topic``
    the type is not carried on that topic.
``invalid_msisdn`` / ``invalid_amount`` / ``invalid_timestamp`` / ``invalid_event_id`` / ``duplicate_line_id`` / ``invalid_schema``
    schema validation failed; the reason comes from the first failing field
    (fields are checked in model order: ``event_id``, ``occurred_at``, then
    the type's own fields in contract order). A *missing* field is always
    ``invalid_schema``; a present but malformed ``msisdn``, ``amount``
    (including inside ``lines``) / ``partner_points``, ``occurred_at`` or
    ``event_id`` gets its own reason, whatever the JSON type it was given as;
    anything else (bad enum, wrong type, bad ids, line counts, ...) is
    ``invalid_schema``.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import from_json

from .inbound import TYPE_MODELS, InboundEvent, _json_kind

__all__ = [
    "REASONS",
    "TOPIC_TYPES",
    "TYPE_TOPIC",
    "INBOUND_ADAPTER",
    "MessageRejected",
    "content_fingerprint",
    "legacy_content_fingerprint",
    "parse_line",
    "parse_message",
]

#: inbound topic -> the types it carries (EVENTS.md, "Inbound topics").
TOPIC_TYPES: dict[str, frozenset[str]] = {
    "loyalty.members.v1": frozenset({"member_enrolled"}),
    "mts.usage.v1": frozenset({"usage_charged"}),
    "mts.shop.v1": frozenset({"shop_purchase", "shop_return"}),
    "mgts.billing.v1": frozenset({"mgts_account_linked", "mgts_bill"}),
    "bank.card.v1": frozenset({"card_purchase", "card_refund"}),
    "partner.ballyplus.v1": frozenset({"ballyplus_transfer"}),
}

#: type -> the one topic that carries it.
TYPE_TOPIC: dict[str, str] = {
    type_: topic for topic, types in TOPIC_TYPES.items() for type_ in types
}

#: Every reason :class:`MessageRejected` can carry, in precedence order.
REASONS: tuple[str, ...] = (
    "invalid_json",
    "unknown_topic",
    "unknown_type",
    "wrong_topic",
    "invalid_msisdn",
    "invalid_amount",
    "invalid_timestamp",
    "invalid_event_id",
    "duplicate_line_id",
    "invalid_schema",
)

#: Built once: validates a parsed JSON object into the right inbound model.
INBOUND_ADAPTER: TypeAdapter[InboundEvent] = TypeAdapter(InboundEvent)

_DETAIL_LIMIT = 300

_PATTERN_MESSAGES = {
    "msisdn": 'must be 11 digits starting with "7"',
    "event_id": "must be 1-128 printable ASCII characters",
    "period": "must be YYYY-MM with a month from 01 to 12",
}

_FIELD_REASONS = {
    "msisdn": "invalid_msisdn",
    "amount": "invalid_amount",
    "partner_points": "invalid_amount",
    "occurred_at": "invalid_timestamp",
    "event_id": "invalid_event_id",
}


class MessageRejected(Exception):
    """A message the engine will not apply; it goes to the dead letters.

    ``event_id`` / ``msisdn`` are the raw values of those fields when the
    message was a JSON object holding them as strings (even if the value is
    itself malformed), else ``None``.
    """

    def __init__(
        self,
        reason: str,
        detail: str,
        event_id: str | None = None,
        msisdn: str | None = None,
    ) -> None:
        super().__init__(reason, detail, event_id, msisdn)
        self.reason = reason
        self.detail = detail
        self.event_id = event_id
        self.msisdn = msisdn

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"

    def __repr__(self) -> str:
        return (
            f"MessageRejected(reason={self.reason!r}, detail={self.detail!r}, "
            f"event_id={self.event_id!r}, msisdn={self.msisdn!r})"
        )


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _cap(text: str) -> str:
    if len(text) <= _DETAIL_LIMIT:
        return text
    return text[: _DETAIL_LIMIT - 3] + "..."


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _str_or_none(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def _reject(reason: str, detail: str, obj: dict[str, Any] | None = None) -> MessageRejected:
    if obj is None:
        return MessageRejected(reason, _cap(detail))
    return MessageRejected(
        reason, _cap(detail), _str_or_none(obj, "event_id"), _str_or_none(obj, "msisdn")
    )


def _load(raw: object) -> dict[str, Any]:
    """Parse the JSON once. Only a JSON object (dict) gets through. `raw` is
    whatever the caller got (a Kafka tombstone is None; a memoryview is read)."""
    if isinstance(raw, memoryview):
        raw = raw.tobytes()
    if not isinstance(raw, (bytes, bytearray, str)):
        kind = "empty (null)" if raw is None else f"of type {type(raw).__name__}"
        raise _reject("invalid_json", f"The message value is {kind}, not JSON text.")
    try:
        obj = from_json(raw, allow_inf_nan=False)
    except Exception as exc:  # ValueError (syntax, UTF-8, depth), TypeError (surrogates)
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TypeError):
            reason = "the text is not valid Unicode"
        raise _reject("invalid_json", f"The message is not valid UTF-8 JSON: {reason}.") from None
    if not isinstance(obj, dict):
        raise _reject(
            "invalid_json",
            f"The message is JSON but {_json_kind(obj)}, not a JSON object.",
        )
    return obj


def _loc_text(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(message)"


def _rejection_from(error: ValidationError, type_: str, obj: dict[str, Any]) -> MessageRejected:
    errors = error.errors(include_url=False, include_context=False)
    first = errors[0]
    loc = tuple(first["loc"])
    if loc and loc[0] == type_:  # the discriminated union prefixes the tag
        loc = loc[1:]
    etype = first["type"]
    names = [part for part in loc if isinstance(part, str)]
    field = names[-1] if names else None

    if etype == "duplicate_line_id":
        reason = "duplicate_line_id"
    elif etype == "missing":
        reason = "invalid_schema"
    else:
        reason = _FIELD_REASONS.get(field or "", "invalid_schema")

    where = _loc_text(loc)
    if etype == "missing":
        detail = f"Field '{where}' is required but missing"
    else:
        msg = first["msg"]
        if etype == "string_pattern_mismatch" and field in _PATTERN_MESSAGES:
            msg = _PATTERN_MESSAGES[field]
        elif msg.startswith("Input should"):
            msg = msg[len("Input "):]
        if msg.startswith(("must", "should")):
            detail = f"Field '{where}' {msg}"
        else:
            detail = f"Field '{where}': {msg}"
        if etype != "duplicate_line_id":
            detail += f" (got {_short(first.get('input'))})"
    if len(errors) > 1:
        more = len(errors) - 1
        detail += f"; and {more} more error{'s' if more > 1 else ''}"
    return _reject(reason, detail + ".", obj)


def _validate(topic: Any, obj: dict[str, Any]) -> InboundEvent:
    if not isinstance(topic, str) or topic not in TOPIC_TYPES:
        raise _reject(
            "unknown_topic",
            f"Topic {_short(topic)} is not an inbound topic of the contract.",
            obj,
        )
    type_ = obj.get("type")
    if not isinstance(type_, str) or type_ not in TYPE_MODELS:
        if "type" not in obj:
            detail = "The message has no 'type' field."
        else:
            detail = f"Type {_short(type_)} is not an inbound event type of the contract."
        raise _reject("unknown_type", detail, obj)
    if type_ not in TOPIC_TYPES[topic]:
        raise _reject(
            "wrong_topic",
            f"Type '{type_}' is not accepted on topic '{topic}' "
            f"(it belongs on '{TYPE_TOPIC[type_]}').",
            obj,
        )
    try:
        return INBOUND_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise _rejection_from(exc, type_, obj) from None


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


def parse_message(topic: str, raw: bytes | str) -> InboundEvent:
    """Parse and validate one Kafka message value received on ``topic``.

    Raises :class:`MessageRejected` (and nothing else) when it is not a valid
    contract message for that topic.
    """
    obj = _load(raw)
    return _validate(topic, obj)


def parse_line(raw: bytes | str) -> tuple[str, InboundEvent]:
    """Parse one JSON Lines record of the embedded mode: a message object with
    an extra ``topic`` field naming its inbound topic.

    Returns ``(topic, event)``; raises :class:`MessageRejected` (and nothing
    else) otherwise. A missing or non-string ``topic`` is ``unknown_topic``.
    """
    obj = _load(raw)
    topic = obj.get("topic")
    if not isinstance(topic, str):
        detail = (
            "The record has no 'topic' field."
            if "topic" not in obj
            else f"The record's 'topic' is {_json_kind(topic)}, not a string."
        )
        raise _reject("unknown_topic", detail, obj)
    return topic, _validate(topic, obj)


FINGERPRINT_VERSION = "v2:"


def content_fingerprint(event: BaseModel) -> str:
    """``v2:`` and the hex SHA-256 of the validated event as pydantic writes
    it as JSON (``model_dump_json``).

    That is the contract fields only, in the model's field order (unknown
    extras and the embedded ``topic`` do not count; amounts as their exact
    decimal strings; timestamps in ISO form with their offset). Redeliveries
    that differ only in whitespace, key order or unknown fields share it; any
    change of a contract field changes it. It is versioned: inbox rows of
    earlier releases hold :func:`legacy_content_fingerprint`, which a
    message is compared with only when a row holds one.
    """
    return FINGERPRINT_VERSION + hashlib.sha256(event.model_dump_json().encode("utf-8")).hexdigest()


def legacy_content_fingerprint(event: BaseModel) -> str:
    """The unversioned fingerprint of the releases before ``v2``: the hex
    SHA-256 of ``model_dump(mode="json")`` dumped with sorted keys, no
    whitespace and ASCII-only escapes (it re-serialises the message, which
    cost more than the rest of the edge)."""
    data = event.model_dump(mode="json")
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()