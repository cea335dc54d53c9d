"""Child processes of the engine (the read models' follower, the worker's
leader): started with `spawn`, since the parent holds database connections
and threads that a fork would copy half-way, and ended with their parent,
however it ends: the kernel kills a child whose parent dies (Linux's
parent-death signal), and a child also checks its parent between jobs.
Everything a child does is committed with its position, so being killed
anywhere loses nothing."""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from typing import Any, Callable

_PR_SET_PDEATHSIG = 1
OUTAGE_EXIT_CODE = 3  # a child that gave up on the store (accrual/outage.py), as the CLI's storage failures


def spawn(target: Callable[..., Any], *args: Any, name: str) -> tuple[Any, Any]:
    """(process, stop event): a child running `target(stop, parent_pid, *args)`."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    process = context.Process(target=_child, args=(target, stop, os.getpid(), *args), name=name, daemon=True)
    return process, stop


def _child(target: Callable[..., Any], stop: Any, parent: int, *args: Any) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the child still checks its parent between jobs
    if os.getppid() != parent:
        return  # the parent died before the signal was armed
    # Ctrl-C and a supervisor's SIGTERM reach the whole process group: the
    # parent decides when its children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from accrual.outage import StoreOutage

    try:
        target(stop, parent, *args)
    except StoreOutage as outage:
        print(f"{multiprocessing.current_process().name}: {outage}", file=sys.stderr, flush=True)
        sys.exit(OUTAGE_EXIT_CODE)  # the parent tells an outage from a fault by this code


def orphaned(parent: int) -> bool:
    return os.getppid() != parent
