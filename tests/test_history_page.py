"""The personal account's history page (`ReadModels.history_page`) is read in
SQL, by the moment in UTC (`occurred_utc`), yet answers as the whole history
sorted in Python did: newest first by the parsed `occurred_at` (the log's
order among equal moments), filtered by kind and by Moscow date, with the
number of lines that match. Producers write `occurred_at` with any offset,
and an event can arrive after newer ones."""
from __future__ import annotations

from datetime import date, datetime
from itertools import product

import pytest

from engine.calendar import MOSCOW
from tests.programme import Programme

MEMBER = "79990001111"

# (event id, occurred_at as the producer wrote it), in the order they are sent.
SENT = (
    ("e", "2026-03-11T21:00:00Z"),  # Moscow 12 March 00:00
    ("a", "2026-03-09T20:59:59.999999+00:00"),  # Moscow 9 March 23:59:59.999999
    ("c2", "2026-03-10T23:30:00-02:00"),  # says the 10th: Moscow 11 March 04:30
    ("f1", "2026-03-10T12:00:00+03:00"),  # the same moment as f2
    ("d", "2026-03-11T20:59:59+00:00"),  # Moscow 11 March 23:59:59
    ("b", "2026-03-10T00:00:00+03:00"),  # Moscow 10 March 00:00
    ("f2", "2026-03-10T09:00:00Z"),  # the same moment as f1, later in the log
    ("c", "2026-03-10T02:30:00+05:00"),  # Moscow 10 March 00:30
    ("late", "2026-03-05T10:00:00+03:00"),  # arrives last, older than all but the enrollment
)
NEWEST_FIRST = ["e", "d", "c2", "f2", "f1", "c", "b", "a", "late", "enrolled"]


@pytest.fixture
def member(programme_on: Programme) -> Programme:
    programme_on.enroll(MEMBER, "2026-03-01 10:00", event_id="enrolled")
    for event_id, occurred_at in SENT:
        programme_on.ballyplus(MEMBER, 1, occurred_at, event_id=event_id)
    programme_on.runtime.projector.catch_up()
    return programme_on


def page(member: Programme, **filters) -> tuple[list[str], int]:
    entries, total = member.runtime.reads.history_page(MEMBER, **filters)
    return [e["source_event_id"] for e in entries], total


def test_lines_come_newest_first_by_their_moment_whatever_the_offset_or_arrival(member):
    assert page(member, limit=50) == (NEWEST_FIRST, 10)


def test_moscow_dates_filter_at_midnight_moscow_whatever_the_offset(member):
    march = {day: date(2026, 3, day) for day in range(1, 13)}
    # 00:00 Moscow is in the day; 23:59:59.999999 is not in the next
    assert page(member, since=march[10], until=march[10]) == (["f2", "f1", "c", "b"], 4)
    assert page(member, since=march[11]) == (["e", "d", "c2"], 3)
    assert page(member, since=march[10], until=march[11]) == (["d", "c2", "f2", "f1", "c", "b"], 6)
    assert page(member, since=march[12], until=march[12]) == (["e"], 1)
    assert page(member, until=march[9]) == (["a", "late", "enrolled"], 3)
    assert page(member, since=march[12], until=march[11]) == ([], 0)


def test_kinds_and_dates_filter_together(member):
    assert page(member, kinds=["enrolled"]) == (["enrolled"], 1)
    assert page(member, kinds=["accrued"], since=date(2026, 3, 1), until=date(2026, 3, 9)) == (["a", "late"], 2)
    assert page(member, kinds=["accrued", "enrolled", "accrued"], until=date(2026, 3, 9)) == (
        ["a", "late", "enrolled"], 3)
    assert page(member, kinds=["expired"]) == ([], 0)


def test_pages_count_every_matching_line_even_past_the_end(member):
    assert page(member, limit=3) == (NEWEST_FIRST[:3], 10)
    assert page(member, limit=3, offset=3) == (NEWEST_FIRST[3:6], 10)
    assert page(member, limit=3, offset=9) == (["enrolled"], 10)
    assert page(member, limit=3, offset=10) == ([], 10)
    assert page(member, limit=3, offset=500, since=date(2026, 3, 10)) == ([], 7)
    assert page(member, limit=3, offset=500, kinds=["expired"]) == ([], 0)
    assert member.runtime.reads.history_page("79990009999") == ([], 0)


def test_every_filter_gives_what_sorting_the_whole_history_in_python_gave(member):
    """The former reading, line for line, over a grid of filters (the
    calendar's ends included: they have no midnight in UTC to compare with)."""
    reads = member.runtime.reads
    days = [None, date(1, 1, 1), date(2026, 3, 9), date(2026, 3, 10), date(2026, 3, 11), date.max]
    kinds = [None, ["accrued"], ["enrolled", "redeemed"]]
    for since, until, wanted, (limit, offset) in product(days, days, kinds, [(50, 0), (2, 1), (4, 8), (5, 20)]):
        assert reads.history_page(MEMBER, kinds=wanted, since=since, until=until, limit=limit, offset=offset) == (
            former_page(reads.history(MEMBER), wanted, since, until, limit, offset)), (since, until, wanted, offset)


def test_every_history_line_has_its_moment_in_utc_and_the_audit_agrees(member):
    rows = member.runtime.db.query("SELECT occurred_at, occurred_utc FROM rm_history WHERE msisdn = ?", (MEMBER,))
    assert len(rows) == 10
    for occurred_at, occurred_utc in rows:
        assert datetime.fromisoformat(occurred_utc) == datetime.fromisoformat(occurred_at)
        assert occurred_utc.endswith("+00:00") and len(occurred_utc) == len("2026-03-10T09:00:00.000000+00:00")
    assert member.runtime.audit() == []


def former_page(entries, kinds, since, until, limit, offset):
    """`history_page` as it was: the whole history filtered and sorted in Python."""
    if kinds:
        entries = [e for e in entries if e["kind"] in kinds]

    def within(entry) -> bool:
        day = datetime.fromisoformat(entry["occurred_at"]).astimezone(MOSCOW).date()
        return (since is None or day >= since) and (until is None or day <= until)

    entries = [e for e in entries if within(e)]
    entries.sort(key=lambda e: (datetime.fromisoformat(e["occurred_at"]), e["version"]), reverse=True)
    return entries[offset:offset + limit], len(entries)
