"""What to tell a member now: given the member's state, a points event or
a tick of the clock, the member's preferences and the moment (passed in:
the core reads no clock), the notifications to send now, those that wait
for the morning, and those the member turned off.

Only news is decided, so that a replay from the beginning of the topic
(with an empty state) sends nothing a member would not expect: a transfer
offer before its deadline, a transfer's outcome within `NEWS_FOR` of it,
the credit summary of yesterday, reminders of dates ahead. Whatever is
decided again carries the key it had the first time, and the send is
idempotent on it (docs/notifications.md)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from engine.calendar import moscow_date
from notifier import events as e
from notifier import notification as n
from notifier import texts
from notifier.events import PointsEvent
from notifier.member import REMINDER_DAYS, MemberState, Reminder, fold
from notifier.notification import Notification, key
from notifier.preferences import Preferences
from notifier.quiet import is_daily_run_due, not_before

NEWS_FOR = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Decision:
    state: MemberState  # the state to store (what was decided is recorded in it)
    send: tuple[Notification, ...] = ()  # due now: send each with its key
    delayed: tuple[Notification, ...] = ()  # decided now, waiting in `state` for 09:00
    suppressed: tuple[Notification, ...] = ()  # turned off by the member: counted, not sent


def on_event(state: MemberState, event: PointsEvent, preferences: Preferences, at: datetime) -> Decision:
    if event.account_version <= state.version:  # a repeat: decided when first seen
        return Decision(state)
    about = _about_transfer(state.msisdn, event, at)
    return _admit(fold(state, event), (about,) if about else (), preferences, at)


def on_tick(state: MemberState, preferences: Preferences, at: datetime) -> Decision:
    """Sends what waited for the morning; on the first tick at or after
    10:00 of a day, the daily run: yesterday's credits and the reminders."""
    due = tuple(w for w in state.waiting if w.not_before <= at)
    state = replace(state, waiting=tuple(w for w in state.waiting if w.not_before > at))
    drafts: tuple[Notification, ...] = ()
    today = moscow_date(at)
    if is_daily_run_due(at) and (state.ticked_on is None or state.ticked_on < today):
        state, drafts = _daily_run(state, today, at)
    decision = _admit(state, drafts, preferences, at)
    return replace(decision, send=due + decision.send)


def _admit(state: MemberState, drafts: tuple[Notification, ...], preferences: Preferences,
           at: datetime) -> Decision:
    allowed = tuple(d for d in drafts if preferences.allows(d.kind))
    send = tuple(d for d in allowed if d.not_before <= at)
    delayed = tuple(d for d in allowed if d.not_before > at)
    waiting = {w.key: w for w in (*state.waiting, *delayed)}
    return Decision(replace(state, waiting=tuple(waiting.values())), send, delayed,
                    tuple(d for d in drafts if not preferences.allows(d.kind)))


def _draft(msisdn: str, kind: str, about: date | str, text: str, at: datetime) -> Notification:
    return Notification(key(msisdn, kind, about), kind, msisdn, text, not_before(at))


def _about_transfer(msisdn: str, event: PointsEvent, at: datetime) -> Notification | None:
    transfer_id, other = event.source_event_id, event.counterpart
    if not transfer_id:
        return None
    if event.event_type == e.TRANSFER_OFFERED:
        if event.deadline is None or event.transfer_points is None or at >= event.deadline:
            return None  # cannot be accepted any more: no longer news
        text = texts.transfer_offered(event.transfer_points, other, event.deadline)
        return _draft(msisdn, n.TRANSFER_OFFERED, transfer_id, text, at)
    if at - event.occurred_at > NEWS_FOR:
        return None
    if event.event_type == e.TRANSFER_ACCEPTED and event.transfer_points is not None:
        text = texts.transfer_accepted(event.transfer_points, other)
        return _draft(msisdn, n.TRANSFER_ACCEPTED, transfer_id, text, at)
    if event.event_type == e.TRANSFER_RETURNED and event.reason == e.DECLINED:
        return _draft(msisdn, n.TRANSFER_DECLINED, transfer_id, texts.transfer_declined(event.points, other), at)
    if event.event_type == e.TRANSFER_RETURNED and event.reason == e.TIMED_OUT:
        return _draft(msisdn, n.TRANSFER_RETURNED, transfer_id, texts.transfer_returned(event.points, other), at)
    return None


def _daily_run(state: MemberState, today: date, at: datetime) -> tuple[MemberState, tuple[Notification, ...]]:
    """Yesterday's credits in one message (older ones unannounced are
    dropped: stale), and one reminder per expiry date and stage."""
    drafts = []
    yesterday = today - timedelta(days=1)
    by_rule = state.credits_of(yesterday)
    if by_rule:
        text = texts.credits(yesterday, by_rule, state.balance)
        drafts.append(_draft(state.msisdn, n.CREDITS, yesterday, text, at))
    reminded = list(state.reminded)
    for expires_on, points in state.expiring().items():
        days_left = (expires_on - today).days
        stage = next((days for days in sorted(REMINDER_DAYS) if 0 < days_left <= days), None)
        if stage is None or state.was_reminded(expires_on, stage):
            continue
        kind = n.EXPIRY_7 if stage == 7 else n.EXPIRY_30
        drafts.append(_draft(state.msisdn, kind, expires_on, texts.expiry(expires_on, points, days_left), at))
        reminded.append(Reminder(expires_on, stage))
    state = replace(
        state, credits=tuple(c for c in state.credits if c.day >= today),
        reminded=tuple(r for r in reminded if r.expires_on > today), ticked_on=today,
    )
    return state, tuple(drafts)
