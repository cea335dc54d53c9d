"""Write the contract's JSON Schemas (draft 2020-12) to a directory.

Inbound schemas describe what producers may send (validation mode: amounts
are strings with :data:`~schemas.inbound.AMOUNT_PATTERN`); outbound schemas
describe what the engine writes (serialisation mode).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from .inbound import TYPE_MODELS, InboundEvent
from .outbound import BalanceMessage, DeadLetterMessage, PointsEventMessage

__all__ = ["OUTBOUND_SCHEMAS", "export_json_schemas", "json_schemas"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_ID_PREFIX = "urn:accrual:schema:"

#: file stem -> outbound model.
OUTBOUND_SCHEMAS: dict[str, type[BaseModel]] = {
    "points_event": PointsEventMessage,
    "balance": BalanceMessage,
    "dead_letter": DeadLetterMessage,
}


def _decorate(schema: dict[str, Any], name: str, description: str | None = None) -> dict[str, Any]:
    head: dict[str, Any] = {
        "$schema": _DIALECT,
        "$id": f"{_ID_PREFIX}{name}",
        "title": f"accrual/{name}",
    }
    if description:
        head["description"] = description
    schema = {key: value for key, value in schema.items() if key not in head}
    return {**head, **schema}


def json_schemas() -> dict[str, dict[str, Any]]:
    """file stem -> JSON Schema, in a stable order."""
    out: dict[str, dict[str, Any]] = {}
    for type_, model in TYPE_MODELS.items():
        out[type_] = _decorate(
            model.model_json_schema(mode="validation"),
            f"inbound/{type_}",
            f"Inbound message of type '{type_}' (EVENTS.md). Unknown extra fields are ignored.",
        )
    out["inbound"] = _decorate(
        TypeAdapter(InboundEvent).json_schema(mode="validation"),
        "inbound",
        "Any inbound message, discriminated by 'type'.",
    )
    for stem, outbound in OUTBOUND_SCHEMAS.items():
        out[stem] = _decorate(
            outbound.model_json_schema(mode="serialization"),
            f"outbound/{stem}",
            (outbound.__doc__ or "").strip() or None,
        )
    return out


def export_json_schemas(directory: Path) -> list[Path]:
    """Write ``<name>.schema.json`` for every inbound type, ``inbound`` (the
    union) and every outbound model into ``directory`` (created if needed).
    Returns the paths written, in a stable order."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for stem, schema in json_schemas().items():
        path = directory / f"{stem}.schema.json"
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written
