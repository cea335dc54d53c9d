"""How the member pages write numbers, points, money and dates: in Russian,
with Babel's data for the `ru` locale (CLDR) rather than rules written by
hand. Plural forms (1 балл, 2 балла, 5 баллов, 21 балл), thousands
separated by a no-break space (18 503), dates in words with the month in
the genitive (25 июля 2026), money as 10 000 ₽, moments in Moscow time.

Every function takes what the read models hold (ints, ISO text, Decimal)
and is registered as a Jinja filter by `web.pages`."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from babel import Locale
from babel.dates import format_date
from babel.numbers import format_decimal

from engine.calendar import MOSCOW

RU = Locale("ru")
MINUS = "\u2212"  # the typographic minus, not a hyphen


def number(value: int) -> str:
    """18503 -> '18 503' (a no-break space between thousands)."""
    return format_decimal(value, locale=RU)


def points_word(value: int) -> str:
    """The form of «балл» that goes with `value`."""
    return plural(value, "балл", "балла", "баллов")


def plural(value: int, one: str, few: str, many: str) -> str:
    """The word of three forms that goes with `value`: 1 месяц, 2 месяца, 5 месяцев."""
    return {"one": one, "few": few}.get(RU.plural_form(abs(value)), many)


def months(value: int) -> str:
    """12 -> '12 месяцев'."""
    return f"{number(value)}\u00a0{plural(value, 'месяц', 'месяца', 'месяцев')}"


def reference(identifier: str | None) -> str:
    """A short reference a member can read out to support: the first eight
    letters and digits of an order's or a transfer's id, in capitals
    ('№ 4F3A91C2'); the full id stays in the API."""
    text = "".join(c for c in (identifier or "") if c.isascii() and c.isalnum())[:8].upper()
    return f"№\u00a0{text}" if text else ""


def points(value: int) -> str:
    """18503 -> '18 503 балла'; 1 -> '1 балл'; 5 -> '5 баллов'."""
    return f"{number(value)}\u00a0{points_word(value)}"


def points_of(value: int) -> str:
    """The genitive, after «срок действия», «из»: '31 балла', '2 баллов', '5 баллов'."""
    return f"{number(value)}\u00a0{plural(value, 'балла', 'баллов', 'баллов')}"


def signed_points(value: int) -> str:
    """A movement: '+700 баллов', '−100 баллов', '0 баллов'."""
    sign = "+" if value > 0 else MINUS if value < 0 else ""
    return f"{sign}{points(abs(value))}"


def rubles(amount: Decimal | int | str) -> str:
    """Decimal('10000') -> '10 000 ₽'; Decimal('99.50') -> '99,50 ₽'."""
    value = Decimal(amount)
    pattern = "#,##0" if value == value.to_integral_value() else "#,##0.00"
    return f"{format_decimal(value, format=pattern, locale=RU)}\u00a0₽"


def _date(value: date | str) -> date:
    if isinstance(value, datetime):
        return value.astimezone(MOSCOW).date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(value[:10])


def day(value: date | str | None) -> str:
    """date(2026, 7, 25) or '2026-07-25' -> '25 июля 2026'."""
    if not value:
        return ""
    return format_date(_date(value), "d MMMM y", locale=RU)


def month(value: date | str | None) -> str:
    """'2026-07-25' -> 'июль 2026' (the month on its own: nominative)."""
    if not value:
        return ""
    return format_date(_date(value), "LLLL y", locale=RU)


def _in_moscow(value: str | None) -> datetime | None:
    """An ISO moment in Moscow time (a moment without an offset as written;
    the read models write aware ones), or None if it is not one."""
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at.astimezone(MOSCOW) if at.tzinfo else at


def moment(value: str | None) -> str:
    """ISO text with any offset -> '25 июля 2026, 14:05' in Moscow time."""
    at = _in_moscow(value)
    return f"{day(at.date())}, {at:%H:%M}" if at else value or ""


def clock(value: str | None) -> str:
    """ISO text with any offset -> '14:05' in Moscow time."""
    at = _in_moscow(value)
    return f"{at:%H:%M}" if at else ""


def moscow_day(value: str | None) -> date | None:
    """The Moscow date of an ISO moment (history is grouped by it)."""
    at = _in_moscow(value)
    return at.date() if at else None


def phone(msisdn: str | None) -> str:
    """'79160000001' -> '+7 916 000-00-01'."""
    return f"+7 {msisdn[1:4]} {msisdn[4:7]}-{msisdn[7:9]}-{msisdn[9:11]}" if msisdn and len(msisdn) == 11 else msisdn or ""


FILTERS = {
    "num": number, "points": points, "points_of": points_of, "points_word": points_word, "signed_points": signed_points,
    "rub": rubles, "months": months, "ref": reference, "day": day, "month": month, "moment": moment, "clock": clock,
    "phone": phone,
}
