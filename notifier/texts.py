"""The Russian texts of the notifications, with the personal account's
filters (`web.formatting`: plural forms from CLDR, no-break spaces in
numbers, numbers as +7 916 000-00-01), so an SMS says a thing the way the
pages do. Each text fits in two SMS (`SMS_CHARS_MAX`: 2 × 67 characters
of a Cyrillic, UCS-2 multipart message); dates are in Moscow time and
without the year (a message is about the days just past or ahead)."""
from __future__ import annotations

from datetime import date, datetime

from babel.dates import format_date

from engine.calendar import MOSCOW
from web.formatting import RU, number, phone, plural, points, points_of

SMS_CHARS_MAX = 134

RULES = {  # what a credit was for, after «—»
    "usage": "за связь", "shop": "за покупки в салонах МТС", "mgts": "за услуги МГТС",
    "card": "за покупки по карте МТС Банка", "ballyplus": "из «Баллов Плюс»",
    "adjustment": "от службы поддержки",
}
OTHER = "за другое"
SPEND = "Потратить {} можно в каталоге личного кабинета."


def day_month(day: date) -> str:
    """date(2026, 12, 25) -> '25 декабря'."""
    return format_date(day, "d MMMM", locale=RU)


def credits(day: date, by_rule: dict[str, int], balance: int) -> str:
    """The day's credits, the largest first; if the breakdown would not
    fit in two SMS, the total alone."""
    total = sum(by_rule.values())
    head = f"За {day_month(day)} вам {plural(total, 'начислен', 'начислено', 'начислено')} {points(total)}"
    tail = f" На счёте {points(balance)}."
    if len(by_rule) == 1:
        (rule,) = by_rule
        return f"{head} {RULES.get(rule, OTHER)}.{tail}"
    parts = sorted(by_rule.items(), key=lambda item: (-item[1], item[0]))
    detailed = f"{head}: " + ", ".join(f"{number(p)} — {RULES.get(r, OTHER)}" for r, p in parts) + f".{tail}"
    return detailed if len(detailed) <= SMS_CHARS_MAX else f"{head}.{tail}"


def transfer_offered(points_offered: int, sender: str | None, deadline: datetime) -> str:
    by = f"{phone(sender)} переводит вам" if sender else "Вам переводят"
    local = deadline.astimezone(MOSCOW)
    return (f"{by} {points(points_offered)}. Примите перевод в личном кабинете "
            f"до {day_month(local.date())}, {local:%H:%M} (мск).")


def transfer_accepted(points_sent: int, recipient: str | None) -> str:
    to = f" на номер {phone(recipient)}" if recipient else ""
    return f"Ваш перевод {points_of(points_sent)}{to} принят."


def transfer_declined(points_back: int, recipient: str | None) -> str:
    return _returned(f"{_transfer(recipient)} отклонён", points_back)


def transfer_returned(points_back: int, recipient: str | None) -> str:
    return _returned(f"{_transfer(recipient)} не приняли вовремя", points_back)


def _transfer(recipient: str | None) -> str:
    return f"Перевод на номер {phone(recipient)}" if recipient else "Ваш перевод"


def _returned(what: str, points_back: int) -> str:
    if not points_back:  # every lot it held expired while it waited for an answer
        return f"{what}. Срок действия его баллов истёк, пока перевод ждал ответа."
    back = plural(points_back, "вернулся", "вернулись", "вернулись")
    return f"{what}: {points(points_back)} {back} на ваш счёт."


def expiry(expires_on: date, points_expiring: int, days_left: int) -> str:
    """Points burn at 00:00 of their expiry date, so they can be spent until
    the night before it: «в ночь на 25 декабря»."""
    burn = f"{plural(points_expiring, 'сгорит', 'сгорят', 'сгорят')} {points(points_expiring)}"
    spend = SPEND.format(plural(points_expiring, "его", "их", "их"))
    night = f"в ночь на {day_month(expires_on)}"
    if days_left <= 1:
        return f"Этой ночью {burn}. {spend}"
    if days_left <= 7:
        days = f"{days_left}\u00a0{plural(days_left, 'день', 'дня', 'дней')}"
        return f"Через {days}, {night}, {burn}. {spend}"
    return f"{night[0].upper()}{night[1:]} {burn}. {spend}"
