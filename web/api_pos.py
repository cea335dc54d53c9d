"""The JSON API for MTS shop tills: debits as a discount (1 point = 1 ₽),
their status and cancellation, with the store's own key."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Request, Response
from pydantic import BaseModel, Field

from engine.errors import RuleRefusal
from web.api import ApiError, Id, Key, Msisdn, Points, Store, Strict, api_router, error_responses, refusal_error
from web.app import context_of
from web.service import NotFound

router = api_router()


# -- shop tills ---------------------------------------------------------------------------------------


class PosDebitRequest(Strict):
    msisdn: Msisdn
    points: Points = Field(description="the discount in rubles: 1 point = 1 ₽")
    idempotency_key: Key
    receipt_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,100}$")] | None = None


class PosDebit(BaseModel):
    debit_id: str
    msisdn: str
    points: int
    purpose: str
    status: Literal["debited", "cancelled"]
    balance_after: int | None
    duplicate: bool


def _pos(value: dict[str, Any]) -> PosDebit:
    return PosDebit(**{k: v for k, v in value.items() if k in PosDebit.model_fields})


@router.post("/pos/debits", status_code=201, response_model=PosDebit, responses=error_responses(200, 409, 422))
def pos_debit(body: PosDebitRequest, store_id: Store, request: Request, response: Response) -> PosDebit:
    """Debits points as a discount at a shop till, once per idempotency key."""
    context = context_of(request)
    try:
        debit = context.cabinet.pos_debit(
            store_id, body.msisdn, body.points, body.idempotency_key, body.receipt_id,
            lambda debit_id, msisdn: context.auth.remember_pos_debit(debit_id, store_id, msisdn),
        )
    except RuleRefusal as refusal:
        raise refusal_error(refusal) from refusal
    if debit.get("duplicate"):
        response.status_code = 200
    return _pos(debit)


def _own_debit(request: Request, store_id: str, debit_id: str) -> str:
    msisdn = context_of(request).auth.pos_debit_owner(debit_id, store_id)
    if msisdn is None:
        raise ApiError(404, "not_found", "no debit of this store with that id")
    return msisdn


@router.get("/pos/debits/{debit_id}", response_model=PosDebit, responses=error_responses(404))
def pos_debit_status(debit_id: Id, store_id: Store, request: Request) -> PosDebit:
    msisdn = _own_debit(request, store_id, debit_id)
    try:
        return _pos(context_of(request).cabinet.pos_status(msisdn, debit_id))
    except NotFound as error:
        raise ApiError(404, "not_found", "no debit of this store with that id") from error


@router.post("/pos/debits/{debit_id}/cancel", response_model=PosDebit, responses=error_responses(404, 409))
def pos_cancel(debit_id: Id, store_id: Store, request: Request) -> PosDebit:
    """Cancels a debit this store made; the points go back to the member."""
    msisdn = _own_debit(request, store_id, debit_id)
    try:
        return _pos(context_of(request).cabinet.pos_cancel(msisdn, debit_id))
    except RuleRefusal as refusal:
        raise refusal_error(refusal) from refusal
