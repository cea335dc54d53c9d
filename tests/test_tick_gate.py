"""When the worker's daily tick may close the day: the group's lag decides
(accrual/tick_gate.py). Times are seconds of a monotonic clock."""
from __future__ import annotations

from accrual.tick_gate import CAUGHT_UP, LAG_STALLED, LAG_UNKNOWN, LAGGING, TickGate

TEN_MINUTES = 600


def test_a_group_that_has_caught_up_lets_the_tick_run_at_once():
    verdict = TickGate().decide(0, now=100)
    assert (verdict.go, verdict.reason, verdict.waited_s) == (True, CAUGHT_UP, 0)


def test_a_lag_that_cannot_be_measured_holds_the_tick_back_however_long_it_lasts():
    # given: the broker stops answering when the tick becomes due
    gate = TickGate()
    # when: it still does not answer an hour later
    verdicts = [gate.decide(None, now=t) for t in range(0, 3601, 5)]
    # then: the tick never ran on an unknown lag (an unknown lag is not zero)
    assert not any(v.go for v in verdicts)
    assert {v.reason for v in verdicts} == {LAG_UNKNOWN} and verdicts[-1].waited_s == 3600
    # and once the broker answers with zero lag, it runs, saying how long it waited
    done = gate.decide(0, now=3605)
    assert (done.go, done.reason, done.waited_s) == (True, CAUGHT_UP, 3605)


def test_a_lag_that_keeps_falling_is_waited_for_beyond_ten_minutes():
    gate = TickGate()
    # the backlog falls by 100 a minute from 3,000: 30 minutes to catch up
    for minute in range(30):
        verdict = gate.decide(3000 - 100 * minute, now=60 * minute)
        assert (verdict.go, verdict.reason) == (False, LAGGING)
    assert gate.decide(0, now=1800).go


def test_a_lag_that_has_not_fallen_for_ten_minutes_no_longer_holds_the_books_back():
    gate = TickGate()
    gate.decide(500, now=0)
    gate.decide(52, now=60)  # the last fall: 52 left, and a partition stuck
    assert not gate.decide(52, now=60 + TEN_MINUTES - 1).go
    stalled = gate.decide(52, now=60 + TEN_MINUTES)
    assert (stalled.go, stalled.reason, stalled.waited_s, stalled.lag) == (True, LAG_STALLED, 660, 52)


def test_time_without_a_measurement_does_not_count_towards_the_patience():
    # given: a lag of 52, then the broker is gone for 20 minutes
    gate = TickGate()
    gate.decide(52, now=0)
    for t in range(5, 1200, 5):
        assert not gate.decide(None, now=t).go
    # when: it answers again with the same 52
    back = gate.decide(52, now=1200)
    # then: the stall clock starts again from this measurement, not from before the outage
    assert (back.go, back.reason) == (False, LAGGING)
    assert not gate.decide(52, now=1200 + TEN_MINUTES - 1).go
    assert gate.decide(52, now=1200 + TEN_MINUTES).reason == LAG_STALLED


def test_after_a_tick_the_next_wait_starts_from_nothing():
    gate = TickGate()
    gate.decide(10, now=0)
    assert gate.decide(0, now=100).go and not gate.waiting
    verdict = gate.decide(7, now=90_000)  # the next day
    assert (verdict.go, verdict.waited_s) == (False, 0)
