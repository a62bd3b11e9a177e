"""Text and paths as this OS has them: commands quoted for its shell, aerender's output
decoded from its code page, names it cannot create, folders that cannot be made, paths
past Windows' 260 characters, a file replaced while another process reads it. Part of
the platform layer (the OS comes from :mod:`._platform`); runs wherever a path is
checked or a line is shown or a state file is written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ..errors import BadInput
from ..plan import OutputPattern, check_frame_names
from . import _platform, _windows

T = TypeVar("T")

REPLACE_WAIT_S = 2.0  #: Windows: how long a file operation waits for another process
RETRY_STEP_MAX_S = 0.02  #: ... trying again at least this often


def _patiently(op: Callable[[], T], wait: float) -> T:
    """``op()``; on Windows one refused with "Access denied" (``PermissionError``) because
    another process has the file open — or is replacing it — is tried again for up to
    ``wait`` seconds before the error is raised. Elsewhere the refusal is a real one."""
    deadline = time.monotonic() + wait
    pause = 0.005
    while True:
        try:
            return op()
        except PermissionError:
            left = deadline - time.monotonic()
            if _platform.OS != "windows" or left <= 0:
                raise
            time.sleep(min(pause, left))
            # never coarser than the gaps between readers that keep reopening the file
            # (a `versions list` in a loop, a scanner): a 0.1 s step missed 50 ms gaps
            pause = min(2 * pause, RETRY_STEP_MAX_S)


def replace_file(src: str | Path, dst: str | Path, wait: float = REPLACE_WAIT_S) -> None:
    """``os.replace(src, dst)``: ``dst`` becomes ``src`` whole or not at all.

    On Windows a file that another process has open cannot be replaced (CPython, like
    most programs, opens without ``FILE_SHARE_DELETE``): a ``stmpo versions list``
    reading a version, a run checking another's output lock, a virus scanner looking at
    a file just written all make the replace fail with "Access denied" for the
    milliseconds they hold it. There the replace is tried again for up to ``wait``
    seconds before the error is raised; POSIX replaces a file under its readers."""
    _patiently(lambda: os.replace(src, dst), wait)


def remove_file(path: str | Path, wait: float = REPLACE_WAIT_S) -> None:
    """``os.unlink(path)``, on Windows tried again while another process has the file
    open (see :func:`replace_file`): a ledger or a lock a reader held at that moment
    would otherwise stay behind. ``FileNotFoundError`` is raised as it is."""
    _patiently(lambda: os.unlink(path), wait)


def read_text(path: str | Path, wait: float = REPLACE_WAIT_S) -> str:
    """``path``'s UTF-8 text; on Windows a read refused while another process replaces
    the file is tried again (see :func:`replace_file`)."""
    return _patiently(lambda: Path(path).read_text(encoding="utf-8"), wait)


#: Windows errors that say "no room": the disk full (112, which Python calls ENOSPC), a
#: handle's disk full (39) and the user's quota exceeded (1295, both EINVAL to Python)
_WIN_NO_SPACE = frozenset({39, 112, 1295})


def no_space(exc: BaseException) -> bool:
    """Whether ``exc`` says a file system has no room left (for anyone, or for this user:
    a quota) — the host's problem, not the job's."""
    if not isinstance(exc, OSError):
        return False
    return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) or getattr(
        exc, "winerror", None) in _WIN_NO_SPACE


def write_all(fd: int, data: bytes, path: str | Path) -> None:
    """Write every byte of ``data`` to ``fd``: a short write (a nearly full disk takes
    part of it) is a full disk, named by ``path``."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except OSError as exc:  # os.write names no file: name it
            win = getattr(exc, "winerror", None)
            raise OSError(exc.errno, exc.strerror, str(path),
                          *((win,) if win is not None else ())) from exc
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        view = view[n:]


def shell_join(words: Sequence[str]) -> str:
    """A command line for a user to paste into this OS's shell: POSIX quoting, or on
    Windows the double quotes cmd.exe and PowerShell both read (``"Main Comp"``; cmd
    takes single quotes literally)."""
    if _platform.OS == "windows":
        return subprocess.list2cmdline(list(words))
    return shlex.join(words)


def decode_output(raw: bytes, codepage: str | None = None) -> str:
    """One line of aerender output as text: UTF-8 when it is (the simulator, macOS, a
    UTF-8 console), else the OS code page aerender wrote it in (Windows: the console's OEM
    page, e.g. cp850 for ``Rendu terminé``)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode(codepage or _platform.output_encoding(), errors="replace")


def unmakeable_name(path: str) -> tuple[str, str] | None:
    """The first folder or file name in ``path`` this OS cannot create, and why: Windows'
    rules there (a forbidden character, a device name, a trailing dot or space); None on
    Linux and macOS, where any name without NUL or ``/`` can be made."""
    return _windows.name_problem_in(path) if _platform.OS == "windows" else None


def check_output_names(pattern: OutputPattern, frames: list[int],
                       source: str = "--output") -> None:
    """Refuse (exit 2) an output whose names cannot be made where it renders: a folder
    this OS cannot create, or a frame number that makes a device name (the pattern's own
    file name was checked when it was parsed). Messages name it as ``source``."""
    bad = unmakeable_name(os.path.dirname(os.path.abspath(pattern.raw)))
    if bad is not None:
        raise BadInput(f"{source} folder {bad[0]!r} {bad[1]}: rename it")
    check_frame_names(pattern, frames, source)


def make_dirs(path: str, made: list[str], leaf_mode: int = 0o777) -> None:
    """``os.makedirs`` that records each folder it created, outermost first (to undo on a
    later failure with :func:`remove_made`); a folder another process made in between is
    not recorded. Raises ``OSError`` for a folder that cannot be made."""
    path = os.path.abspath(path)
    todo = []
    probe = path
    while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
        todo.append(probe)
        probe = os.path.dirname(probe)
    for d in reversed(todo):
        try:
            os.mkdir(d, leaf_mode if d == path else 0o777)
        except FileExistsError:
            if os.path.isdir(d):
                continue  # made by another process in between: not ours to remove
            raise
        made.append(d)


def remove_made(made: list[str]) -> None:
    """Remove the folders :func:`make_dirs` recorded, deepest first, each only if empty
    (frames, logs or a summary keep it); the list is emptied."""
    while made:
        with contextlib.suppress(OSError):
            os.rmdir(made.pop())


def uncreatable(path: str) -> tuple[str, str] | None:
    """Why no folder can be made (or written) at ``path``, before anything is created:
    the nearest existing path at or above it and what is wrong with it (``is not a
    folder``, ``is not writable``); None when nothing stands in the way."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return probe, "is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return probe, "is not writable"
    return None


WIN_MAX_PATH = 260  #: Windows' classic path limit (a directory: 248) without ``\\?\``


def long_path(path: str, os_kind: str | None = None) -> str:
    """A Windows path that works past 260 characters: ``\\\\?\\C:\\...`` for a drive path,
    ``\\\\?\\UNC\\server\\share\\...`` for a UNC path; unchanged when short, already
    prefixed, relative, or off Windows."""
    if (os_kind or _platform.OS) != "windows" or len(path) < WIN_MAX_PATH - 12:
        return path
    if path.startswith("\\\\?\\"):
        return path
    p = path.replace("/", "\\")
    if p.startswith("\\\\"):
        return "\\\\?\\UNC\\" + p[2:]
    if len(p) > 2 and p[1] == ":" and p[2] == "\\":
        return "\\\\?\\" + p
    return path


def foreign_path(path: str, os_kind: str | None = None) -> str | None:
    """Why ``path`` is another OS's path that this one would take for a relative name
    (a Windows drive or UNC path on Linux or macOS, which ``os.path.abspath`` puts under
    the current folder), else None. On Windows every form is its own."""
    if (os_kind or _platform.OS) == "windows":
        return None
    if len(path) > 2 and path[0].isalpha() and path[1] == ":" and path[2] in "\\/":
        return f"a Windows drive path ({path[:3]}…)"
    if path.startswith("\\\\"):
        return "a Windows network (UNC) path"
    return None


def folder_created(path: str, os_kind: str | None = None) -> float | None:
    """When the folder ``path`` was made (Windows: its creation time; macOS: its birth
    time), or None where the OS does not keep it (Linux: ``st_ctime`` is its last change,
    which every file made in it moves) or it cannot be read."""
    kind = os_kind or _platform.OS
    try:
        st = os.stat(path)
    except OSError:
        return None
    if kind == "windows":
        return st.st_ctime
    birth = getattr(st, "st_birthtime", None)
    return float(birth) if kind == "macos" and birth is not None else None
