"""Health of the personal account for orchestrators: `/healthz` (the process
answers) and `/readyz` (it can serve members: the store answers). JSON, 200
or 503; no member data, no session needed. The worker's endpoint answers
the same paths (accrual/health.py); docs/operations.md says how a
deployment uses them."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from accrual.outage import is_store_error
from web.app import context_of
from web.guards import STORE_RETRY_AFTER_S

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """Ready while the store answers (the web tables and the event log live
    in the same database)."""
    try:
        context_of(request).store.query("SELECT 1")
    except Exception as error:
        if not is_store_error(error):
            raise
        return JSONResponse({"status": "unavailable", "checks": {"store": False}}, 503,
                            headers={"Retry-After": str(STORE_RETRY_AFTER_S)})
    return JSONResponse({"status": "ok", "checks": {"store": True}})
