"""Stopping never waits on a broker: bounded broker calls and a grace for blips.

A stop (first failure, cancel) and the teardown talk to Redis — abort flag, purge,
revoke announcements, key deletion — but a dead or frozen broker must not hold a
cancelled render: each of those runs in a daemon thread that the orchestrator waits
for only so long (:func:`~stmpo_celery.broker.bounded`). Whatever it could not delete
expires by itself (:mod:`..broker._liveness`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from ..broker import EmbeddedRedis, bounded
from ..config import defaults
from ..host import kill_groups_now, remove_run_dir


class BrokerWatch:
    """Tells a broker blip from a lost broker: unreachable for longer than ``grace``
    seconds (:data:`defaults.BROKER_LOSS_GRACE_S`) is lost; anything shorter is not."""

    def __init__(self, grace: float = defaults.BROKER_LOSS_GRACE_S) -> None:
        self.grace = grace
        self.down_since: float | None = None
        self.blips = 0

    def ok(self, now: float) -> float | None:
        """A contact that worked; returns how long the broker had been unreachable."""
        gone = None if self.down_since is None else now - self.down_since
        if gone is not None:
            self.blips += 1
        self.down_since = None
        return gone

    def failed(self, now: float) -> bool:
        """One failed contact at ``now`` (monotonic); True when the broker is lost."""
        if self.down_since is None:
            self.down_since = now
        return now - self.down_since >= self.grace

    def gone(self, now: float, embedded: EmbeddedRedis | None = None) -> bool:
        """A broker call failed: is the broker gone? At once when it is an ``embedded``
        one whose process died; else — busy, swapping, stopped for a moment, or another
        host's — once it has not answered for ``grace`` seconds."""
        return (embedded is not None and not embedded.alive()) or self.failed(now)


def force_exit(groups: Sequence[int], procs: Sequence[subprocess.Popen[bytes] | None],
               code: int, signame: str, private: Sequence[str] = (),
               last_words: Callable[[], None] | None = None) -> NoReturn:
    """A second cancel signal: the first stop is taking too long. SIGKILL the slots'
    process groups and our other children, then ``last_words`` (what every cancel leaves:
    the half-written frames deleted, the summary), given at most
    :data:`defaults.FORCED_EXIT_WORDS_S`; remove the ``private`` folders (the run's spec
    and Redis config hold passwords), say so, exit now — no waiting on a broker, no funnel
    (its lock may be held by the interrupted thread)."""
    kill_groups_now(groups)
    for proc in procs:
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
    if last_words is not None:
        bounded(last_words, defaults.FORCED_EXIT_WORDS_S)
    for folder in private:
        remove_run_dir(Path(folder))
    with contextlib.suppress(OSError):
        os.write(1, f"stmpo: CANCELLED by {signame}, then forced to exit by a second "
                    f"{signame}: run again to render what is missing\n".encode())
    os._exit(code)
