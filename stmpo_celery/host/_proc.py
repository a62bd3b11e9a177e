"""Process trees: start them so they can be found, and kill them whole.

aerender is a launcher that starts After Effects as a separate process; killing
only the launcher leaves a renderer holding RAM and a licence. Every stop in
stmpo-celery goes through :func:`kill_tree`, which kills a process, its process
group and every descendant it can find (snapshotted before the first kill so that
reparented grandchildren are not missed).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import psutil

from ._platform import OS, kill_group, leads_group

try:
    import resource  # POSIX only: Windows has no process limits of this kind
except ImportError:
    resource = None  # type: ignore[assignment]

BOOT_TIME_SLACK_S = 2.0  #: two processes' view of one boot time differs by at most this


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except (psutil.Error, OSError):  # OSError: out of file descriptors (reading /proc)
        return []


def kill_tree(pid: int, *, pgid: int | None = None, include_self: bool = True,
              timeout: float = 2.0) -> list[int]:
    """SIGKILL ``pid``, its process group and all its descendants; wait for them.

    Returns the pids that were still alive after ``timeout`` (normally none).
    """
    procs: list[psutil.Process] = []
    if include_self:
        with contextlib.suppress(psutil.Error, OSError):
            procs.append(psutil.Process(pid))
    procs.extend(descendants(pid))
    if pgid is not None:
        procs.extend(group_members(pgid, exclude={p.pid for p in procs}))
    if pgid is not None:
        kill_group(pgid)
    for p in procs:
        with contextlib.suppress(psutil.Error, OSError):
            p.kill()
    return [p.pid for p in wait_gone(procs, timeout)]


def _zombie(p: psutil.Process) -> bool:
    try:
        return bool(p.status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return True
    except OSError:  # cannot tell (out of file descriptors): not gone yet
        return False


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until each process is gone, reaping our own children; a zombie counts as gone
    (an orphan whose reaper is not us — no subreaper, or an init that never reaps —
    stays a zombie forever but holds nothing). Returns the processes still alive."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while alive:
        try:
            _, alive = psutil.wait_procs(alive, timeout=0.02)
        except OSError:  # out of file descriptors: look again
            time.sleep(0.02)
        alive = [p for p in alive if not _zombie(p)]
        if time.monotonic() > deadline:
            break
    return alive


def group_members(pgid: int, exclude: set[int] | None = None) -> list[psutil.Process]:
    """Live processes of process group ``pgid`` (a dead slot's orphaned renderer)."""
    if not hasattr(os, "getpgid"):
        return []
    out: list[psutil.Process] = []
    try:
        procs = list(psutil.process_iter())
    except OSError:  # out of file descriptors (listing /proc): the group kill still works
        return out
    for p in procs:
        if exclude and p.pid in exclude:
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(p.pid) == pgid:
                out.append(p)
    return out


def kill_procs(procs: Iterable[psutil.Process], timeout: float = 2.0) -> list[int]:
    procs = list(procs)
    for p in procs:
        with contextlib.suppress(psutil.Error, OSError):
            p.kill()
    return [p.pid for p in wait_gone(procs, timeout)]


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user+system) summed over ``pid`` and all its live descendants."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(
                    t, "children_system", 0.0
                )
    except psutil.Error:
        pass
    return total


def start_deathwatch(fd: int, cleanup: Callable[[], None] | None = None,
                     fence: threading.Event | None = None) -> threading.Thread:
    """Kill this process's whole tree when the pipe ``fd`` reaches EOF: set ``fence``,
    kill the descendants, run ``cleanup``, exit.

    The orchestrator holds the write end; it is closed by the kernel however the
    orchestrator ends (even SIGKILL), so slots and their aerender trees never outlive it.
    """

    def watch() -> None:
        try:
            while os.read(fd, 1):
                pass
        except OSError:
            pass
        if fence is not None:
            fence.set()
        me = os.getpid()
        kill_procs(descendants(me), timeout=1.0)
        if cleanup is not None:
            with contextlib.suppress(Exception):
                cleanup()
        if leads_group(me):  # a slot leads its own process group
            kill_group(me)
        os._exit(1)  # (Windows has no SIGKILL; the run's Job Object ends the rest)

    t = threading.Thread(target=watch, name="stmpo-deathwatch", daemon=True)
    t.start()
    return t


def private_opener(path: str, flags: int) -> int:
    """``open(..., opener=private_opener)``: a file created 0600 (logs may quote paths,
    comp names and errors that are nobody else's business)."""
    return os.open(path, flags, 0o600)


def process_started(pid: int) -> float | None:
    """The start time of process ``pid`` (epoch seconds), None when there is none."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, ValueError, OverflowError):
        return None


@functools.lru_cache(maxsize=1)
def process_space() -> dict[str, str | float]:
    """Where a pid names one process, beside the host's name: the boot (Linux: its
    ``boot_id``; elsewhere its boot time) and, on Linux, the PID namespace. Two containers
    that share a host name (``network_mode: service:…``), or two machines cloned under
    one name, differ here: a record of the other's process is never judged by a pid
    looked up here. Recorded with every pid another process may judge (run registry,
    output lock, farm worker)."""
    space: dict[str, str | float] = {}
    if OS == "linux":
        with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id",
                                                 encoding="ascii") as f:
            space["boot"] = f.read().strip()
        with contextlib.suppress(OSError):
            space["pidns"] = os.readlink("/proc/self/ns/pid")
    if "boot" not in space:
        with contextlib.suppress(Exception):
            space["boot"] = round(psutil.boot_time(), 1)
    return space


def same_space(space: object) -> bool:
    """Does a record's :func:`process_space` say its pid can be looked up here? A record
    without one (or from a newer stmpo that records more) is another host's: judged by
    its heartbeat or its age, never by a pid."""
    return spaces_match(process_space(), space)


def written_here(record: Mapping[str, Any], host: str) -> bool:
    """Whether a record of a process (its ``host`` name and ``space``) was written in this
    process space: only then may its pid be looked up here."""
    return record.get("host") == host and same_space(record.get("space"))


def spaces_match(mine: dict[str, str | float], theirs: object) -> bool:
    """Two process spaces are one: the same keys, equal values, boot times within
    :data:`BOOT_TIME_SLACK_S` (Windows reports its own to about a second)."""
    if not isinstance(theirs, dict) or not mine or set(theirs) != set(mine):
        return False
    for key, value in mine.items():
        other = theirs[key]
        if isinstance(value, float):
            if not isinstance(other, (int, float)) or isinstance(other, bool) \
                    or abs(other - value) > BOOT_TIME_SLACK_S:
                return False
        elif other != value:
            return False
    return True


def same_process_alive(pid: int, started: float, tolerance: float = 1.0) -> bool:
    """Is process ``pid`` still the one that started at ``started`` (not a reused pid)?
    A zombie is not: killed, it has run its last (its parent has not reaped it yet, and
    may take a while — or never, if it is busy)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(float(proc.create_time()) - started) <= tolerance
    except (psutil.Error, ValueError, OverflowError):
        return False


def scrub_argv(secrets: list[str]) -> None:
    """Overwrite each secret in this process's command line and in the environment it
    started with (``ps``, ``/proc/PID/cmdline``, ``/proc/PID/environ``: what the kernel
    shows, whatever ``os.environ`` holds now) with ``*``; children forked later share
    the scrubbed copy. Linux only (the kernel keeps both in the process's own memory,
    writable through ``/proc/self/mem``); elsewhere it does nothing, so pass secrets
    through the environment or a file there, and take them out of ``os.environ``."""
    wanted = [s.encode() for s in secrets if s]
    if not wanted or not sys.platform.startswith("linux"):
        return
    try:
        with open("/proc/self/stat", "rb") as fh:
            stat = fh.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        # arg_start, arg_end, env_start, env_end (fields 48-51 of proc(5))
        areas = [(int(fields[45]), int(fields[46])), (int(fields[47]), int(fields[48]))]
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            for start, end in areas:
                mem.seek(start)
                raw = mem.read(end - start)
                for secret in wanted:
                    at = raw.find(secret)
                    while at >= 0:
                        mem.seek(start + at)
                        mem.write(b"*" * len(secret))
                        at = raw.find(secret, at + len(secret))
    except (OSError, ValueError, IndexError):
        pass


def forget_env(names: Iterable[str]) -> None:
    """Take the variables ``names`` (read already, holding secrets) out of this process's
    environment — ``os.environ`` and the copy ``ps`` shows — so no process started
    or forked from here on has them."""
    values = [os.environ.pop(name) for name in list(names) if name in os.environ]
    scrub_argv(values)


def kill_groups_now(pgids: Iterable[int]) -> None:
    """SIGKILL each process group (and its leader), without waiting for anything."""
    kill = getattr(signal, "SIGKILL", signal.SIGTERM)  # Windows: TerminateProcess
    for pgid in pgids:
        if hasattr(os, "killpg"):
            with contextlib.suppress(OSError):
                os.killpg(pgid, kill)
        with contextlib.suppress(OSError):
            os.kill(pgid, kill)


def gone_within(pids: Iterable[int], timeout: float) -> bool:
    """Wait at most ``timeout`` s for the processes ``pids`` to be gone; True if they are."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return not alive


def start_time(pid: int | None = None) -> float | None:
    """When process ``pid`` (default: this one) started, or None if it is gone: a pid
    with another start time is a new process that reused the number."""
    return process_started(os.getpid() if pid is None else pid)


def fd_limit() -> str:
    """This process's open-file limit as ``ulimit`` shows it (``soft/hard``), or "?"."""
    if resource is None:
        return "?"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return "/".join("unlimited" if v == resource.RLIM_INFINITY else str(v) for v in (soft, hard))


def raise_fd_limit(need: int, who: str = "this run", fix: str = ", or run fewer slots"
                   ) -> str | None:
    """Raise this process's soft open-file limit when it is below ``need``, towards the
    hard one (what it starts inherits it: Redis, the slots; macOS starts shells at 256),
    and say why ``need`` descriptors cannot be had when even the hard limit is lower
    (else None). Nothing to do where there is no such limit (Windows)."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    if soft != infinite and soft < need:  # only when short, and no higher than useful
        want = max(need * 4, 4096)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (want if hard == infinite else min(want, hard), hard))
    if hard != infinite and hard < need:
        return (f"this user's open-file limit is {hard} (hard), and {who} needs about "
                f"{need}: raise it (`ulimit -n {need}`, or the service's LimitNOFILE){fix}")
    return None
