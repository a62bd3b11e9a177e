"""Linux: ``prctl`` (parent-death signal, subreaper, process name), ``fork`` for the first
slots, ``sched_setaffinity`` pinning. Imported only through :mod:`._platform`."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import traceback
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, arg: int | bytes) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, arg, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def pdeathsig_preexec() -> None:
    """``preexec_fn``: the child gets SIGKILL when the process that started it dies."""
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def become_subreaper() -> bool:
    return prctl(_PR_SET_CHILD_SUBREAPER, 1)


def set_process_name(name: str) -> None:
    prctl(_PR_SET_NAME, name.encode()[:15])


def pin(cpus: set[int]) -> str | None:
    try:
        os.sched_setaffinity(0, cpus)
    except (OSError, AttributeError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        # the same text from every slot: the orchestrator says it once
        return f"CPU pinning failed ({why}): slots run unpinned; --no-affinity silences this"
    return None


def pinning_check() -> tuple[bool, str]:
    cpus = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as exc:
        return False, f"sched_setaffinity refused ({exc}): use --no-affinity"
    return True, f"{len(cpus)} CPU(s) usable by this process"


def fork_slot(body: Callable[[int], int], stdout_fd: int, stderr_fd: int, keep_fd: int) -> int:
    """Fork a child in a new session with stdio on the given fds and only ``keep_fd`` open;
    it runs ``body(keep_fd)`` and exits with its result. Returns the child's pid."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(stdout_fd, 1)
            os.dup2(stderr_fd, 2)
            os.closerange(3, keep_fd)
            os.closerange(keep_fd + 1, 65536)
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            code = body(keep_fd)
        except BaseException:  # noqa: BLE001 - a forked child must never return
            with contextlib.suppress(Exception):
                os.write(2, traceback.format_exc().encode())
        finally:
            os._exit(code)
    return pid
