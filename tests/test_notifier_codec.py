"""A member's state travels through the `members` table's changelog as
JSON (notifier/codec.py): everything the core decides from comes back
equal, and a state of a format this release does not know is refused, not
guessed."""
from __future__ import annotations

import json

import pytest

from notifier.codec import FORMAT, StateFormatError, from_json, to_json
from notifier.member import MemberState
from tests.notifier_support import ANNA, BORIS, Member, Notifier


def a_state_with_everything() -> MemberState:
    """Lots, an unannounced credit, a reminder given, a daily run done and
    a message waiting for the morning."""
    anna, notifier = Member(ANNA), Notifier(ANNA)
    notifier.event(anna.credit(300, "usage", "2026-12-01 12:00", expires_on="2026-12-20"))
    notifier.event(anna.credit(50, "shop", "2026-12-01 13:00"))
    notifier.tick("2026-12-02 10:00")  # the summary of 1 December, the 30-day reminder of 20 December
    notifier.event(anna.credit(70, "card", "2026-12-02 15:00"))
    notifier.event(anna.offered("tr-1", 500, BORIS, "2026-12-02 23:10", "2026-12-03 23:10"))  # waits for 09:00
    state = notifier.state
    assert state.lots and state.credits and state.reminded and state.ticked_on and state.waiting
    return state


def test_a_state_comes_back_equal_through_json_text():
    state = a_state_with_everything()
    assert from_json(json.loads(json.dumps(to_json(state)))) == state
    assert from_json(to_json(MemberState(ANNA))) == MemberState(ANNA)


def test_a_state_of_another_format_is_refused():
    value = to_json(MemberState(ANNA))
    with pytest.raises(StateFormatError, match="format 2"):
        from_json({**value, "format": FORMAT + 1})
