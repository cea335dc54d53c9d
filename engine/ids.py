"""Deterministic aggregate ids: the same member, receipt or MGTS account has
the same id on every machine and in every replay (no random ids)."""
from __future__ import annotations

from datetime import date
from functools import lru_cache
from uuid import UUID, uuid5

# Fixed for the life of the event store: changing it orphans every aggregate.
NAMESPACE = UUID("6f1d2f64-3b7e-5d0c-9a55-acc2a1000001")


@lru_cache(maxsize=65536)
def member_id(msisdn: str) -> UUID:
    return uuid5(NAMESPACE, f"member:{msisdn}")


@lru_cache(maxsize=65536)
def receipt_id(receipt: str) -> UUID:
    return uuid5(NAMESPACE, f"receipt:{receipt}")


@lru_cache(maxsize=65536)
def mgts_account_id(mgts_account: str) -> UUID:
    return uuid5(NAMESPACE, f"mgts:{mgts_account}")


def rejection_id(topic: str, message_key: str) -> UUID:
    return uuid5(NAMESPACE, f"rejection:{topic}:{message_key}")


def debit_id(purpose: str, idempotency_key: str) -> UUID:
    """A debit (rule 10) by its purpose and the caller's idempotency key."""
    return uuid5(NAMESPACE, f"debit:{purpose}:{idempotency_key}")


def transfer_id(idempotency_key: str) -> UUID:
    return uuid5(NAMESPACE, f"transfer:{idempotency_key}")


def closed_day_id(as_of: date) -> UUID:
    """The mark of the tick as-of `as_of` (one per date)."""
    return uuid5(NAMESPACE, f"closed-day:{as_of.isoformat()}")
