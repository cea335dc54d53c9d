"""`accrual replay` and `accrual audit` rebuild the read models from the
whole log; for a long log, two processes share the work.

A child reads the log in large pages, decodes the events and works out each
page's changes (projections/projector.py `read_changes`); this process
writes them, page after page, in the order of the log. Reading and decoding
were about half of a rebuild, writing the other half, so each process has
a core to itself. The child runs ahead by at most `AHEAD_PAGES` pages; when
its map of account ids is full it waits until this process has written all
it sent, because it then looks ids up in the tables being written.
"""
from __future__ import annotations

import queue as queues
import time
from typing import Any, Callable, Iterator

from accrual.processes import orphaned, spawn
from accrual.settings import Settings
from projections.projector import Projector
from projections.tables import Names

PARALLEL_MIN_EVENTS = 50_000  # below this, starting a process costs more than it saves
AHEAD_PAGES = 3
WAIT_SECONDS = 600.0


def rebuild(settings: Settings, projector: Projector, progress: Callable[[int, int], None] | None = None) -> int:
    """Drops `projector`'s tables and rebuilds them from the log."""
    last = projector.app.recorder.max_notification_id() or 0
    if last < PARALLEL_MIN_EVENTS:
        return projector.rebuild(progress)
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    pages, written = context.Queue(maxsize=AHEAD_PAGES), context.Value("q", 0)
    sizes = (projector.id_cache_max, projector.rebuild_batch_size)
    reader, stop = spawn(_read, settings, projector.names.prefix, sizes, last, pages, written,
                         name="accrual-rebuild-reader")
    reader.start()
    try:
        return projector.rebuild(progress, _received(pages, written, reader))
    finally:
        stop.set()
        reader.join(30)
        if reader.is_alive():
            reader.terminate()


def _received(pages: Any, written: Any, reader: Any) -> Iterator[tuple]:
    """The child's pages, in order; `written` tells it how far this process got."""
    while True:
        try:
            page = pages.get(timeout=1.0)
        except queues.Empty:
            if not reader.is_alive():
                raise RuntimeError(f"the rebuild's reader ended (exit code {reader.exitcode})") from None
            continue
        if page is None:
            return
        yield page
        written.value = page[2]


def _read(stop: Any, parent: int, settings: Settings, prefix: str, sizes: tuple[int, int], last: int, pages: Any,
          written: Any) -> None:
    from accrual import collector
    from accrual.storage import open_application
    from projections.db import Database

    app = open_application(settings)
    db = Database(settings.database)
    projector = Projector(app, db, Names(prefix))
    projector.id_cache_max, projector.rebuild_batch_size = sizes
    collector.settle()

    def wait_for_writer(position: int) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while written.value < position:
            if stop.is_set() or orphaned(parent) or time.monotonic() > deadline:
                raise SystemExit(1)
            time.sleep(0.01)

    try:
        for page in projector.read_changes(last, wait_for_writer):
            if stop.is_set() or orphaned(parent):
                return
            pages.put(page)
        pages.put(None)
    finally:
        db.close()
        app.close()
