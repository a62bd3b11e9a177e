"""One run per output: a lock file beside the output for every running render.

Two renders writing the same frame files destroy each other's work (a requeued task
next to a zombie one: one reports OK, the other then deletes frames it took for its
own half-written ones). Each run therefore records itself in
``<output folder>/.stmpo/run-<run>.lock`` (host, pid and start time of its
orchestrator, output pattern, frames) before it starts anything, re-stamps it while it
runs and removes it when it ends. A run whose frames overlap a live lock's is refused
(exit 2) with the other run named. A lock is dead — and reclaimed, with the in-flight
frames its run left behind — when, on its own host, its orchestrator process is gone
(pid and start time no longer match), or, from another host, when it has not been
re-stamped for ``OUTPUT_LOCK_STALE_S``. Deciding and writing happen under a guard
directory created with ``mkdir`` (atomic on local and network file systems).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..broker.keys import host_name
from ..config import defaults
from ..errors import BadInput, EnvironmentProblem
from ..host import (
    no_space,
    process_space,
    read_text,
    remove_file,
    same_process_alive,
    start_time,
    written_here,
)
from ..plan import OutputPattern, format_frames, parse_frames, shared_frames
from ..slot import LedgerEntry, state_dir, write_state

GUARD_WAIT_S = 10.0
LOCK_WAIT_SAY_S = 30.0  #: a run waiting for another's lock says so this often
GUARD_STALE_S = 30.0


@dataclass
class OutputLock:
    path: Path
    info: dict[str, Any]
    released: bool = False
    stamped: float = field(default_factory=time.monotonic)

    def refresh(self, force: bool = False) -> str | None:
        """Re-stamp the lock (at most every ``OUTPUT_LOCK_REFRESH_S`` unless forced).

        Other hosts age the lock by its mtime. Rewriting it needs free space; on a full
        disk the lock is touched instead (no space needed), so a live run is never taken
        for a dead one and its frames rendered over. Returns what went wrong when even
        that failed (the lock then ages: after ``OUTPUT_LOCK_STALE_S`` another host may
        take these frames), else None."""
        if self.released or (not force and time.monotonic() - self.stamped
                             < defaults.OUTPUT_LOCK_REFRESH_S):
            return None
        self.stamped = time.monotonic()
        self.info["time"] = time.time()
        try:
            write_state(self.path, self.info)
            return None
        except OSError:
            pass
        try:
            os.utime(self.path)
            return None
        except OSError as exc:
            return (f"the output lock {self.path} cannot be re-stamped ({exc.strerror or exc}):"
                    f" after {defaults.OUTPUT_LOCK_STALE_S:g} s another host may take this "
                    "run for a dead one and render the same frames")

    def release(self) -> None:
        if not self.released:
            self.released = True
            with contextlib.suppress(OSError):
                remove_file(self.path)
            with contextlib.suppress(OSError):  # only when no other run or ledger is there
                self.path.parent.rmdir()


def alive(info: dict[str, Any], mtime: float, now: float) -> bool:
    """Is the run that wrote this lock still running? (A malformed lock is not.)"""
    try:
        if written_here(info, host_name()):
            # a zombie is not: killed, never reaped (its parent frozen) it holds nothing,
            # though its pid and start time still match
            return same_process_alive(int(info.get("pid", 0)) or -1,
                                      float(info.get("started") or 0), tolerance=0.999)
        # aged by the folder's one clock: the time inside is its writer's clock, which
        # may be off this one's (or the server's) by more than the stale age
        return now - mtime < defaults.OUTPUT_LOCK_STALE_S
    except (TypeError, ValueError, OverflowError):
        return False


def folder_now(folder: Path) -> float:
    """The time by the clock that stamps ``folder``'s files (a file server's, for an
    output on a share): the mtime of a file made there now; this host's clock when none
    can be made. Locks written by other hosts are aged by that one clock: this host's
    may be minutes off the server's, and a live run's lock must never look old."""
    probe = folder / f".clock-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            return probe.stat().st_mtime
        finally:
            with contextlib.suppress(OSError):
                os.unlink(probe)
    except OSError:
        return time.time()


@contextlib.contextmanager
def _guard(folder: Path) -> Any:
    """Held while a run looks at the locks and writes its own; yields the time by the
    folder's clock (:func:`folder_now`)."""
    guard = folder / "guard"
    deadline = time.monotonic() + GUARD_WAIT_S
    while True:
        try:
            guard.mkdir()
            break
        except FileNotFoundError:  # the folder was just removed by a run that ended
            folder.mkdir(parents=True, exist_ok=True)
            continue
        except FileExistsError:
            with contextlib.suppress(OSError):
                if folder_now(folder) - guard.stat().st_mtime > GUARD_STALE_S:
                    guard.rmdir()  # left by a run killed inside this section
                    continue
            if time.monotonic() > deadline:
                raise EnvironmentProblem(f"output lock {guard} is held for more than "
                                         f"{GUARD_WAIT_S:g} s: remove it if no stmpo "
                                         "render is starting on this output") from None
            time.sleep(0.05)
    try:
        try:
            now = guard.stat().st_mtime  # made just now: the folder's clock
        except OSError:
            now = time.time()
        yield now
    finally:
        with contextlib.suppress(OSError):
            guard.rmdir()


def lock_path(folder: Path, run_id: str) -> Path:
    """Where run ``run_id`` keeps its lock in the output's state ``folder``."""
    return folder / f"run-{run_id}.lock"


def locks(folder: Path) -> list[tuple[Path, dict[str, Any], float]]:
    """Every run's lock in ``folder``: (path, what it says, when it was written). A lock
    that is not one (garbage, not JSON) says nothing: dead, reclaimed. One that cannot
    be read at all (permissions) may be a live run's: refused (exit 2), never taken
    for dead — on Windows a lock is unreadable for the instant its run replaces it,
    which :func:`~stmpo_celery.host.read_text` waits out."""
    out: list[tuple[Path, dict[str, Any], float]] = []
    try:
        names = sorted(folder.glob("run-*.lock"))  # lock_path of every run
    except OSError:
        return out
    for path in names:
        try:
            info = json.loads(read_text(path))
            if not isinstance(info, dict) or not {"host", "run"} <= info.keys():
                raise ValueError("not a lock")
            out.append((path, info, path.stat().st_mtime))
        except FileNotFoundError:
            continue  # released meanwhile
        except OSError as exc:
            raise BadInput(f"cannot read the output lock {path} ({exc.strerror or exc}): "
                           "if no stmpo render runs on this output, remove it") from None
        except ValueError:
            out.append((path, {}, 0.0))  # not a lock: dead, reclaimed
    return out


def _real(pattern: OutputPattern) -> OutputPattern:
    """``pattern`` with its folder's symlinks resolved: two spellings of one folder (a
    link, ``..``) name the same frame files."""
    folder, name = os.path.split(pattern.raw)
    return OutputPattern(os.path.join(os.path.realpath(folder or "."), name))


@dataclass(frozen=True)
class Busy:
    """A live run renders some of the frames asked for."""

    run: str
    host: str
    pid: str
    shared: str  #: the frames both want, as a frame spec
    pattern: str
    lock: Path

    def holder(self) -> str:
        return f"run {self.run} on {self.host} (pid {self.pid})"

    def refusal(self, waited: float) -> str:
        after = f" (waited {waited:g} s)" if waited > 0 else ""
        return (f"frames {self.shared} of {self.pattern} are being rendered by "
                f"{self.holder()}{after}: wait for it to end or cancel it (a dead run's "
                f"lock is reclaimed by itself; its lock file is {self.lock})")


def _claim(pattern: OutputPattern, frames: list[int],
           run_id: str) -> tuple[OutputLock, set[str]] | Busy:
    """One attempt at :func:`acquire`: the lock, or the live run in the way."""
    folder = state_dir(pattern)
    try:  # parents: a run that created the output folder removes it when left empty
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create {folder} for the output lock ({exc.strerror}): "
                       "fix the output folder's permissions") from None
    live: set[str] = set()
    with _guard(folder) as now:
        for path, info, mtime in locks(folder):
            if not alive(info, mtime, now):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # a dead run's lock: reclaimed
                continue
            live.add(str(info.get("run")))
            try:
                theirs = OutputPattern(str(info["pattern"]))
                shared = shared_frames(_real(pattern), frames, _real(theirs),
                                       parse_frames(str(info["frames"])))
            except Exception:  # noqa: BLE001 - an unreadable lock of a live run: overlap
                shared = list(frames)
            if shared:
                return Busy(str(info.get("run")), str(info.get("host")),
                            str(info.get("pid")), format_frames(shared), pattern.raw, path)
        info = {"run": run_id, "host": host_name(), "pid": os.getpid(),
                "space": process_space(), "started": start_time(), "pattern": pattern.raw,
                "frames": format_frames(frames), "time": now}
        path = lock_path(folder, run_id)
        try:
            write_state(path, info)
        except OSError as exc:
            failed = exc
        else:
            return OutputLock(path, info), live
    with contextlib.suppress(OSError):  # made for this lock alone: not left behind
        folder.rmdir()
    if no_space(failed):
        raise EnvironmentProblem(f"cannot write the output lock {path} ({failed.strerror}): "
                                 "free space in the output folder")
    raise BadInput(f"cannot write the output lock {path} ({failed.strerror}): "
                   "fix the output folder's permissions")


def stopped(pattern: OutputPattern, live: set[str]) -> Callable[[LedgerEntry], bool]:
    """Which in-flight ledgers a new run may settle (their frames deleted as not known to
    be whole): those of runs neither seen live when it claimed the output (``live``) nor
    holding a lock now. The second half closes a window: the guard is released once the
    claim is written, and a run that claims the folder right after (a lock is written
    before anything is started) may have frames in flight before the settle reaches its
    ledger."""
    folder = state_dir(pattern)

    def which(entry: LedgerEntry) -> bool:
        run = str(entry.run_id)
        return run not in live and not lock_path(folder, run).exists()

    return which


def acquire(pattern: OutputPattern, frames: list[int], run_id: str, wait: float = 0.0,
            on_wait: Callable[[Busy, float], None] | None = None) -> tuple[OutputLock,
                                                                           set[str]]:
    """Lock ``frames`` of ``pattern`` for ``run_id``; returns the lock and the run ids of
    the other live runs on this folder. When a live run overlaps, waits up to ``wait``
    seconds for it to end (looking again every ``OUTPUT_LOCK_POLL_S``; ``on_wait(busy,
    seconds left)`` is told first and then every ``LOCK_WAIT_SAY_S``), then refuses
    (exit 2) naming it. A cancel while waiting leaves nothing: the lock is not taken."""
    deadline = time.monotonic() + wait
    said = -math.inf
    while True:
        got = _claim(pattern, frames, run_id)
        if not isinstance(got, Busy):
            return got
        now = time.monotonic()
        if now >= deadline:
            raise BadInput(got.refusal(wait))
        if on_wait is not None and now - said >= LOCK_WAIT_SAY_S:
            said = now
            on_wait(got, deadline - now)
        time.sleep(min(defaults.OUTPUT_LOCK_POLL_S, deadline - now))
