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

from accrual.processes import orphaned, spawn
from accrual.settings import Settings

logger = logging.getLogger(__name__)

IDLE_SECONDS = 0.02  # between looks at the log when there is nothing new
FINISH_TIMEOUT_SECONDS = 3600.0


def _follow(stop: Any, parent: int, settings: Settings) -> None:
    from accrual.runtime import Runtime

    with Runtime(settings) as runtime:
        projector, recorder = runtime.projector, runtime.app.recorder
        while not orphaned(parent):
            applied = projector.catch_up()
            if applied:
                continue
            if stop.is_set() and projector.position() >= (recorder.max_notification_id() or 0):
                return
            time.sleep(IDLE_SECONDS)


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
            self._process.terminate()
            self._process.join(10)
            return False
        return self._process.exitcode == 0

    def kill(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(10)
