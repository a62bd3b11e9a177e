"""A run's private folder in the temp dir, and reaping the folders of runs killed outright.

A run keeps secrets there while it lives (the embedded Redis's ``redis.conf`` with its
password, the slot spec with the broker URL), and removes the folder when it ends. A run
killed with everything it started (``kill -9`` of the whole tree, a machine reset) cannot:
so each folder holds ``alive.lock``, locked by the orchestrator for its lifetime (and by
forked slots, which share the open file). A folder whose lock anybody can take belongs to
a run that is gone, and the next run on the host deletes it. Runs in the orchestrator.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

import psutil

from ._paths import replace_file
from ._platform import REDIS_SERVER_NAMES, try_lock_file
from ._proc import kill_procs

PREFIX = "stmpo-"  #: every run folder's name starts with this
LOCK = "alive.lock"
#: in every renderer's environment: the run folder of the run that launched it, so the
#: next run can find renderers that outlived a run killed with all its slots
RUN_DIR_ENV = "STMPO_RUN_DIR"
#: in a run's log folder: how the run ended, kept where ``stmpo status`` can read it when
#: the broker lost the run's own record (a Redis that died and came back from disk)
ENDED = "ended.json"
_TRIES = 5  #: folders made before giving up (each lost only to a reaper's instant)

_held: dict[str, IO[bytes]] = {}  #: run folder -> its open, locked alive.lock


def make_run_dir(prefix: str) -> Path:
    """A new private (0700) run folder, locked as alive until :func:`remove_run_dir`.

    Between creating ``alive.lock`` and locking it, another run's reaper may take the
    lock (the folder looks dead for that instant): it then deletes the folder, so this
    run gives it up and makes another."""
    for _ in range(_TRIES):
        path = Path(tempfile.mkdtemp(prefix=prefix))
        fh = open(path / LOCK, "a+b")  # noqa: SIM115 - held open for the run's lifetime
        if try_lock_file(fh):
            _held[str(path)] = fh
            return path
        fh.close()
        shutil.rmtree(path, ignore_errors=True)
    raise OSError(f"could not lock a run folder in {tempfile.gettempdir()}")


def remove_run_dir(path: Path) -> None:
    """Unlock (Windows cannot delete a locked file) and delete a run folder."""
    fh = _held.pop(str(path), None)
    if fh is not None:
        fh.close()
    shutil.rmtree(path, ignore_errors=True)


def hold_folder(path: Path) -> None:
    """Mark another folder of this run (its logs) as in use, the way a run folder is:
    ``alive.lock`` in it, locked until :func:`release_folder` or this run's death."""
    fh = open(path / LOCK, "a+b")  # noqa: SIM115 - held open for the run's lifetime
    if not try_lock_file(fh):
        fh.close()
        raise OSError(f"{path} is in use by another run")
    _held[str(path)] = fh


def release_folder(path: Path) -> None:
    """Undo :func:`hold_folder` (the folder stays)."""
    fh = _held.pop(str(path), None)
    if fh is not None:
        fh.close()
        with contextlib.suppress(OSError):
            (path / LOCK).unlink()


def folder_in_use(path: Path) -> bool:
    """Whether a live run holds ``path`` (:func:`make_run_dir`, :func:`hold_folder`)."""
    if str(path) in _held:
        return True
    try:
        with open(path / LOCK, "r+b") as fh:  # never creates it
            return not try_lock_file(fh)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: leave it


def write_run_end(folder: Path, run_id: str, fields: dict[str, Any]) -> OSError | None:
    """Record how run ``run_id`` ended in its log ``folder`` (best effort, 0600); None,
    or why it could not be written."""
    tmp = folder / f".{ENDED}.{os.getpid()}"
    failed: OSError | None = None
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({**fields, "run": run_id}, fh)
        replace_file(tmp, folder / ENDED)
    except OSError as exc:
        failed = exc
    except (TypeError, ValueError):
        pass  # a field that is not JSON: a bug, not the host's; the record is a hint
    with contextlib.suppress(OSError):
        tmp.unlink()
    return failed


def read_run_end(folder: object, run_id: str) -> dict[str, Any] | None:
    """What :func:`write_run_end` recorded for ``run_id`` in ``folder``, or None."""
    if not isinstance(folder, str) or not folder:
        return None
    try:
        with open(Path(folder) / ENDED, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("run") == run_id else None


def reap_run_dirs(root: Path | None = None) -> list[Path]:
    """Delete the run folders under ``root`` (the temp dir) whose run is gone: their
    ``alive.lock`` can be taken. Folders without one, or another user's, are left alone.
    Returns the folders deleted."""
    root = Path(tempfile.gettempdir()) if root is None else root
    gone: list[Path] = []
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith(PREFIX)]
    except OSError:
        return gone
    for folder in candidates:
        lock = folder / LOCK
        if str(folder) in _held or not _mine(folder) or not lock.is_file():
            continue
        try:
            with open(lock, "a+b") as fh:
                if not try_lock_file(fh):
                    continue  # its run is alive
                kill_run_processes(folder)  # what the run left running, while it is findable
                # delete while the lock holds: a run that created this folder an instant
                # ago and has not locked it yet finds it taken and makes another
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)  # Windows: the lock file, once closed
        gone.append(folder)
    return gone


def kill_run_processes(folder: Path) -> list[int]:
    """Kill every process of this user (and its tree) that a run killed outright left
    running, nobody being left to stop it (on Windows the run's Job Object did): its
    renderers, which carry the run folder in ``$STMPO_RUN_DIR``, and its embedded Redis,
    whose working folder it is (redis-server rewrites its environment with its title)."""
    here = str(folder)
    found: list[psutil.Process] = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.environ().get(RUN_DIR_ENV) == here or (
                    proc.cwd() == here and proc.name().lower().startswith(REDIS_SERVER_NAMES)):
                found.append(proc)  # (a shell someone left in that folder is not ours)
    if not found:
        return []
    tree = {p.pid: p for p in found}
    for p in found:
        with contextlib.suppress(psutil.Error):
            tree.update({c.pid: c for c in p.children(recursive=True)})
    return kill_procs(tree.values(), timeout=2.0)


def _mine(folder: Path) -> bool:
    getuid = getattr(os, "getuid", None)
    if getuid is None:  # Windows: the temp dir is the user's own
        return True
    try:
        return folder.stat().st_uid == getuid()
    except OSError:
        return False
