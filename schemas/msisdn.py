"""A subscriber's number: the one definition every edge checks against.

An msisdn is 11 ASCII digits, the first a 7. "ASCII" matters: Python's
`str.isdigit()` is true for Arabic-Indic digits (`٩`) and superscripts (`²`),
and `int()` accepts some of those, so a check built on them lets a number the
billing systems cannot know into the event log. The message schemas, the
engine's commands, the personal account's API and pages and the operator's
`X-MSISDN` header all use this module.
"""
from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, StringConstraints

MSISDN_PATTERN = r"^7[0-9]{10}$"  # pydantic's (Rust) regex: [0-9] is ASCII, $ is the very end
_MSISDN = re.compile(r"7[0-9]{10}", re.ASCII)

Msisdn = Annotated[
    str,
    StringConstraints(strict=True, pattern=MSISDN_PATTERN),
    Field(description='11 ASCII digits starting with "7".', examples=["79161234567"]),
]


def is_msisdn(value: Any) -> bool:
    """True for a well-formed number only (`fullmatch`: no trailing newline)."""
    return isinstance(value, str) and _MSISDN.fullmatch(value) is not None


def ascii_digits(text: str) -> str:
    """The ASCII digits of `text`, in order (a phone number typed with
    spaces, brackets and dashes); any other digit is not a digit here."""
    return "".join(ch for ch in text if "0" <= ch <= "9")
