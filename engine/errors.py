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
