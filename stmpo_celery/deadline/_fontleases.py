"""Session leases on job fonts: who holds which font, and when a holder has ended.

The registry (``registry.json``) is changed only under an exclusive file lock. A session
record names its holder process (the worker agent or ``openjd run``; launchers and
one-shot shells in between are skipped) with its start time, so a reused pid is never
mistaken for it; a session whose holder is gone, or whose OpenJD working directory was
deleted, has ended without running ``stmpo fonts remove`` and its holds are reclaimed.
A registry that cannot be read is kept aside under another name, never overwritten.
See :mod:`stmpo_celery.deadline._fonts` for the whole story.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from ..broker.keys import host_name
from ..errors import BadInput, EnvironmentProblem
from ..host import (
    acquire_file_lock,
    folder_created,
    no_space,
    process_space,
    process_started,
    read_text,
    replace_file,
    same_process_alive,
    written_here,
)
from ..text import one_line


def say(text: str, err: bool = False) -> None:
    """One line of output: a path with a line break cannot forge an OpenJD directive."""
    stream = sys.stderr if err else sys.stdout
    print("stmpo fonts: " + one_line(text), file=stream, flush=True)


REGISTRY_VERSION = 1
LOCK_TIMEOUT_S = 120.0
#: Processes that only launch an action and are gone when it ends: never a session holder.
_LAUNCHERS = frozenset({"sudo", "setsid", "su", "runuser", "doas", "env", "timeout",
                        "nice", "ionice", "taskset", "numactl", "stmpo", "stmpo.exe"})
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "fish", "cmd.exe",
                     "powershell.exe", "pwsh", "pwsh.exe"})


@dataclass(frozen=True)
class Session:
    key: str
    pid: int | None  #: the holder: the session is over when this process is gone
    create_time: float | None
    workdir: str | None  #: the OpenJD session working directory, deleted when it ends
    how: str  #: where the key came from (for messages)


def holder_process(me: psutil.Process | None = None,
                   started_before: float | None = None) -> psutil.Process | None:
    """The nearest ancestor that outlives this action: not a launcher, not a one-shot
    shell, not an interpreter that only passes this command line on (a Windows venv's
    ``Scripts\\python.exe`` starts the real one with the same arguments and is gone with
    it), and, when ``started_before`` is known (the session folder's creation), one that
    existed before the session began. A holder that dies before its session would get the
    session's fonts deleted mid-render; one that lives longer only delays their removal
    (the session folder going says the session ended)."""
    me = me or psutil.Process()
    try:
        parents = me.parents()
        child_args = me.cmdline()[1:]
    except (psutil.Error, OSError):
        return None
    for proc in parents:
        try:
            args = proc.cmdline()[1:]
            same = bool(args) and args == child_args
            child_args = args
            if same:
                continue  # a redirector or trampoline of this very command
            if started_before is not None and proc.create_time() > started_before:
                continue  # part of this action: the session folder came first
            name = proc.name().lower()
            if name in _LAUNCHERS:
                continue
            if name in _SHELLS:
                low = [a.lower() for a in args]
                option = "/" if name == "cmd.exe" else "-"  # else "/..." is a script's path
                if any(a in ("-c", "/c", "-command", "-file") or not a.startswith(option)
                       for a in low):
                    continue  # runs one command or script, then ends with this action
            return proc
        except (psutil.Error, OSError):  # (under Wine, name() fails with an OSError)
            continue
    return None


def current_session(explicit: str | None = None,
                    env: Mapping[str, str] | None = None) -> Session:
    env = os.environ if env is None else env
    if explicit is not None and not explicit.strip():
        raise BadInput("--session is blank: give the session id, or leave --session out "
                       "to use the session's own")
    for name in ("STMPO_FONTS_SESSION", "DEADLINE_SESSION_ID"):
        if env.get(name) and not env[name].strip():
            raise BadInput(f"${name} is blank: set it to the session id, or unset it")
    for name, value in (("--session", explicit), ("$STMPO_FONTS_SESSION",
                                                  env.get("STMPO_FONTS_SESSION"))):
        try:
            (value or "").encode("utf-8")
        except UnicodeEncodeError:
            raise BadInput(f"{name} holds bytes that are not UTF-8 text: give the session "
                           "id as text") from None
    workdir = env.get("OPENJD_SESSION_WORKING_DIR") or None
    holder = holder_process(started_before=folder_created(workdir) if workdir else None)
    pid = ctime = None
    if holder is not None:
        with contextlib.suppress(psutil.Error):
            pid, ctime = holder.pid, holder.create_time()
    if explicit:
        key, how = explicit, "--session"
    elif env.get("STMPO_FONTS_SESSION"):
        key, how = env["STMPO_FONTS_SESSION"], "STMPO_FONTS_SESSION"
    elif env.get("DEADLINE_SESSION_ID"):
        key, how = env["DEADLINE_SESSION_ID"], "DEADLINE_SESSION_ID"
    elif workdir:
        digest = hashlib.sha256(os.path.abspath(workdir).encode()).hexdigest()[:16]
        key, how = f"openjd-{digest}", "OPENJD_SESSION_WORKING_DIR"
    elif pid is not None:
        key, how = f"pid-{pid}-{int(ctime or 0)}", f"process {pid}"
    else:
        key, how = f"pid-{os.getppid()}", f"process {os.getppid()}"
    return Session(key, pid, ctime, workdir, how)


def session_record(session: Session) -> dict[str, Any]:
    """What the registry keeps of ``session`` to judge later whether it ended: its holder,
    its folder, and where both were seen (another host or process space sharing the
    registry — a network home folder, a container — is never judged from here)."""
    return {"pid": session.pid, "create_time": session.create_time,
            "workdir": session.workdir, "host": host_name(), "space": process_space()}


def session_ended(record: Mapping[str, Any]) -> str | None:
    """Why a recorded session is over, or None while it may still run (always None for
    one recorded on another host or in another process space)."""
    if "host" in record and not written_here(record, host_name()):
        return None
    workdir = record.get("workdir")
    if workdir and not os.path.isdir(workdir):
        return f"its session folder {workdir} is gone"
    pid = record.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return f"its process {pid} has exited"
        started = record.get("create_time")
        if isinstance(started, (int, float)) and abs(proc.create_time() - started) > 1.0:
            return f"its process {pid} has exited (the pid now belongs to another process)"
    except psutil.NoSuchProcess:
        return f"its process {pid} has exited"
    except psutil.Error:
        return None  # exists but not ours to inspect: alive
    return None


# -- the registry ----------------------------------------------------------------------------
@dataclass
class Registry:
    fonts: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, set_aside: bool = False) -> Registry:
        """The registry at ``path`` (empty when there is none). One that cannot be read is
        renamed out of the way when ``set_aside`` (only under the lock: a writer may be
        replacing it), so the next save does not overwrite what it held."""
        try:
            data = json.loads(read_text(path))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            if not set_aside:
                say(f"warning: the font registry {path} is unreadable ({why}); the next "
                    "stmpo fonts install or remove keeps it aside and starts a new one",
                    err=True)
                return cls()
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            aside = path.with_name(f"{path.name}.unreadable-{stamp}")
            try:
                replace_file(path, aside)
            except OSError as err:
                raise EnvironmentProblem(
                    f"the font registry {path} is unreadable ({why}) and cannot be moved "
                    f"aside ({err.strerror or err}): move it out of {path.parent} by hand "
                    "and run again") from None
            say(f"warning: the font registry {path} is unreadable ({why}): kept as {aside}, "
                "starting a new one (the fonts left in stmpo's fonts folder stay stmpo's: a "
                "session that brings the same font takes it over)", err=True)
            return cls()
        version = data.get("version") if isinstance(data, dict) else None
        if isinstance(version, int) and version > REGISTRY_VERSION:  # left as it is
            raise EnvironmentProblem(
                f"the font registry {path} was written by a newer stmpo (format {version}, "
                f"this one reads {REGISTRY_VERSION}): run the same stmpo version on this "
                "host for every queue, or upgrade this one")
        raw = data if isinstance(data, dict) else {}
        fonts, sessions = _items(raw.get("fonts") or {}), _items(raw.get("sessions") or {})
        reg = cls({k: v for k, v in fonts if _font_entry(v)},
                  {k: v for k, v in sessions if _session_entry(v)})
        odd = raw is not data or not all(isinstance(raw.get(k) or {}, dict)
                                         for k in ("fonts", "sessions"))
        if odd or (len(reg.fonts), len(reg.sessions)) != (len(fonts), len(sessions)):
            say(f"warning: the font registry {path} holds entries stmpo did not write: they are "
                "dropped", err=True)
        return reg

    def save(self, path: Path) -> None:
        """Write the registry whole or not at all (:class:`EnvironmentProblem` when the
        folder cannot take it; its temporary file is removed)."""
        tmp = path.with_name(temp_name(path.name, "tmp"))
        text = json.dumps({"version": REGISTRY_VERSION, "fonts": self.fonts,
                           "sessions": self.sessions}, indent=2, ensure_ascii=False) + "\n"
        try:
            try:
                tmp.write_text(text, encoding="utf-8")
                replace_file(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot save the font registry {path} ({exc.strerror or exc}): "
                f"{write_fix(exc, path.parent)}, then run again") from None

    def holders(self, key: str) -> list[str]:
        return [s for s, rec in self.sessions.items() if key in rec.get("fonts", [])]


def _items(value: object) -> list[tuple[str, Any]]:
    return list(value.items()) if isinstance(value, dict) else []


def _font_entry(v: object) -> bool:
    return isinstance(v, dict) and isinstance(v.get("path"), str) and \
        isinstance(v.get("sha256"), str)


def _session_entry(v: object) -> bool:
    return isinstance(v, dict) and isinstance(v.get("fonts"), list) and \
        all(isinstance(f, str) for f in v["fonts"])


@contextlib.contextmanager
def locked(state_dir: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[Path]:
    """Hold the registry's exclusive lock (released by the OS if this process dies); the
    temporary files of saves that were killed go first."""
    with acquire_file_lock(state_dir / "registry.lock", timeout, step=0.05,
                           unusable=f"cannot use the font registry folder {state_dir}",
                           busy=f"the font registry {state_dir} stayed locked for "
                                f"{timeout:.0f} s by another session"):
        sweep_leftovers(state_dir, lambda name: name == "registry.json")
        yield state_dir / "registry.json"  # the lock goes with the file's closing


def write_fix(exc: OSError, folder: Path) -> str:
    """What to do when writing into ``folder`` failed with ``exc``."""
    if no_space(exc):
        return f"free space on the disk of {folder}"
    if exc.errno == errno.EFBIG:
        return "raise this user's file size limit"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"make {folder} writable for this user"
    return f"free space on the disk of {folder} or make it writable"


# -- temporary files -------------------------------------------------------------------------
#: ``NAME.PID[-START].part|tmp``: the process writing it, and its start (ms since the epoch)
_TEMP = re.compile(r"^(?P<name>.+)\.(?P<pid>\d+)(?:-(?P<start>\d+))?\.(?:part|tmp)$")


def temp_name(name: str, ext: str) -> str:
    """The name of a file being written before it becomes ``name``: it says which process
    writes it (and when that process started), so one left by a killed process is known."""
    started = process_started(os.getpid())
    return f"{name}.{os.getpid()}" + (f"-{round(started * 1000)}" if started else "") + \
        f".{ext}"


def sweep_leftovers(folder: Path, final: Callable[[str], bool]) -> list[Path]:
    """Delete the temporary files in ``folder`` (:func:`temp_name`, for a final name that
    ``final`` accepts) whose process is gone: a copy or save killed midway. Returns them."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    gone = []
    for name in names:
        m = _TEMP.match(name)
        if m is None or not final(m["name"]):
            continue
        pid = int(m["pid"])
        if pid == os.getpid():
            continue  # this process's own (a failing write removes it)
        if m["start"] is not None:
            alive = same_process_alive(pid, int(m["start"]) / 1000)
        else:  # named without the start time: the pid alone
            alive = process_started(pid) is not None
        if not alive:
            with contextlib.suppress(OSError):
                (folder / name).unlink()
                gone.append(folder / name)
    return gone
