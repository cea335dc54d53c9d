"""Adjustments (issue 13): the loyalty team corrects a member's points. Mixed
into `AccrualApplication`; the back-office console calls `adjust` once an
adjustment is approved (or small enough to need no approval). The approval
workflow itself is the console's; this is what happens when one is applied.

One unit of work per adjustment, reading the account as stored now (the
console, the web workers and the stream worker all write accounts), with
the idempotency of the spending commands: an inbox row (topic below, key =
the adjustment id, fingerprint of the request) is written in the same
transaction as the event, so the same adjustment sent twice, or by twenty
callers at once, is applied once and answered the same to all. The same id
for another request is refused (`idempotency_conflict`).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from engine import ids
from engine.account import MemberAccount
from engine.errors import InvalidAdjustmentError, InvalidAmountError, NotEnrolledError, SelfApprovalError
from engine.spending import _check_moment, _check_msisdn, _member, _seen, fingerprint
from engine.unit_of_work import UnitOfWork

ADJUSTMENTS_TOPIC = "accrual.adjustments"  # pseudo-topic of the inbox
POINTS_MAX = 10_000_000  # a limit on everything: no correction of a member is larger
REASON_CHARS = (10, 500)  # a reason says what was wrong, and fits a screen
ID_CHARS_MAX = 128  # as an inbound event_id
LOGIN_CHARS_MAX = 128


@dataclass(frozen=True)
class Adjusted:
    """An applied adjustment as the caller sees it."""

    adjustment_id: str
    msisdn: str
    points: int  # signed: credits +, debits -
    balance_after: int  # the balance right after the adjustment
    duplicate: bool  # the same request was answered before


class AdjustmentCommands:
    """The adjustment command of `AccrualApplication` (which provides `run`
    and `rules`)."""

    rules: Any
    run: Callable[..., Any]

    def adjust(
        self,
        msisdn: str,
        points: int,
        *,
        adjustment_id: str,
        reason: str,
        requested_by: str,
        approved_by: str | None,
        at: datetime,
    ) -> Adjusted:
        """Applies a staff adjustment of `points` (signed) to the member. A
        credit opens a lot dated the Moscow day of `at`; a debit takes
        first-to-expire lots and is refused (`insufficient_points`) beyond
        the balance. The same `adjustment_id` and request again answers the
        first application (duplicate=True)."""
        _check_moment(at)
        _check_msisdn(msisdn)
        _check_request(points, adjustment_id, reason, requested_by, approved_by)
        # `at` is not part of the request: a retry some seconds later is the same adjustment.
        request = fingerprint({"msisdn": msisdn, "points": points, "reason": reason,
                               "requested_by": requested_by, "approved_by": approved_by})

        def work(uow: UnitOfWork) -> Adjusted:
            # The account is read before the inbox, as in `SpendingCommands.debit`:
            # if the inbox has no row yet, saving this account conflicts with
            # any writer that added one meanwhile, and the next attempt sees it.
            account = _member(uow, msisdn)
            if _seen(uow, ADJUSTMENTS_TOPIC, adjustment_id, request):
                account = uow.reread(ids.member_id(msisdn))  # the read above may be older than the row
                assert account is not None, "the inbox names a saved adjustment"
                return _adjusted(account, adjustment_id, points, duplicate=True)
            if account is None:
                raise NotEnrolledError(f"{msisdn} is not an enrolled member")
            account.adjust(adjustment_id, points, reason, requested_by, approved_by, at, self.rules)
            uow.consume(ADJUSTMENTS_TOPIC, adjustment_id, request, adjustment_id)
            return _adjusted(account, adjustment_id, points, duplicate=False)

        return self.run(work, fresh=True)

    def adjustment(self, msisdn: str, adjustment_id: str) -> int | None:
        """The member's balance right after that adjustment, or None if it
        was never applied (to the console: "was it applied?")."""

        def work(uow: UnitOfWork) -> int | None:
            account = _member(uow, msisdn)
            return None if account is None else account.adjustment(adjustment_id)

        return self.run(work, fresh=True)


def _adjusted(account: MemberAccount, adjustment_id: str, points: int, duplicate: bool) -> Adjusted:
    balance_after = account.adjustment(adjustment_id)
    assert balance_after is not None, "the account remembers every adjustment applied"
    return Adjusted(adjustment_id, account.msisdn, points, balance_after, duplicate)


def _check_request(
    points: int, adjustment_id: str, reason: str, requested_by: str, approved_by: str | None
) -> None:
    """The request is well formed before the domain sees it."""
    if isinstance(points, bool) or not isinstance(points, int) or points == 0 or abs(points) > POINTS_MAX:
        raise InvalidAmountError(f"an adjustment is a whole number of points, 1 to {POINTS_MAX:,} up or down, "
                                 f"not {points!r:.40}")
    if not _text(adjustment_id, 1, ID_CHARS_MAX):
        raise InvalidAdjustmentError(f"an adjustment id is 1 to {ID_CHARS_MAX} characters, not {adjustment_id!r:.40}")
    least, most = REASON_CHARS
    if not _text(reason, least, most):
        raise InvalidAdjustmentError(f"the reason of an adjustment is {least} to {most} characters")
    if not _text(requested_by, 1, LOGIN_CHARS_MAX):
        raise InvalidAdjustmentError("an adjustment names the staff login that requested it")
    if approved_by is not None and not _text(approved_by, 1, LOGIN_CHARS_MAX):
        raise InvalidAdjustmentError("an approved adjustment names the staff login that approved it")
    if approved_by is not None and approved_by == requested_by:
        raise SelfApprovalError(f"{requested_by} cannot approve their own adjustment")


def _text(value: object, least: int, most: int) -> bool:
    """A string of `least` to `most` characters, not counting the blanks
    around it (a reason of ten spaces says nothing)."""
    return isinstance(value, str) and least <= len(value.strip()) and len(value) <= most
