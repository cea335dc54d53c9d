"""The read models follow the event log by themselves, in a process of their
own.

While `accrual ingest` applies a large file, or `accrual worker` applies its
partitions, a child process reads the log from the position the read models
reached and writes them (projections/projector.py): one core does the
domain work and the store's inserts, the other the read models. Each batch
the child writes carries its position in the same transaction, so it can
stop anywhere; if it dies, the parent (or the next start) catches up from
the log, and two projectors of one store never apply a notification twice.

The child ends when its parent asks it to (after reaching the end of the
log) or with its parent (accrual/processes.py).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from accrual.outage import Outage, is_store_error, ride_out
from accrual.processes import orphaned, spawn
from accrual.settings import Settings

logger = logging.getLogger(__name__)

IDLE_SECONDS = 0.02  # between looks at the log when there is nothing new
FINISH_TIMEOUT_SECONDS = 3600.0


def _follow(stop: Any, parent: int, settings: Settings) -> None:
    from accrual.runtime import Runtime

    runtime = ride_out("the read models", settings.store_outage_limit_s, lambda: Runtime(settings),
                       stopping=lambda: stop.is_set() or orphaned(parent))
    if runtime is None:
        return
    with runtime:
        outage = Outage("the read models", settings.store_outage_limit_s)
        while not orphaned(parent):
            try:
                done = _follow_once(runtime, stop)
            except Exception as error:
                if not is_store_error(error):
                    raise
                delay = outage.failed(error, time.monotonic())  # StoreOutage past the limit ends the child
                logger.warning("read models: store error; trying again in %.1f s (%s: %s)",
                               delay, type(error).__name__, error)
                time.sleep(delay)
                continue
            if outage.ongoing:
                logger.info("read models: the store answers again after %.1f s", outage.recovered(time.monotonic()))
            if done:
                return


def _follow_once(runtime: Any, stop: Any) -> bool:
    """One look at the log: applies what is new; True when asked to stop and
    the read models have reached its end."""
    if runtime.projector.catch_up():
        return False
    if stop.is_set() and runtime.projector.position() >= (runtime.app.recorder.max_notification_id() or 0):
        return True
    time.sleep(IDLE_SECONDS)
    return False


class Follower:
    """A child process that keeps the read models of `settings`' store up
    to the end of its event log."""

    def __init__(self, settings: Settings):
        self._process, self._stop = spawn(_follow, settings, name="accrual-read-models")

    def start(self) -> Follower:
        self._process.start()
        return self

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode

    def finish(self, timeout: float = FINISH_TIMEOUT_SECONDS) -> bool:
        """Waits until the read models have reached the end of the log as it
        is now and the child has ended; False if it failed or had to be
        stopped (the caller then catches up itself)."""
        self._stop.set()
        self._process.join(timeout)
        if self._process.is_alive():
            logger.warning("the read-model follower did not finish in %.0f s; stopping it", timeout)
            self.kill()
            return False
        return self._process.exitcode == 0

    def kill(self) -> None:
        """SIGKILL (its SIGTERM only asks it to finish): whatever it had not
        committed, the next follower catches up from the log."""
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)
