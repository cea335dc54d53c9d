"""The personal account's read side: reads that never write.

Pages and the API read the read models as they are, each request thread on
a read-only connection of its own: a read takes no write lock and waits for
no projector. The read models follow the event log by themselves, in a
thread of this process that is not on any request's path (`LogFollower`,
a projector with its own connection, coordinated with any other projector
of the store by the position row). A command waits, bounded, until the
follower has passed the log position the command reached, so the page
shown after an order already has the new balance (read-your-writes).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from accrual.outage import is_store_error
from projections.db import Database
from projections.projector import Projector
from projections.queries import ReadModels

logger = logging.getLogger("accrual.web")

FOLLOW_IDLE_S = 0.05  # between looks at the log when nobody nudges
READ_YOUR_WRITES_WAIT_S = 2.0  # at most, after a command


class LogFollower:
    """A thread that keeps the read models at the end of the log."""

    def __init__(self, app: Any, url: Any):
        self.projector = Projector(app, Database(url))
        self.position = self.projector.position()
        self._changed = threading.Condition()
        self._nudge = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="accrual-web-follower", daemon=True)

    def start(self) -> LogFollower:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._nudge.set()
        self._thread.join(30)
        self.projector.db.close()

    def wait_for(self, position: int | None, timeout: float = READ_YOUR_WRITES_WAIT_S) -> bool:
        """Until the read models show the log up to `position` (a command's
        `reached()`); False if they did not within `timeout`."""
        if position is None:
            return True
        self._nudge.set()
        with self._changed:
            done = self._changed.wait_for(lambda: self.position >= position, timeout)
        if not done:
            logger.warning("read models behind a command after %.1f s (at %d, command at %d)",
                           timeout, self.position, position)
        return done

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.projector.catch_up()
                position = self.projector.position()
            except Exception as error:
                if not is_store_error(error):
                    logger.exception("the web process's read-model follower failed; it goes on")
                time.sleep(0.5)  # a store outage: the next look opens a new session
                continue
            if position != self.position:
                with self._changed:
                    self.position = position
                    self._changed.notify_all()
            self._nudge.wait(FOLLOW_IDLE_S)
            self._nudge.clear()


class ReadConnections:
    """One read-only connection per request thread, opened on first use."""

    def __init__(self, url: Any):
        self.url = url
        self.inline = not url.is_postgres  # reads may run on the event loop (Cabinet.read)
        self._local = threading.local()
        self._all: list[Database] = []
        self._lock = threading.Lock()

    def reads(self) -> ReadModels:
        reads = getattr(self._local, "reads", None)
        if reads is None:
            db = Database(self.url, read_only=True)
            with self._lock:
                self._all.append(db)
            reads = self._local.reads = ReadModels(db)
        return reads

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
