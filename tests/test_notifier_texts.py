"""Issue 14 — the notifications' Russian: the forms that go with a number
(1 балл, 2 балла, 5 баллов, 21 балл; сгорит / сгорят; вернулся /
вернулись), dates without the year in the genitive, and every text within
two SMS (134 Cyrillic characters), even with large numbers."""
from datetime import date, datetime, timezone

import pytest

from notifier import texts

NB = "\u00a0"
NUMBERS = (1, 2, 5, 11, 21, 22, 25, 1_000_000)


@pytest.mark.parametrize("points, burn", [(1, f"сгорит 1{NB}балл"), (2, f"сгорят 2{NB}балла"),
                                          (5, f"сгорят 5{NB}баллов"), (11, f"сгорят 11{NB}баллов"),
                                          (21, f"сгорит 21{NB}балл"), (1200, f"сгорят 1{NB}200{NB}баллов")])
def test_the_verb_and_the_noun_agree_with_the_number(points, burn):
    text = texts.expiry(date(2027, 1, 10), points, 20)
    assert text.startswith(f"В ночь на 10 января {burn}. ")
    assert ("Потратить его" if burn.startswith("сгорит") else "Потратить их") in text


def test_the_days_left_agree_too():
    assert [texts.expiry(date(2027, 1, 10), 5, days).split(",")[0] for days in (1, 2, 5, 7)] == [
        f"Этой ночью сгорят 5{NB}баллов. Потратить их можно в каталоге личного кабинета.",
        f"Через 2{NB}дня", f"Через 5{NB}дней", f"Через 7{NB}дней"]


def test_one_credit_says_nachislen_and_many_say_nachisleno():
    assert texts.credits(date(2026, 3, 8), {"mgts": 1}, 41) == (
        f"За 8 марта вам начислен 1{NB}балл за услуги МГТС. На счёте 41{NB}балл.")
    assert texts.credits(date(2026, 5, 1), {"ballyplus": 3}, 3).startswith(f"За 1 мая вам начислено 3{NB}балла из")


def test_a_summary_too_long_for_two_sms_gives_the_total_alone():
    # six rules of a million points each: the breakdown would run past 134 characters
    every_rule = dict.fromkeys(("usage", "shop", "mgts", "card", "ballyplus", "adjustment"), 1_000_000)
    assert texts.credits(date(2026, 12, 2), every_rule, 9_000_000) == (
        f"За 2 декабря вам начислено 6{NB}000{NB}000{NB}баллов. На счёте 9{NB}000{NB}000{NB}баллов.")


@pytest.mark.parametrize("n", NUMBERS)
def test_every_text_fits_in_two_sms(n):
    deadline = datetime(2026, 12, 31, 20, 59, tzinfo=timezone.utc)
    every = [
        texts.credits(date(2026, 11, 30), {"usage": n, "card": n, "shop": n}, n * 10),
        texts.transfer_offered(n, "79161234567", deadline),
        texts.transfer_accepted(n, "79161234567"),
        texts.transfer_declined(n, "79161234567"), texts.transfer_declined(0, "79161234567"),
        texts.transfer_returned(n, "79161234567"),
        texts.expiry(date(2026, 11, 30), n, 30), texts.expiry(date(2026, 11, 30), n, 7),
    ]
    assert max(len(t) for t in every) <= texts.SMS_CHARS_MAX
    assert "23:59 (мск)" in every[1] and "31 декабря" in every[1]
