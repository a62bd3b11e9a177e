"""Where a run's logs go, privately.

Without ``--log-dir`` a run logs to ``<temp dir>/stmpo-logs-<user id>/<run id>``. The
root is this user's own: created 0700 without following a symlink, and refused (exit 3)
when it is a symlink, is not a directory, belongs to someone else or is open to others
— a shared temp dir cannot redirect or expose another user's logs. Run folders are
0700, the orchestrator's own files 0600, and only the newest
:data:`defaults.LOG_KEEP_RUNS` run folders are kept (older ones are pruned when a run
starts). A ``--log-dir`` is the user's choice: used as given, never pruned.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import IO

from ..config import defaults
from ..errors import BadInput, EnvironmentProblem
from ..host import folder_in_use, hold_folder


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0


def default_root() -> Path:
    user = str(_uid()) if hasattr(os, "getuid") else (os.environ.get("USERNAME") or "user")
    return Path(tempfile.gettempdir()) / f"stmpo-logs-{user}"


def _private_root(root: Path) -> Path:
    try:
        os.mkdir(root, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise EnvironmentProblem(f"cannot create the log root {root} ({exc.strerror}): "
                                 "pass --log-dir") from None
    st = os.lstat(root)  # never follow a symlink planted in a shared temp dir
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise EnvironmentProblem(f"log root {root} is not a plain directory (a symlink?): "
                                 "remove it or pass --log-dir")
    if hasattr(os, "getuid") and (st.st_uid != _uid() or st.st_mode & 0o077):
        raise EnvironmentProblem(f"log root {root} belongs to another user or is open to "
                                 "others: remove it or pass --log-dir")
    return root


def prune(root: Path, keep: int, but: str, now: float | None = None) -> None:
    """Delete all but the newest ``keep`` run folders under ``root`` — never ``but``,
    never the folder of a run still going (a long render's folder is not touched for
    hours, and newer runs must not take its logs away mid-render), and never one that
    ended within ``ENDED_RUN_SHOWN_S``: ``stmpo status`` lists such a run with its log."""
    recent = (time.time() if now is None else now) - defaults.ENDED_RUN_SHOWN_S
    runs = []
    for entry in os.scandir(root):
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False) and entry.name != but:
                runs.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
    runs.sort(reverse=True)
    for mtime, path in runs[max(keep - 1, 0):]:
        if mtime < recent and not folder_in_use(Path(path)):
            shutil.rmtree(path, ignore_errors=True)


def run_log_dir(log_dir: str | None, run_id: str) -> Path:
    """The run's log folder, created (0700 under the default root)."""
    if log_dir:
        path = Path(log_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    root = _private_root(default_root())
    path = root / run_id
    os.mkdir(path, 0o700)
    hold_folder(path)  # released at the run's end (or its death): then it may be pruned
    prune(root, defaults.LOG_KEEP_RUNS, run_id)
    return path


def check_log_dir(log_dir: str | None) -> None:
    """Before anything starts: can the run's log folder be created and written?"""
    if log_dir and not log_dir.strip():
        raise BadInput("--log-dir (or $STMPO_LOG_DIR) is blank: give a folder, or leave it "
                       "unset")
    if not log_dir:
        return
    path = Path(os.path.abspath(log_dir))
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise BadInput(f"--log-dir {log_dir}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BadInput(f"--log-dir {log_dir} is not writable ({probe}): "
                       "pick a folder you can write")


def check_summary(summary: str | None) -> None:
    """Before anything starts: can the summary file be written where asked?"""
    if not summary:
        return
    if not summary.strip():  # a file named by blanks: a variable that held only spaces
        raise BadInput("--summary is blank: name a file, or leave it out")
    path = Path(os.path.abspath(summary))
    if path.is_dir():
        raise BadInput(f"--summary {summary} is a folder: name a file")
    probe = path.parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK) or (
            path.exists() and not os.access(path, os.W_OK)):
        raise BadInput(f"--summary {summary} cannot be written: pick a file in a folder "
                       "you can write")


def open_private(path: Path) -> IO[str]:
    """Open a log file for appending, 0600 when it is created."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8")
