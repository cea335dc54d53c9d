"""Refusals of the programme's rules. Each carries the machine-readable reason
that lands in the rejections (dead letter) with a human-readable detail."""
from __future__ import annotations


class RuleRefusal(Exception):
    """A well-formed message that the rules refuse; nothing was changed."""

    reason = "refused"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class AlreadyEnrolledError(RuleRefusal):
    reason = "already_enrolled"


class UnknownReceiptError(RuleRefusal):
    reason = "unknown_receipt"


class ReceiptMemberMismatchError(RuleRefusal):
    reason = "receipt_member_mismatch"


class ReturnExceedsPurchaseError(RuleRefusal):
    reason = "return_exceeds_purchase"


class DuplicateReceiptError(RuleRefusal):
    reason = "duplicate_receipt"


class InsufficientPointsError(RuleRefusal):
    reason = "insufficient_points"


class ConcurrentWriterError(RuntimeError):
    """Another process keeps saving the same accounts; run one writer per store."""


# -- rule 10: spending points -------------------------------------------------


class InvalidAmountError(RuleRefusal):
    reason = "invalid_points"


class InvalidPurposeError(RuleRefusal):
    reason = "invalid_purpose"


class InvalidChannelError(RuleRefusal):
    reason = "invalid_channel"


class InvalidMsisdnError(RuleRefusal):
    """A command names a number that is not 11 ASCII digits starting with 7
    (schemas.msisdn); the message edge refuses such messages as `invalid_field`."""

    reason = "invalid_msisdn"


class NotEnrolledError(RuleRefusal):
    reason = "not_enrolled"


class IdempotencyConflictError(RuleRefusal):
    """The idempotency key was used before for another request."""

    reason = "idempotency_conflict"


class UnknownDebitError(RuleRefusal):
    reason = "unknown_debit"


class RecipientNotEnrolledError(RuleRefusal):
    reason = "recipient_not_enrolled"


class SelfTransferError(RuleRefusal):
    reason = "self_transfer"


class UnknownTransferError(RuleRefusal):
    """No such transfer, or not one of this member's (the same refusal, so
    that the transfers of others do not leak)."""

    reason = "unknown_transfer"


class TransferSettledError(RuleRefusal):
    reason = "transfer_settled"


class TransferExpiredError(RuleRefusal):
    reason = "transfer_expired"


# -- dead letters (issue 13) -----------------------------------------------------


class UnknownDeadLetterError(RuleRefusal):
    reason = "unknown_dead_letter"


class DeadLetterSettledError(RuleRefusal):
    """A redrive of a dead letter whose message was applied by an earlier
    redrive: applying it again would count it twice."""

    reason = "already_redriven"


# -- issue 13: adjustments by the loyalty team ---------------------------------


class InvalidAdjustmentError(RuleRefusal):
    """An adjustment request that is not well formed: no id, a reason
    shorter than 10 or longer than 500 characters, no requester."""

    reason = "invalid_adjustment"


class SelfApprovalError(RuleRefusal):
    """An adjustment approved by the one who requested it: the second pair
    of eyes must be someone else's."""

    reason = "self_approval"


# The names the personal-account API was specified with.
InsufficientPoints = InsufficientPointsError
InvalidAmount = InvalidAmountError
NotEnrolled = NotEnrolledError
IdempotencyConflict = IdempotencyConflictError
UnknownDebit = UnknownDebitError
RecipientNotEnrolled = RecipientNotEnrolledError
SelfTransfer = SelfTransferError
UnknownTransfer = UnknownTransferError
TransferSettled = TransferSettledError
TransferExpired = TransferExpiredError
