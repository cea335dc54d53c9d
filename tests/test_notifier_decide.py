"""Issue 14 — what the notifier tells a member and when (notifier.decide):
one credit summary a day, transfer messages, expiry reminders at 30 and 7
days, quiet hours, preferences, and the deterministic keys that make each
notification once. Pure: plain values, a clock the test moves (Moscow time).

The texts are asserted whole (numbers with no-break spaces, as the
personal account writes them: «1 250 баллов»)."""
from dataclasses import replace
from datetime import date, datetime, timezone

from notifier import decide
from notifier.events import DECLINED, TIMED_OUT, LotChange, PointsEvent
from notifier.member import MemberState, fold
from notifier.preferences import CREDITS, EXPIRY, TRANSFERS, Preferences
from tests.notifier_support import ANNA, BORIS, Member, Notifier, at

NB = "\u00a0"


def test_a_days_credits_are_summed_by_rule_into_one_message_the_next_morning():
    anna, notifier = Member(ANNA), Notifier(ANNA)
    # given three usage credits and a shop credit on 2 December, at any hour
    for record in (anna.credit(100, "usage", "2026-12-02 08:10"), anna.credit(150, "usage", "2026-12-02 13:00"),
                   anna.credit(50, "shop", "2026-12-02 19:45"), anna.credit(50, "usage", "2026-12-02 23:58")):
        assert notifier.event(record) == []  # no SMS per credit
    # when the timer runs on 2 and 3 December
    notifier.days("2026-12-02", 2)
    # then one message, at 10:00 on the 3rd: usage 100 + 150 + 50 = 300, shop 50; total 350; balance 350
    assert [(n.key, n.not_before) for n in notifier.sent] == [(f"{ANNA}:credits:2026-12-02", at("2026-12-03 10:00"))]
    assert notifier.texts() == [
        f"За 2 декабря вам начислено 350{NB}баллов: 300 — за связь, 50 — за покупки в салонах МТС. "
        f"На счёте 350{NB}баллов."
    ]


def test_the_summary_is_sent_once_a_day_and_a_late_credit_of_a_summarised_day_is_not_announced():
    anna, notifier = Member(ANNA), Notifier(ANNA)
    notifier.event(anna.credit(300, "usage", "2026-12-02 12:00"))
    notifier.days("2026-12-03", 1, times=("10:00", "10:01", "15:00"))  # the timer again and again that day
    assert notifier.keys() == [f"{ANNA}:credits:2026-12-02"]
    # when a credit of 2 December arrives after its summary, and one of the 3rd comes too
    notifier.event(anna.credit(40, "usage", "2026-12-02 23:59"), when="2026-12-03 11:00")
    notifier.event(anna.credit(7, "card", "2026-12-03 18:00"))
    notifier.days("2026-12-04", 1)
    # then the 4th brings the 3rd's summary only (balance 300 + 40 + 7 = 347); the late 40 stays in the history
    assert notifier.keys() == [f"{ANNA}:credits:2026-12-02", f"{ANNA}:credits:2026-12-03"]
    assert notifier.texts()[-1] == (
        f"За 3 декабря вам начислено 7{NB}баллов за покупки по карте МТС Банка. На счёте 347{NB}баллов."
    )
    assert notifier.state.credits == ()


def test_credits_older_than_yesterday_are_not_announced_so_a_replay_does_not_recite_the_history():
    anna, notifier = Member(ANNA), Notifier(ANNA)
    # given a fresh notifier reading a year of credits from the beginning of the topic
    for month in range(1, 13):
        notifier.event(anna.credit(10, "usage", f"2026-{month:02d}-05 12:00"), when="2026-12-20 09:30")
    # when its first daily run comes
    notifier.tick("2026-12-20 10:00")
    # then no summary at all: the last credit (5 December) is not yesterday's
    assert notifier.sent == [] and notifier.state.credits == ()


def test_a_transfer_offer_tells_the_recipient_the_deadline_in_moscow_time():
    boris, notifier = Member(BORIS), Notifier(BORIS)
    # given Anna offers Boris 500 points at 14:05 Moscow on 3 December; the window is 24 hours
    record = boris.offered("tr-1", 500, ANNA, "2026-12-03 14:05", deadline="2026-12-04 14:05")
    sent = notifier.event(record)
    assert [(n.key, n.kind, n.msisdn) for n in sent] == [(f"{BORIS}:transfer_offered:tr-1", "transfer_offered", BORIS)]
    assert sent[0].text == (f"+7 916 000-00-01 переводит вам 500{NB}баллов. "
                            "Примите перевод в личном кабинете до 4 декабря, 14:05 (мск).")
    # and the deadline is said in Moscow time whatever the record's offset: 11:05 UTC is 14:05 Moscow
    in_utc = replace(record, deadline=datetime(2026, 12, 4, 11, 5, tzinfo=timezone.utc))
    assert Notifier(BORIS).event(in_utc)[0].text == sent[0].text


def test_an_offer_read_after_its_deadline_is_not_news():
    boris, notifier = Member(BORIS), Notifier(BORIS)
    record = boris.offered("tr-1", 500, ANNA, "2026-12-03 14:05", deadline="2026-12-04 14:05")
    assert notifier.event(record, when="2026-12-04 14:05") == []


def test_the_sender_hears_what_became_of_the_transfer():
    anna, notifier = Member(ANNA, balance=1000), Notifier(ANNA)
    accepted = notifier.event(anna.accepted("tr-1", 500, BORIS, "2026-12-03 15:00"))
    declined = notifier.event(anna.returned("tr-2", 200, DECLINED, BORIS, "2026-12-03 16:00"))
    returned = notifier.event(anna.returned("tr-3", 21, TIMED_OUT, BORIS, "2026-12-03 17:00"))
    lapsed = notifier.event(anna.returned("tr-4", 0, DECLINED, BORIS, "2026-12-03 18:00"))
    assert [n.key for n in accepted + declined + returned + lapsed] == [
        f"{ANNA}:transfer_accepted:tr-1", f"{ANNA}:transfer_declined:tr-2",
        f"{ANNA}:transfer_returned:tr-3", f"{ANNA}:transfer_declined:tr-4",
    ]
    assert notifier.texts() == [
        f"Ваш перевод 500{NB}баллов на номер +7 916 000-00-02 принят.",
        f"Перевод на номер +7 916 000-00-02 отклонён: 200{NB}баллов вернулись на ваш счёт.",
        f"Перевод на номер +7 916 000-00-02 не приняли вовремя: 21{NB}балл вернулся на ваш счёт.",
        "Перевод на номер +7 916 000-00-02 отклонён. Срок действия его баллов истёк, пока перевод ждал ответа.",
    ]


def test_a_transfers_outcome_older_than_a_day_is_not_news():
    anna, notifier = Member(ANNA, balance=1000), Notifier(ANNA)
    # 24 hours after the event it is still news; a second later it is not
    assert notifier.event(anna.returned("tr-1", 200, DECLINED, BORIS, "2026-12-01 16:00"), when="2026-12-02 16:00")
    assert not notifier.event(anna.returned("tr-2", 200, DECLINED, BORIS, "2026-12-01 16:00"),
                              when="2026-12-02 16:00:01")


def test_expiry_is_reminded_30_and_7_days_ahead_once_per_expiry_date():
    anna, notifier = Member(ANNA), Notifier(ANNA)
    # given 1 200 points expiring on 25 December (two lots) and 80 on 10 January
    notifier.event(anna.credit(1000, "usage", "2025-12-25 12:00", expires_on="2026-12-25"))
    notifier.event(anna.credit(200, "shop", "2025-12-25 13:00", expires_on="2026-12-25"))
    notifier.event(anna.credit(80, "card", "2026-01-10 00:00", expires_on="2027-01-10"))
    # when the timer runs every day from 20 November to 24 December
    notifier.days("2026-11-20", 35)
    # then: 25 Dec - 30 days = 25 Nov, 25 Dec - 7 = 18 Dec; 10 Jan - 30 = 11 Dec, 10 Jan - 7 = 3 Jan (not yet)
    assert [(n.key, n.not_before) for n in notifier.sent] == [
        (f"{ANNA}:expiry_30:2026-12-25", at("2026-11-25 10:00")),
        (f"{ANNA}:expiry_30:2027-01-10", at("2026-12-11 10:00")),
        (f"{ANNA}:expiry_7:2026-12-25", at("2026-12-18 10:00")),
    ]
    assert notifier.texts() == [
        f"В ночь на 25 декабря сгорят 1{NB}200{NB}баллов. Потратить их можно в каталоге личного кабинета.",
        f"В ночь на 10 января сгорят 80{NB}баллов. Потратить их можно в каталоге личного кабинета.",
        f"Через 7{NB}дней, в ночь на 25 декабря, сгорят 1{NB}200{NB}баллов. "
        "Потратить их можно в каталоге личного кабинета.",
    ]


def test_a_reminder_counts_the_points_left_when_it_is_sent():
    anna, notifier = Member(ANNA), Notifier(ANNA)
    notifier.event(anna.credit(300, "usage", "2025-12-25 12:00", expires_on="2026-12-25"))
    # spending 299 of them leaves 1 point to burn
    notifier.event(anna.spend(anna.records[0].lots[0], 299, "2026-12-20 12:00"))
    notifier.tick("2026-12-24 10:00")
    assert notifier.texts() == ["Этой ночью сгорит 1\u00a0балл. Потратить его можно в каталоге личного кабинета."]


def test_reminders_are_not_sent_again_after_a_restart_and_a_replay_decides_the_same_keys():
    anna, notifier = Member(ANNA), Notifier(ANNA)
    notifier.event(anna.credit(500, "usage", "2025-12-25 12:00", expires_on="2026-12-25"))
    notifier.days("2026-11-25", 1)
    sent = notifier.keys()
    # a restart: the state comes back from the changelog; the timer runs again that day and the next
    restarted = Notifier(ANNA)
    restarted.state = notifier.state
    restarted.days("2026-11-25", 2)
    assert restarted.sent == []
    # a replay from the beginning with an empty state: the same notification, with the same key, which
    # the idempotent send drops (tests/test_notifier_outbox.py)
    replayed = Notifier(ANNA)
    for record in anna.records:
        replayed.event(record, when="2026-11-25 12:00")
    replayed.days("2026-11-25", 2)
    assert replayed.keys() == sent == [f"{ANNA}:expiry_30:2026-12-25"]


def test_points_first_seen_within_7_days_get_the_7_day_reminder_only():
    anna, notifier = Member(ANNA), Notifier(ANNA)
    notifier.event(anna.credit(60, "usage", "2025-12-22 12:00", expires_on="2026-12-22"), when="2026-12-17 09:00")
    notifier.days("2026-12-17", 5)
    assert notifier.keys() == [f"{ANNA}:expiry_7:2026-12-22"]
    assert notifier.texts() == [
        f"Через 5{NB}дней, в ночь на 22 декабря, сгорят 60{NB}баллов. Потратить их можно в каталоге личного кабинета."
    ]


def test_quiet_hours_move_a_message_of_2330_to_0900_the_next_morning():
    boris, notifier = Member(BORIS), Notifier(BORIS)
    # given an offer at 23:30 (its deadline is the next day 23:30)
    assert notifier.event(boris.offered("tr-1", 50, ANNA, "2026-12-03 23:30", deadline="2026-12-04 23:30")) == []
    assert [(n.key, n.not_before) for n in notifier.delayed] == [(f"{BORIS}:transfer_offered:tr-1",
                                                                  at("2026-12-04 09:00"))]
    # then nothing at 08:59, the message at 09:00, and only once
    assert notifier.tick("2026-12-04 08:59") == []
    assert [n.key for n in notifier.tick("2026-12-04 09:00")] == [f"{BORIS}:transfer_offered:tr-1"]
    assert notifier.tick("2026-12-04 09:01") == [] and notifier.state.waiting == ()


def test_quiet_hours_move_a_message_of_0859_to_0900_and_leave_2159_alone():
    anna, notifier = Member(ANNA, balance=1000), Notifier(ANNA)
    notifier.event(anna.returned("tr-1", 10, DECLINED, BORIS, "2026-12-03 08:59"))
    notifier.event(anna.returned("tr-2", 10, DECLINED, BORIS, "2026-12-03 21:59"))
    notifier.event(anna.returned("tr-3", 10, DECLINED, BORIS, "2026-12-03 22:00"))
    assert [(n.key[-4:], n.not_before) for n in notifier.delayed] == [
        ("tr-1", at("2026-12-03 09:00")), ("tr-3", at("2026-12-04 09:00"))]
    assert [n.key[-4:] for n in notifier.sent] == ["tr-2"]


def test_a_preference_off_suppresses_that_kind_only():
    anna = Member(ANNA)
    notifier = Notifier(ANNA, preferences=Preferences(frozenset({CREDITS})))
    notifier.event(anna.credit(100, "usage", "2025-12-25 12:00", expires_on="2026-12-25"))
    notifier.event(anna.credit(30, "usage", "2026-11-24 12:00"))
    notifier.event(anna.returned("tr-1", 10, TIMED_OUT, BORIS, "2026-11-25 11:00"))
    notifier.tick("2026-11-25 10:00")
    # the summary of 24 November is counted as suppressed; the reminder and the transfer's outcome are sent
    assert [n.key for n in notifier.suppressed] == [f"{ANNA}:credits:2026-11-24"]
    assert sorted(n.kind for n in notifier.sent) == ["expiry_30", "transfer_returned"]
    # and turning credits back on does not bring the suppressed summary back
    notifier.preferences = Preferences()
    notifier.tick("2026-11-25 15:00")
    assert len(notifier.sent) == 2


def test_transfers_and_expiry_can_be_turned_off_too():
    boris = Member(BORIS)
    notifier = Notifier(BORIS, preferences=Preferences(frozenset({TRANSFERS, EXPIRY})))
    notifier.event(boris.credit(100, "usage", "2025-12-25 12:00", expires_on="2026-12-25"))
    notifier.event(boris.offered("tr-1", 5, ANNA, "2026-11-25 12:00", deadline="2026-11-26 12:00"))
    notifier.tick("2026-11-25 12:00")
    assert notifier.sent == [] and sorted(n.kind for n in notifier.suppressed) == ["expiry_30", "transfer_offered"]


def test_the_state_folds_lot_changes_and_ignores_a_repeated_record():
    anna = Member(ANNA)
    first = anna.credit(100, "usage", "2026-12-01 12:00", expires_on="2027-12-01")
    anna.credit(50, "shop", "2026-12-02 12:00", expires_on="2027-12-02")
    anna.spend(first.lots[0], 100, "2026-12-03 12:00")  # the first lot empties and leaves
    state = MemberState(ANNA)
    for record in anna.records:
        state = fold(state, record)
    assert fold(state, anna.records[0]) == state  # a redelivered record changes nothing
    assert (state.version, state.balance) == (4, 50)
    assert [(lot.lot_id, lot.expires_on, lot.points) for lot in state.lots] == [(2, date(2027, 12, 2), 50)]
    # points given back to an emptied lot bring it back with its dates
    back = replace(anna.records[-1], account_version=5, points=30, balance_after=80,
                   lots=(LotChange(1, date(2026, 12, 1), date(2027, 12, 1), 30),))
    assert fold(state, back).expiring() == {date(2027, 12, 1): 30, date(2027, 12, 2): 50}


def test_a_draw_from_a_lot_opened_before_the_topic_carried_lots_leaves_it_out_and_goes_on():
    """Records of the release before `lots` carry none: a notifier reading
    a topic that began then knows only the lots opened since."""
    anna = Member(ANNA)
    anna.credit(100, "usage", "2026-12-01 12:00", expires_on="2027-12-01")  # lot 1, as the old release wrote it:
    old = replace(anna.records[-1], lots=())                                 # no lots
    anna.credit(50, "shop", "2026-12-02 12:00", expires_on="2027-12-02")    # lot 2, with its lot
    spend = anna.spend(LotChange(1, date(2026, 12, 1), date(2027, 12, 1), 0), 60, "2026-12-03 12:00")
    state = MemberState(ANNA)
    for record in (old, anna.records[1], spend):
        state = fold(state, record)
    # 100 + 50 - 60 = 90 on the account; the state knows lot 2 only: the draw of 60 from lot 1 takes it out
    assert (state.version, state.balance) == (4, 90)
    assert [(lot.lot_id, lot.points) for lot in state.lots] == [(2, 50)]


def test_a_repeated_record_decides_nothing():
    boris = Member(BORIS)
    record = boris.offered("tr-1", 500, ANNA, "2026-12-03 14:05", deadline="2026-12-04 14:05")
    first = decide.on_event(MemberState(BORIS), record, Preferences(), at("2026-12-03 14:05"))
    again = decide.on_event(first.state, record, Preferences(), at("2026-12-03 14:06"))
    assert len(first.send) == 1 and again.send == () and again.state == first.state


def test_a_record_is_read_from_the_topics_json_with_or_without_lots():
    value = {"msisdn": ANNA, "account_version": 7, "event_type": "PointsAccrued", "points": 120, "rule": "usage",
             "reason": None, "source_event_id": "u-1", "occurred_at": "2026-12-02T21:30:00+00:00",
             "lot_date": "2026-12-03", "expires_on": "2027-12-03", "balance_after": 620}
    old = PointsEvent.from_record(value)
    assert (old.lots, old.is_credit, old.counterpart, old.deadline) == ((), True, None, None)
    new = PointsEvent.from_record({**value, "lots": [
        {"lot_id": 4, "lot_date": "2026-12-03", "expires_on": "2027-12-03", "points": 120}]})
    assert new.lots == (LotChange(4, date(2026, 12, 3), date(2027, 12, 3), 120),)
    # 21:30 UTC on the 2nd is 00:30 Moscow on the 3rd: a credit of the 3rd
    assert fold(MemberState(ANNA), new).credits_of(date(2026, 12, 3)) == {"usage": 120}
