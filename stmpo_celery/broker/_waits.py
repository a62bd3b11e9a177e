"""Waiting on a broker call without being held by it — a broker that answers nothing
holds a socket read for as long as its timeout, retried: the call runs on a daemon
thread, and the caller waits only so long. Runs in the orchestrator (its start, stop and
teardown) and in a slot (its last words when orphaned); a thread still blocked is left
behind, and what it would still have written expires.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
from collections.abc import Callable


def bounded(fn: Callable[[], object], timeout: float) -> bool:
    """Run ``fn`` in a daemon thread; wait at most ``timeout`` s. True if it finished
    (its exceptions are dropped: best effort)."""

    def run() -> None:
        with contextlib.suppress(Exception):
            fn()

    t = threading.Thread(target=run, name="stmpo-broker-call", daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive()


class Waited(str, enum.Enum):
    """How a wait on a thread ended."""

    DONE = "done"
    """The thread finished (its exception, if any, is raised again in the waiter)."""
    CANCELLED = "cancelled"
    """A cancel came first: the thread is left to finish or block on its own."""
    TIMED_OUT = "timed out"
    """The thread did not finish in time: the broker does not answer."""


def until_done(fn: Callable[[], object], cancelled: Callable[[], bool], wait: float,
               step: float = 0.05) -> Waited:
    """Run ``fn`` on a daemon thread; wait for it, a cancel or ``wait`` seconds."""
    failure: list[BaseException] = []

    def body() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiter
            failure.append(exc)

    thread = threading.Thread(target=body, name="stmpo-broker-start", daemon=True)
    thread.start()
    deadline = time.monotonic() + wait
    while thread.is_alive():
        if cancelled():
            return Waited.CANCELLED
        left = deadline - time.monotonic()
        if left <= 0:
            return Waited.TIMED_OUT
        thread.join(min(step, left))  # the main thread's signal handlers run meanwhile
    if failure:
        raise failure[0]
    return Waited.DONE
