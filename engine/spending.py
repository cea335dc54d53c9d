"""Spending points (rule 10): debits for catalogue orders and shop discounts,
their cancellation, and member-to-member transfers. Mixed into
`AccrualApplication`; the personal account and the shops call these methods.

Each command is one transaction. The aggregates are read from the store, not
from this process's cache, because several processes (web workers, the stream
worker) write the same accounts. A command that loses a race with another
writer (`IntegrityError`: the same account version, or the same inbox key) is
run again on the state that writer left, so 50 concurrent requests with one
idempotency key make one debit and all get the same answer.

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
from typing import Any, Callable, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, OperationalError

from engine import ids
from engine.account import CANCELLED, DEBITED, MemberAccount
from engine.errors import (
    ConcurrentWriterError,
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidPurposeError,
    NotEnrolledError,
    RecipientNotEnrolledError,
    SelfTransferError,
    UnknownDebitError,
    UnknownTransferError,
)
from engine.transfer import ACCEPTED, DECLINED, PENDING, RETURNED, MemberTransfer

PURPOSE_TOPICS = {"order": "accrual.orders", "pos": "accrual.pos"}  # pseudo-topics of the inbox
TRANSFERS_TOPIC = "accrual.transfers"
ENROLLMENTS_TOPIC = "accrual.web-enrollments"
LATEST = 2**62  # "up to any version": read from the store, past the cache
COMMAND_RETRIES_MAX = 50  # a retry happens only after another writer succeeded
OPERATIONAL_RETRIES_MAX = 3

T = TypeVar("T")


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
    """The rule 10 commands of `AccrualApplication` (which provides
    `repository`, `recorder`, `rules` and `save_batch`)."""

    repository: Any
    recorder: Any
    rules: Any
    save_batch: Callable[..., Any]

    # -- debits -------------------------------------------------------------

    def debit(
        self, msisdn: str, points: int, *, purpose: str, idempotency_key: str, reference: dict, at: datetime
    ) -> Debit:
        """Takes `points` from the member for a catalogue order or a shop
        discount. The same key and request again answers the same debit."""
        _check_moment(at)
        topic = PURPOSE_TOPICS.get(purpose)
        if topic is None:
            raise InvalidPurposeError(f"a debit is for one of {sorted(PURPOSE_TOPICS)}, not {purpose!r}")
        if isinstance(points, bool) or not isinstance(points, int) or points < 1:
            raise InvalidAmountError(f"a debit takes at least 1 point, not {points!r}")
        debit_id = str(ids.debit_id(purpose, idempotency_key))
        request = fingerprint({"msisdn": msisdn, "points": points, "purpose": purpose, "reference": reference})

        def attempt() -> Debit:
            # The account is read before the inbox: if the inbox does not
            # have the key yet, the account read is older than any commit
            # with the key, so saving it conflicts and the next attempt sees it.
            account = self._fresh_member(msisdn)
            if self._seen(topic, idempotency_key, request):
                return self._debit_result(msisdn, debit_id, duplicate=True)
            if account is None:
                raise NotEnrolledError(f"{msisdn} is not an enrolled member")
            account.redeem(debit_id, points, purpose, reference, idempotency_key, at)
            self.save_batch([account], [(topic, idempotency_key, request, debit_id)])
            return _debit_of(account, debit_id, duplicate=False)

        return self._retrying(attempt)

    def cancel_debit(self, msisdn: str, debit_id: str, *, at: datetime) -> Debit:
        """Gives a debit's points back to the same lots, with their expiry
        dates; points of lots that expired meanwhile are not given back.
        Cancelling a cancelled debit answers it again (duplicate=True)."""
        _check_moment(at)

        def attempt() -> Debit:
            account = self._fresh_member(msisdn)
            debit = None if account is None else account.debit(debit_id)
            if debit is None:
                raise UnknownDebitError(f"no debit {debit_id} of {msisdn}")
            if debit["status"] == CANCELLED:
                return _debit_of(account, debit_id, duplicate=True)
            account.cancel(debit_id, at)
            self.save_batch([account], [])
            return _debit_of(account, debit_id, duplicate=False)

        return self._retrying(attempt)

    def debit_status(self, msisdn: str, debit_id: str) -> Debit | None:
        account = self._fresh_member(msisdn)
        if account is None or account.debit(debit_id) is None:
            return None
        return _debit_of(account, debit_id, duplicate=False)

    def _debit_result(self, msisdn: str, debit_id: str, duplicate: bool) -> Debit:
        account = self._fresh_member(msisdn)
        assert account is not None and account.debit(debit_id) is not None, "the inbox names a saved debit"
        return _debit_of(account, debit_id, duplicate)

    # -- transfers -----------------------------------------------------------

    def offer_transfer(
        self, sender: str, recipient: str, points: int, *, idempotency_key: str, at: datetime
    ) -> Transfer:
        """Holds `points` of the sender for the recipient, who may accept
        within the acceptance window (24 hours by default)."""
        _check_moment(at)
        minimum = self.rules.transfer_minimum_points
        if isinstance(points, bool) or not isinstance(points, int) or points < minimum:
            raise InvalidAmountError(f"a transfer is at least {minimum} point(s), not {points!r}")
        if sender == recipient:
            raise SelfTransferError(f"{sender} cannot transfer points to itself")
        transfer_id = ids.transfer_id(idempotency_key)
        request = fingerprint({"sender": sender, "recipient": recipient, "points": points})

        def attempt() -> Transfer:
            account = self._fresh_member(sender)  # before the inbox, as in `debit`
            if self._seen(TRANSFERS_TOPIC, idempotency_key, request):
                return _transfer_of(self._fresh(transfer_id), duplicate=True)
            if account is None:
                raise NotEnrolledError(f"{sender} is not an enrolled member")
            counterpart = self._fresh_member(recipient)
            if counterpart is None or not counterpart.is_enrolled:
                raise RecipientNotEnrolledError(f"{recipient} is not an enrolled member")
            portions = account.send_transfer(str(transfer_id), recipient, points, at)
            transfer = MemberTransfer.offer(
                transfer_id, sender, recipient, points, portions, idempotency_key, at,
                self.rules.transfer_acceptance_hours,
            )
            self.save_batch([account, transfer], [(TRANSFERS_TOPIC, idempotency_key, request, str(transfer_id))])
            return _transfer_of(transfer, duplicate=False)

        return self._retrying(attempt)

    def accept_transfer(self, transfer_id: str, recipient: str, *, at: datetime) -> Transfer:
        """Credits the recipient with the held points, in lots that keep the
        sender lots' expiry dates."""
        _check_moment(at)

        def attempt() -> Transfer:
            transfer = self._transfer_for(transfer_id, recipient)
            if transfer.already(ACCEPTED):
                return _transfer_of(transfer, duplicate=True)
            transfer.accept(at)  # refuses after the acceptance window
            account = self._fresh_member(recipient)
            assert account is not None, "a transfer is offered only to an enrolled member"
            account.receive_transfer(str(transfer.id), transfer.sender, transfer.allocations, at)
            self.save_batch([transfer, account], [])
            return _transfer_of(transfer, duplicate=False)

        return self._retrying(attempt)

    def decline_transfer(self, transfer_id: str, recipient: str, *, at: datetime) -> Transfer:
        """Returns the held points to the sender's same lots."""
        _check_moment(at)

        def attempt() -> Transfer:
            transfer = self._transfer_for(transfer_id, recipient)
            if transfer.already(DECLINED):
                return _transfer_of(transfer, duplicate=True)
            transfer.decline(at)
            self._give_back(transfer, "declined", at)
            return _transfer_of(transfer, duplicate=False)

        return self._retrying(attempt)

    def transfer(self, transfer_id: str) -> Transfer | None:
        transfer = self._fresh(_uuid(transfer_id))
        return None if transfer is None else _transfer_of(transfer, duplicate=False)

    def return_lapsed_transfer(self, transfer_id: str, at: datetime) -> bool:
        """The tick's part: a pending transfer whose window ran out by `at`
        goes back to the sender. False when there was nothing to do."""

        def attempt() -> bool:
            transfer = self._fresh(_uuid(transfer_id))
            if not isinstance(transfer, MemberTransfer) or transfer.status != PENDING or not transfer.is_lapsed(at):
                return False
            transfer.time_out(at)
            self._give_back(transfer, "timed_out", at)
            return True

        return self._retrying(attempt)

    def _give_back(self, transfer: MemberTransfer, reason: str, at: datetime) -> None:
        account = self._fresh_member(transfer.sender)
        assert account is not None
        account.take_back_transfer(str(transfer.id), transfer.recipient, transfer.allocations, reason, at)
        self.save_batch([transfer, account], [])

    def _transfer_for(self, transfer_id: str, recipient: str) -> MemberTransfer:
        transfer = self._fresh(_uuid(transfer_id))
        if not isinstance(transfer, MemberTransfer):
            raise UnknownTransferError(f"no transfer {transfer_id} for {recipient}")
        transfer.check_recipient(recipient)
        return transfer

    # -- reading and retrying -------------------------------------------------

    def _fresh(self, aggregate_id: UUID | None) -> Any:
        if aggregate_id is None:
            return None
        try:
            return self.repository.get(aggregate_id, version=LATEST)
        except AggregateNotFoundError:
            return None

    def _fresh_member(self, msisdn: str) -> MemberAccount | None:
        account = self._fresh(ids.member_id(msisdn))
        return account if isinstance(account, MemberAccount) else None

    def _seen(self, topic: str, key: str, request: str) -> bool:
        """Whether the key was used before: by the same request (True), by
        another (refused)."""
        known = self.recorder.select_inbox([(topic, key)]).get((topic, key))
        if known is None:
            return False
        if known != request:
            raise IdempotencyConflictError(f"idempotency key {key!r} was used for another request")
        return True

    def _retrying(self, attempt: Callable[[], T]) -> T:
        operational_errors = 0
        for _ in range(COMMAND_RETRIES_MAX):
            try:
                return attempt()
            except IntegrityError:
                continue  # another writer saved first: run again on its state
            except OperationalError:
                # Seen rarely under load on PostgreSQL: a conflict reported by
                # psycopg as "pipeline aborted" rather than as a unique
                # violation. Running the command again is safe: if the first
                # attempt did commit, the inbox or the state answers it.
                operational_errors += 1
                if operational_errors > OPERATIONAL_RETRIES_MAX:
                    raise
        raise ConcurrentWriterError("a spending command kept conflicting with other writers")


def _debit_of(account: MemberAccount, debit_id: str, duplicate: bool) -> Debit:
    debit = account.debit(debit_id)
    assert debit is not None and debit["status"] in (DEBITED, CANCELLED)
    return Debit(
        debit_id=debit_id,
        msisdn=account.msisdn,
        points=debit["points"],
        purpose=debit["purpose"],
        status=debit["status"],
        balance_after=debit["balance_after"],
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


def _check_moment(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("moments are time-zone aware")
