"""Whether the worker's daily tick may close the day now. Pure logic: the
leader measures the consumer group's lag and asks; nothing here does I/O.

The tick closes a day on what arrived before its midnight, so it waits
while the group still has messages to apply:
- a measured lag of zero: the tick runs;
- a measured lag above zero: it waits, as long as the lag keeps falling (a
  backlog after downtime, a burst at midnight). A lag that has not fallen
  for `patience` (a stuck partition) no longer holds the books back: the
  tick runs, and says so;
- a lag that cannot be measured (the broker does not answer): it waits. An
  unknown lag is not zero, and the patience does not run for it: the
  stall clock starts again from the next measurement.
"""
from __future__ import annotations

from dataclasses import dataclass

PATIENCE_S = 600.0  # 10 minutes without the lag falling

CAUGHT_UP, LAGGING, LAG_UNKNOWN, LAG_STALLED = "caught_up", "lagging", "lag_unknown", "lag_stalled"


@dataclass(frozen=True)
class Verdict:
    go: bool
    reason: str  # CAUGHT_UP or LAG_STALLED when it goes; LAGGING or LAG_UNKNOWN when it waits
    waited_s: float  # since the tick was first held back (0 when it never was)
    lag: int | None


class TickGate:
    def __init__(self, patience_s: float = PATIENCE_S):
        self.patience_s = patience_s
        self.waiting_since: float | None = None
        self._lowest: int | None = None  # the lowest lag measured since the stall clock started
        self._fell_at: float | None = None  # when the lag last reached a new lowest

    @property
    def waiting(self) -> bool:
        return self.waiting_since is not None

    def decide(self, lag: int | None, now: float) -> Verdict:
        """`lag`: the group's total lag, or None when it could not be measured;
        `now`: a monotonic clock, in seconds."""
        if lag == 0:
            return self._go(CAUGHT_UP, lag, now)
        if self.waiting_since is None:
            self.waiting_since = now
        if lag is None:
            self._lowest = self._fell_at = None
            return self._wait(LAG_UNKNOWN, lag, now)
        if self._lowest is None or self._fell_at is None or lag < self._lowest:
            self._lowest, self._fell_at = lag, now
        if now - self._fell_at >= self.patience_s:
            return self._go(LAG_STALLED, lag, now)
        return self._wait(LAGGING, lag, now)

    def _go(self, reason: str, lag: int | None, now: float) -> Verdict:
        waited = 0.0 if self.waiting_since is None else now - self.waiting_since
        self.waiting_since = self._lowest = self._fell_at = None
        return Verdict(True, reason, waited, lag)

    def _wait(self, reason: str, lag: int | None, now: float) -> Verdict:
        assert self.waiting_since is not None
        return Verdict(False, reason, now - self.waiting_since, lag)
