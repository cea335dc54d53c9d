"""Inbound messages into commands: one handler per message type.

`receive` decides what a message is before any rule sees it: a duplicate
(its key is in the inbox with the same content), a conflicting duplicate
(same key, other content), a rejection from the edge, or a message to
apply. Messages of members who are not enrolled yet are held on their
account (rule 1) and applied by `release` when they enroll.
"""
from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Any, Callable

from engine.account import HeldMessage, MemberAccount
from engine.errors import DuplicateReceiptError, RuleRefusal, UnknownReceiptError
from engine.ids import member_id, mgts_account_id, receipt_id, rejection_id
from engine.messages import (
    APPLIED,
    CONFLICTING_DUPLICATE,
    DUPLICATE,
    EXAMPLES_MAX,
    HELD,
    NOT_ELIGIBLE,
    REJECTED,
    Inbound,
)
from engine.mgts import MgtsAccount
from engine.receipt import Receipt
from engine.rejection import Rejection
from engine.unit_of_work import UnitOfWork
from schemas import INBOUND_ADAPTER


def aggregates_of(messages: list[Inbound]) -> set:
    """The ids of the aggregates a batch may touch (for one existence query)."""
    wanted: set = set()
    for message in messages:
        if message.event is None:
            continue
        fields = message.event.__dict__  # a pydantic model's values (getattr of a missing field is slow)
        msisdn = fields.get("msisdn")
        if msisdn is not None:
            wanted.add(member_id(msisdn))
        receipt = fields.get("receipt_id")
        if receipt is not None:
            wanted.add(receipt_id(receipt))
        mgts_account = fields.get("mgts_account")
        if mgts_account is not None:
            wanted.add(mgts_account_id(mgts_account))
    return wanted


def receive(uow: UnitOfWork, message: Inbound, seen: dict[tuple[str, str], str]) -> None:
    known = uow.consumed.get((message.topic, message.key)) or seen.get((message.topic, message.key))
    if known is not None:
        if message.has_fingerprint(known):
            uow.report.count(DUPLICATE)
        else:
            _conflict(uow, message)
        return
    if message.rejection is not None:
        reason, detail = message.rejection
        reject(uow, message, message.key, reason, detail)
        return
    try:
        outcome = apply(uow, message.topic, message.event)
    except RuleRefusal as refusal:
        reject(uow, message, message.key, refusal.reason, refusal.detail)
        return
    uow.consume(message.topic, message.key, message.fingerprint, outcome)
    uow.report.count(outcome)


def _conflict(uow: UnitOfWork, message: Inbound) -> None:
    """Same key, other content: rejected once, keyed by its own bytes, so
    that its redelivery is a duplicate of the rejection."""
    key = "sha256:" + hashlib.sha256(message.original).hexdigest()
    if uow.seen([(message.topic, key)]):
        uow.report.count(DUPLICATE)
        return
    detail = f"event_id {message.key!r} was already received on {message.topic} with other content"
    reject(uow, message, key, CONFLICTING_DUPLICATE, detail)


def reject(uow: UnitOfWork, message: Inbound, key: str, reason: str, detail: str) -> None:
    record_rejection(
        uow, message.topic, key, reason, detail, message.original, message.received_at,
        event_id=message.event_id, msisdn=message.msisdn,
        partition=message.partition, offset=message.offset, kafka_key=message.kafka_key,
    )
    uow.consume(message.topic, key, message.fingerprint if key == message.key else key, REJECTED)
    uow.report.count(REJECTED, reason)
    if len(uow.report.examples) < EXAMPLES_MAX:
        uow.report.examples.append((message.offset, message.topic, reason, detail))


def record_rejection(
    uow: UnitOfWork, topic: str, key: str, reason: str, detail: str, original: bytes, received_at: datetime,
    *, event_id: str | None, msisdn: str | None,
    partition: int | None = None, offset: int | None = None, kafka_key: str | None = None,
) -> None:
    uow.add(Rejection.record(
        message_key=key, received_at=received_at, topic=topic, partition=partition, offset=offset, key=kafka_key,
        event_id=event_id, msisdn=msisdn, reason=reason, detail=detail,
        original=base64.b64encode(original).decode("ascii"),
    ))


# -- rules, by message type ---------------------------------------------------------


def apply(uow: UnitOfWork, topic: str, event: Any) -> str:
    """A well-formed message's rules; its outcome (applied, held,
    not_eligible), or a RuleRefusal before anything changed. The caller
    writes its inbox row (`receive`; a redrive keeps the dead letter's)."""
    kind = event.type
    handler = _ACCOUNT_HANDLERS.get(kind)
    if handler is not None:
        return handler(uow, event)
    account = member(uow, event.msisdn, event.occurred_at)
    if not account.is_enrolled:
        account.hold(topic, event.event_id, event.occurred_at, event.model_dump(mode="json"))
        return HELD
    return _earn(uow, account, event)


def _enroll(uow: UnitOfWork, event: Any) -> str:
    account = member(uow, event.msisdn, event.occurred_at)
    for held in account.enroll(event.event_id, event.occurred_at, event.channel):
        release(uow, account, held)
    return APPLIED


def _link_mgts(uow: UnitOfWork, event: Any) -> str:
    _mgts_account(uow, event).link(event.event_id, event.msisdn, event.occurred_at)
    return APPLIED


def _bill_mgts(uow: UnitOfWork, event: Any) -> str:
    _mgts_account(uow, event).record_bill(event.event_id, event.period, event.amount, event.occurred_at)
    return APPLIED


# Messages that are not about a member's points (or that make a member).
_ACCOUNT_HANDLERS: dict[str, Callable[[UnitOfWork, Any], str]] = {
    "member_enrolled": _enroll,
    "mgts_account_linked": _link_mgts,
    "mgts_bill": _bill_mgts,
}


def release(uow: UnitOfWork, account: MemberAccount, held: HeldMessage) -> None:
    """A held event, applied as if it had arrived at the enrollment."""
    # The edge's own validation. Only a member's spends are held (never an
    # enrollment or an MGTS message), so the event has an msisdn.
    event: Any = INBOUND_ADAPTER.validate_python(held.message)
    uow.report.released += 1
    try:
        _earn(uow, account, event)
    except RuleRefusal as refusal:
        # Its inbox row was written when it was held; the rejection is
        # keyed by its event_id like any other rule refusal. If a redrive of
        # that dead letter held it, the dead letter is there already: it is
        # opened again (a second Rejection of one id would never save).
        earlier = uow.get(rejection_id(held.topic, event.event_id))
        if earlier is not None:
            earlier.refused(event.occurred_at, refusal.reason, refusal.detail)
            uow.report.rejected[refusal.reason] += 1
            return
        record_rejection(
            uow, held.topic, event.event_id, refusal.reason, refusal.detail,
            _canonical_bytes(held.message), event.occurred_at,
            event_id=event.event_id, msisdn=event.msisdn,
        )
        uow.report.rejected[refusal.reason] += 1


def _earn(uow: UnitOfWork, account: MemberAccount, event: Any) -> str:
    kind = event.type
    if kind == "shop_return":
        return _shop_return(uow, account, event)
    eligible = account.earns_at(event.occurred_at)
    if kind == "shop_purchase":
        _shop_purchase(uow, account, event, eligible)
    elif eligible:
        _EARNING[kind](uow, account, event)
    if not eligible:
        account.record_not_eligible(event.event_id, kind, event.occurred_at)
        return NOT_ELIGIBLE
    return APPLIED


def _usage(uow: UnitOfWork, account: MemberAccount, event: Any) -> None:
    account.charge_usage(event.event_id, event.occurred_at, event.service, event.amount, uow.rules)


def _card_purchase(uow: UnitOfWork, account: MemberAccount, event: Any) -> None:
    account.record_card_spend(event.event_id, event.occurred_at, event.card_id, event.amount, event.type)


def _card_refund(uow: UnitOfWork, account: MemberAccount, event: Any) -> None:
    account.record_card_spend(event.event_id, event.occurred_at, event.card_id, -event.amount, event.type)


def _ballyplus(uow: UnitOfWork, account: MemberAccount, event: Any) -> None:
    account.credit_ballyplus(event.event_id, event.partner_points, event.occurred_at, uow.rules)


# What an eligible message of an enrolled member earns (shop messages above).
_EARNING: dict[str, Callable[[UnitOfWork, MemberAccount, Any], None]] = {
    "usage_charged": _usage,
    "card_purchase": _card_purchase,
    "card_refund": _card_refund,
    "ballyplus_transfer": _ballyplus,
}


def _shop_purchase(uow: UnitOfWork, account: MemberAccount, event: Any, eligible: bool) -> None:
    if uow.get(receipt_id(event.receipt_id)) is not None:
        raise DuplicateReceiptError(f"receipt {event.receipt_id} was already recorded by another purchase")
    receipt = uow.add(Receipt.issue(
        event.receipt_id, event.msisdn, event.store_id, event.event_id,
        {line.line_id: (line.category, line.amount) for line in event.lines},
        eligible, uow.rules, event.occurred_at,
    ))
    account.credit_receipt(event.event_id, event.receipt_id, receipt.points, event.occurred_at, uow.rules)


def _shop_return(uow: UnitOfWork, account: MemberAccount, event: Any) -> str:
    receipt = uow.get(receipt_id(event.receipt_id))
    if receipt is None:
        raise UnknownReceiptError(f"no purchase with receipt {event.receipt_id} is known")
    returned = {line.line_id: line.amount for line in event.lines}
    points_due = receipt.record_return(event.event_id, event.msisdn, returned, uow.rules, event.occurred_at)
    if points_due:
        account.claw_back(points_due, "shop_return", event.event_id, event.occurred_at, {"receipt_id": event.receipt_id})
    return APPLIED


def member(uow: UnitOfWork, msisdn: str, at: datetime) -> MemberAccount:
    """The member's account, opened if the member is new."""
    return uow.get(member_id(msisdn)) or uow.add(MemberAccount.open(msisdn, at))


def _mgts_account(uow: UnitOfWork, event: Any) -> MgtsAccount:
    return uow.get(mgts_account_id(event.mgts_account)) or uow.add(
        MgtsAccount.open(event.mgts_account, event.occurred_at)
    )


def _canonical_bytes(message: dict) -> bytes:
    return json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
