"""How the engine's values are stored in the event log.

The stored format is the eventsourcing library's JSON: plain JSON values as
they are, every other value as `{"_type_": name, "_data_": ...}` by a
registered `Transcoding`. The value objects of the domain (`Lot`, `Portion`,
`CardMonth`, ...) are stored that way, as the library's cargo-shipping
example stores its `Leg`: each as a JSON object of its fields, with dates,
moments and amounts written as text.

`OrjsonTranscoder` writes exactly the bytes the library's `JSONTranscoder`
writes (the tests compare them), with orjson instead of the standard
library's encoder, whose Python callback for every date and decimal was the
largest single cost of saving an event.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable

import orjson
from eventsourcing.persistence import JSONTranscoder, Transcoding

from engine.account import CardMonth, DebitRecord, HeldMessage
from engine.lots import Allocation, Lot, Portion
from engine.mgts import Link, Period
from engine.receipt import ReceiptLine

VALUE_OBJECTS: dict[str, type] = {
    "lot": Lot,
    "allocation": Allocation,
    "portion": Portion,
    "held_message": HeldMessage,
    "card_month": CardMonth,
    "debit_record": DebitRecord,
    "mgts_link": Link,
    "mgts_period": Period,
    "receipt_line": ReceiptLine,
}

_Codec = tuple[Callable[[Any], Any], Callable[[Any], Any]]
_AS_IS: _Codec = (lambda v: v, lambda v: v)
_CODECS: dict[Any, _Codec] = {
    date: (date.isoformat, date.fromisoformat),
    datetime: (datetime.isoformat, datetime.fromisoformat),
    Decimal: (str, Decimal),
}


def _codec(annotation: Any) -> _Codec:
    if annotation in _CODECS:
        return _CODECS[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        encode, decode = _codec(inner)
        return (lambda v: None if v is None else encode(v)), (lambda v: None if v is None else decode(v))
    if origin is tuple:  # of value objects: the items are transcoded by the encoder itself
        return list, tuple
    return _AS_IS


class ValueObjectAsDict(Transcoding):
    """A frozen dataclass as a JSON object of its fields."""

    def __init__(self, name: str, cls: type):
        self.name = name
        self.type = cls
        hints = typing.get_type_hints(cls)
        self._fields = [(f.name, *_codec(hints[f.name])) for f in dataclasses.fields(cls)]

    def encode(self, obj: Any) -> dict[str, Any]:
        return {name: encode(getattr(obj, name)) for name, encode, _ in self._fields}

    def decode(self, data: dict[str, Any]) -> Any:
        return self.type(*[decode(data[name]) for name, _, decode in self._fields])


class DateAsISO(Transcoding):
    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


_CONTAINERS = (dict, list)
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


class OrjsonTranscoder(JSONTranscoder):
    """The library's JSON format, written by orjson. Every value that is not
    plain JSON (moments, dates, decimals, value objects) still goes through
    its registered transcoding, so the bytes are the library's."""

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj, default=self._encode_obj, option=_PASSTHROUGH)

    def decode(self, data: bytes) -> Any:
        """orjson's parse, then every `{"_type_", "_data_"}` object through
        its transcoding, innermost first (as the library's object hook)."""
        return self._revive(orjson.loads(data))

    def _revive(self, value: Any) -> Any:
        kind = type(value)
        if kind is dict:
            for key, item in value.items():
                if type(item) in _CONTAINERS:
                    value[key] = self._revive(item)
            if len(value) == 2 and "_type_" in value and "_data_" in value:
                return self._decode_obj(value)
        elif kind is list:
            for index, item in enumerate(value):
                if type(item) in _CONTAINERS:
                    value[index] = self._revive(item)
        return value


def register_transcodings(transcoder: JSONTranscoder) -> None:
    transcoder.register(DateAsISO())
    for name, cls in VALUE_OBJECTS.items():
        transcoder.register(ValueObjectAsDict(name, cls))
