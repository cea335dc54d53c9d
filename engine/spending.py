"""Spending points (rule 10): debits for catalogue orders and shop discounts,
their cancellation, and member-to-member transfers. Mixed into
`AccrualApplication`; the personal account and the shops call these methods.

Each command is one unit of work (`engine.unit_of_work`) that reads its
aggregates from the store, not from this process's cache, because several
processes (web workers, the stream worker) write the same accounts. A command
that loses a race with another writer (the same account version, or the same
inbox key) runs again on the state that writer left, so 50 concurrent
requests with one idempotency key make one debit and all get the same answer.

Idempotency: a debit or a transfer offer writes an inbox row (topic below,
key = the caller's idempotency key, fingerprint of the request) in the same
transaction as its events. Cancelling, accepting and declining are guarded
by the state of the debit or transfer itself (a repeat finds it settled).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable
from uuid import UUID

from engine import ids
from engine.account import CANCELLED, DEBITED, MemberAccount
from engine.errors import (
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidMsisdnError,
    InvalidPurposeError,
    NotEnrolledError,
    RecipientNotEnrolledError,
    SelfTransferError,
    UnknownDebitError,
    UnknownTransferError,
)
from engine.transfer import ACCEPTED, DECLINED, PENDING, RETURNED, MemberTransfer
from engine.unit_of_work import UnitOfWork
from schemas.msisdn import is_msisdn

PURPOSE_TOPICS = {"order": "accrual.orders", "pos": "accrual.pos"}  # pseudo-topics of the inbox
TRANSFERS_TOPIC = "accrual.transfers"
ENROLLMENTS_TOPIC = "accrual.web-enrollments"



@dataclass(frozen=True)
class Debit:
    """A debit as the caller sees it. `balance_after` is the balance right
    after the debit's latest change (the debit, or its cancellation)."""

    debit_id: str
    msisdn: str
    points: int
    purpose: str  # "order" | "pos"
    status: str  # "debited" | "cancelled"
    balance_after: int
    duplicate: bool  # the same request was answered before


@dataclass(frozen=True)
class Transfer:
    transfer_id: str
    sender: str
    recipient: str
    points: int
    status: str  # "pending" | "accepted" | "declined" | "returned"
    offered_at: datetime
    expires_at: datetime
    settled_at: datetime | None
    duplicate: bool = False  # the same request was answered before


def fingerprint(request: dict[str, Any]) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class SpendingCommands:
    """The rule 10 commands of `AccrualApplication` (which provides `run`
    and `rules`)."""

    rules: Any
    run: Callable[..., Any]

    # -- debits -------------------------------------------------------------

    def debit(
        self, msisdn: str, points: int, *, purpose: str, idempotency_key: str, reference: dict, at: datetime
    ) -> Debit:
        """Takes `points` from the member for a catalogue order or a shop
        discount. The same key and request again answers the same debit."""
        _check_moment(at)
        _check_msisdn(msisdn)
        topic = PURPOSE_TOPICS.get(purpose)
        if topic is None:
            raise InvalidPurposeError(f"a debit is for one of {sorted(PURPOSE_TOPICS)}, not {purpose!r}")
        if isinstance(points, bool) or not isinstance(points, int) or points < 1:
            raise InvalidAmountError(f"a debit takes at least 1 point, not {points!r}")
        debit_id = str(ids.debit_id(purpose, idempotency_key))
        request = fingerprint({"msisdn": msisdn, "points": points, "purpose": purpose, "reference": reference})

        def work(uow: UnitOfWork) -> Debit:
            # The account is read before the inbox: if the inbox does not
            # have the key yet, the account read is older than any commit
            # with the key, so saving it conflicts and the next attempt sees it.
            account = _member(uow, msisdn)
            if _seen(uow, topic, idempotency_key, request):
                account = uow.reread(ids.member_id(msisdn))  # the read above may be older than the key
                assert account is not None and account.debit(debit_id) is not None, "the inbox names a saved debit"
                return _debit_of(account, debit_id, duplicate=True)
            if account is None:
                raise NotEnrolledError(f"{msisdn} is not an enrolled member")
            account.redeem(debit_id, points, purpose, reference, idempotency_key, at)
            uow.consume(topic, idempotency_key, request, debit_id)
            return _debit_of(account, debit_id, duplicate=False)

        return self.run(work, fresh=True)

    def cancel_debit(self, msisdn: str, debit_id: str, *, at: datetime) -> Debit:
        """Gives a debit's points back to the same lots, with their expiry
        dates; points of lots that expired meanwhile are not given back.
        Cancelling a cancelled debit answers it again (duplicate=True)."""
        _check_moment(at)

        def work(uow: UnitOfWork) -> Debit:
            account = _member(uow, msisdn)
            debit = None if account is None else account.debit(debit_id)
            if account is None or debit is None:
                raise UnknownDebitError(f"no debit {debit_id} of {msisdn}")
            if debit.status == CANCELLED:
                return _debit_of(account, debit_id, duplicate=True)
            account.cancel(debit_id, at)
            return _debit_of(account, debit_id, duplicate=False)

        return self.run(work, fresh=True)

    def debit_status(self, msisdn: str, debit_id: str) -> Debit | None:
        def work(uow: UnitOfWork) -> Debit | None:
            account = _member(uow, msisdn)
            if account is None or account.debit(debit_id) is None:
                return None
            return _debit_of(account, debit_id, duplicate=False)

        return self.run(work, fresh=True)

    # -- transfers -----------------------------------------------------------

    def offer_transfer(
        self, sender: str, recipient: str, points: int, *, idempotency_key: str, at: datetime
    ) -> Transfer:
        """Holds `points` of the sender for the recipient, who may accept
        within the acceptance window (24 hours by default). The recipient's
        account records the offer, moving no points, so that the news is on
        the recipient's key of the outbound topic."""
        _check_moment(at)
        _check_msisdn(sender)
        _check_msisdn(recipient)
        minimum = self.rules.transfer_minimum_points
        if isinstance(points, bool) or not isinstance(points, int) or points < minimum:
            raise InvalidAmountError(f"a transfer is at least {minimum} point(s), not {points!r}")
        if sender == recipient:
            raise SelfTransferError(f"{sender} cannot transfer points to itself")
        transfer_id = ids.transfer_id(idempotency_key)
        request = fingerprint({"sender": sender, "recipient": recipient, "points": points})

        def work(uow: UnitOfWork) -> Transfer:
            account = _member(uow, sender)  # before the inbox, as in `debit`
            if _seen(uow, TRANSFERS_TOPIC, idempotency_key, request):
                return _transfer_of(uow.get(transfer_id), duplicate=True)
            if account is None:
                raise NotEnrolledError(f"{sender} is not an enrolled member")
            # The sender's own refusals come first: whether the balance covers
            # the points must not depend on who the recipient is, or a
            # transfer beyond the balance would tell members from strangers.
            account.check_enrolled()
            account.check_covers(points)
            counterpart = _member(uow, recipient)
            if counterpart is None or not counterpart.is_enrolled:
                raise RecipientNotEnrolledError(f"{recipient} is not an enrolled member")
            portions = account.send_transfer(str(transfer_id), recipient, points, at)
            transfer = uow.add(MemberTransfer.offer(
                transfer_id, sender, recipient, points, portions, idempotency_key, at,
                self.rules.transfer_acceptance_hours,
            ))
            counterpart.record_transfer_offer_received(str(transfer_id), sender, points, transfer.expires_at, at)
            uow.consume(TRANSFERS_TOPIC, idempotency_key, request, str(transfer_id))
            return _transfer_of(transfer, duplicate=False)

        return self.run(work, fresh=True)

    def accept_transfer(self, transfer_id: str, recipient: str, *, at: datetime) -> Transfer:
        """Credits the recipient with the held points, in lots that keep the
        sender lots' expiry dates; the sender's account records the
        acceptance (no points move there: they left at the offer)."""
        _check_moment(at)

        def work(uow: UnitOfWork) -> Transfer:
            transfer = _transfer_for(uow, transfer_id, recipient)
            if transfer.already(ACCEPTED):
                return _transfer_of(transfer, duplicate=True)
            transfer.accept(at)  # refuses after the acceptance window
            account = _member(uow, recipient)
            assert account is not None, "a transfer is offered only to an enrolled member"
            account.receive_transfer(str(transfer.id), transfer.sender, transfer.portions, at)
            sender = _member(uow, transfer.sender)
            assert sender is not None
            sender.record_transfer_accepted(str(transfer.id), recipient, transfer.points, at)
            return _transfer_of(transfer, duplicate=False)

        return self.run(work, fresh=True)

    def decline_transfer(self, transfer_id: str, recipient: str, *, at: datetime) -> Transfer:
        """Returns the held points to the sender's same lots."""
        _check_moment(at)

        def work(uow: UnitOfWork) -> Transfer:
            transfer = _transfer_for(uow, transfer_id, recipient)
            if transfer.already(DECLINED):
                return _transfer_of(transfer, duplicate=True)
            transfer.decline(at)
            _give_back(uow, transfer, "declined", at)
            return _transfer_of(transfer, duplicate=False)

        return self.run(work, fresh=True)

    def transfer(self, transfer_id: str) -> Transfer | None:
        def work(uow: UnitOfWork) -> Transfer | None:
            transfer = _transfer(uow, transfer_id)
            return None if transfer is None else _transfer_of(transfer, duplicate=False)

        return self.run(work, fresh=True)

    def return_lapsed_transfer(self, transfer_id: str, at: datetime) -> bool:
        """The tick's part: a pending transfer whose window ran out by `at`
        goes back to the sender. False when there was nothing to do."""

        def work(uow: UnitOfWork) -> bool:
            transfer = _transfer(uow, transfer_id)
            if transfer is None or transfer.status != PENDING or not transfer.is_lapsed(at):
                return False
            transfer.time_out(at)
            _give_back(uow, transfer, "timed_out", at)
            return True

        return self.run(work, fresh=True)


def _give_back(uow: UnitOfWork, transfer: MemberTransfer, reason: str, at: datetime) -> None:
    account = _member(uow, transfer.sender)
    assert account is not None
    account.take_back_transfer(str(transfer.id), transfer.recipient, transfer.portions, reason, at)


def _transfer(uow: UnitOfWork, transfer_id: str) -> MemberTransfer | None:
    aggregate_id = _uuid(transfer_id)
    transfer = None if aggregate_id is None else uow.get(aggregate_id)
    return transfer if isinstance(transfer, MemberTransfer) else None


def _transfer_for(uow: UnitOfWork, transfer_id: str, recipient: str) -> MemberTransfer:
    transfer = _transfer(uow, transfer_id)
    if transfer is None:
        raise UnknownTransferError(f"no transfer {transfer_id} for {recipient}")
    transfer.check_recipient(recipient)
    return transfer


def _member(uow: UnitOfWork, msisdn: str) -> MemberAccount | None:
    account = uow.get(ids.member_id(msisdn))
    return account if isinstance(account, MemberAccount) else None


def _seen(uow: UnitOfWork, topic: str, key: str, request: str) -> bool:
    """Whether the key was used before: by the same request (True), by
    another (refused)."""
    known = uow.seen([(topic, key)]).get((topic, key))
    if known is None:
        return False
    if known != request:
        raise IdempotencyConflictError(f"idempotency key {key!r} was used for another request")
    return True


def _debit_of(account: MemberAccount, debit_id: str, duplicate: bool) -> Debit:
    debit = account.debit(debit_id)
    assert debit is not None and debit.status in (DEBITED, CANCELLED)
    return Debit(
        debit_id=debit_id,
        msisdn=account.msisdn,
        points=debit.points,
        purpose=debit.purpose,
        status=debit.status,
        balance_after=debit.balance_after,
        duplicate=duplicate,
    )


def _transfer_of(transfer: MemberTransfer, duplicate: bool) -> Transfer:
    assert transfer.status in (PENDING, ACCEPTED, DECLINED, RETURNED)
    return Transfer(
        transfer_id=str(transfer.id),
        sender=transfer.sender,
        recipient=transfer.recipient,
        points=transfer.points,
        status=transfer.status,
        offered_at=transfer.offered_at,
        expires_at=transfer.expires_at,
        settled_at=transfer.settled_at,
        duplicate=duplicate,
    )


def _uuid(text: str) -> UUID | None:
    try:
        return UUID(str(text))
    except ValueError:
        return None


def _check_msisdn(msisdn: str) -> None:
    if not is_msisdn(msisdn):
        raise InvalidMsisdnError(f"a number is 11 ASCII digits starting with 7, not {msisdn!r:.40}")


def _check_moment(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("moments are time-zone aware")
