"""The console's pages under /ops, in Russian (docs/console.md)."""
from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
