"""Session leases on job fonts: who holds which font, and when a holder has ended.

The registry (``registry.json``) is changed only under an exclusive file lock. A session
record names its holder process (the worker agent or ``openjd run``; launchers and
one-shot shells in between are skipped) with its start time, so a reused pid is never
mistaken for it; a session whose holder is gone, or whose OpenJD working directory was
deleted, has ended without running ``stmpo fonts remove`` and its holds are reclaimed.
See :mod:`stmpo_celery.deadline._fonts` for the whole story.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ..host import acquire_file_lock
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


def holder_process(me: psutil.Process | None = None) -> psutil.Process | None:
    """The nearest ancestor that outlives this action: not a launcher nor a one-shot shell."""
    me = me or psutil.Process()
    try:
        parents = me.parents()
    except psutil.Error:
        return None
    for proc in parents:
        try:
            name = proc.name().lower()
            if name in _LAUNCHERS:
                continue
            if name in _SHELLS:
                args = [a.lower() for a in proc.cmdline()[1:]]
                if any(a in ("-c", "/c", "-command", "-file") for a in args) or (
                        args and not args[0].startswith("-")):
                    continue  # runs one command or script, then ends with this action
            return proc
        except psutil.Error:
            continue
    return None


def current_session(explicit: str | None = None,
                    env: Mapping[str, str] | None = None) -> Session:
    env = os.environ if env is None else env
    holder = holder_process()
    pid = ctime = None
    if holder is not None:
        with contextlib.suppress(psutil.Error):
            pid, ctime = holder.pid, holder.create_time()
    workdir = env.get("OPENJD_SESSION_WORKING_DIR") or None
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


def session_ended(record: Mapping[str, Any]) -> str | None:
    """Why a recorded session is over, or None while it may still run."""
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
    def load(cls, path: Path) -> Registry:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            say(f"warning: the font registry {path} is unreadable ({exc}); starting a new one",
                err=True)
            return cls()
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
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": REGISTRY_VERSION, "fonts": self.fonts,
                                   "sessions": self.sessions}, indent=2, ensure_ascii=False)
                       + "\n", encoding="utf-8")
        os.replace(tmp, path)

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
    """Hold the registry's exclusive lock (released by the OS if this process dies)."""
    with acquire_file_lock(state_dir / "registry.lock", timeout, step=0.05,
                           unusable=f"cannot use the font registry folder {state_dir}",
                           busy=f"the font registry {state_dir} stayed locked for "
                                f"{timeout:.0f} s by another session"):
        yield state_dir / "registry.json"  # the lock goes with the file's closing


# -- installing and deleting one file ------------------------------------------------------
