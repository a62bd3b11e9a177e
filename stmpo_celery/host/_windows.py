"""Windows: a Job Object per run, new process groups, processor-group pinning.

One Job Object (``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE``) holds every process of a run —
slots, aerender, AfterFX, the embedded Redis — and only the orchestrator holds its handle
(not inheritable): when the orchestrator ends, however it ends, Windows closes the handle
and kills the whole job; ``TerminateJobObject`` is the tree kill of the whole run in one
call. Children are started with ``CREATE_NEW_PROCESS_GROUP`` so a console CTRL_BREAK or
CTRL_C meant for the orchestrator (OpenJD's cancel) reaches the orchestrator only, which
then stops the run itself. Imported only through :mod:`._platform`; importing it is safe
on every OS (the Win32 calls are looked up only when used).
"""

from __future__ import annotations

import ctypes
import ntpath
import re
import sys
from ctypes import wintypes
from typing import Any

from ..plan import windows_name_problem

CREATE_NEW_PROCESS_GROUP = 0x00000200
_JOB_EXTENDED_LIMIT_INFORMATION = 9
_JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
_PROCESS_TERMINATE = 0x0001
_PROCESS_SET_QUOTA = 0x0100


class _IoCounters(ctypes.Structure):
    _fields_ = [(n, ctypes.c_ulonglong) for n in (
        "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
        "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]


class _BasicLimits(ctypes.Structure):
    _fields_ = [
        ("PerProcessUserTimeLimit", ctypes.c_int64),
        ("PerJobUserTimeLimit", ctypes.c_int64),
        ("LimitFlags", wintypes.DWORD),
        ("MinimumWorkingSetSize", ctypes.c_size_t),
        ("MaximumWorkingSetSize", ctypes.c_size_t),
        ("ActiveProcessLimit", wintypes.DWORD),
        ("Affinity", ctypes.c_size_t),
        ("PriorityClass", wintypes.DWORD),
        ("SchedulingClass", wintypes.DWORD),
    ]


class _ExtendedLimits(ctypes.Structure):
    _fields_ = [
        ("BasicLimitInformation", _BasicLimits),
        ("IoInfo", _IoCounters),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    ]


def _kernel32() -> Any:
    if sys.platform != "win32":  # also tells type checkers on other platforms to skip it
        raise OSError("kernel32 exists only on Windows")
    k32 = ctypes.WinDLL("kernel32", use_last_error=True)
    h, b, d = wintypes.HANDLE, wintypes.BOOL, wintypes.DWORD
    for name, args, res in (
        ("CreateJobObjectW", [ctypes.c_void_p, wintypes.LPCWSTR], h),
        ("SetInformationJobObject", [h, ctypes.c_int, ctypes.c_void_p, d], b),
        ("AssignProcessToJobObject", [h, h], b),
        ("TerminateJobObject", [h, wintypes.UINT], b),
        ("OpenProcess", [d, b, d], h),
        ("CloseHandle", [h], b),
    ):
        fn = getattr(k32, name)
        fn.argtypes, fn.restype = args, res
    return k32


def _err(what: str) -> OSError:
    code = getattr(ctypes, "get_last_error", lambda: 0)()
    return OSError(f"{what} failed (WinError {code})")


class JobObject:
    """A kill-on-close Job Object owned by this process."""

    def __init__(self) -> None:
        self._k32 = _kernel32()
        handle = self._k32.CreateJobObjectW(None, None)
        if not handle:
            raise _err("CreateJobObjectW")
        self.handle: int | None = handle
        info = _ExtendedLimits()
        info.BasicLimitInformation.LimitFlags = _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if not self._k32.SetInformationJobObject(
                handle, _JOB_EXTENDED_LIMIT_INFORMATION, ctypes.byref(info),
                ctypes.sizeof(info)):
            err = _err("SetInformationJobObject")
            self.close()
            raise err

    def assign(self, pid: int) -> None:
        """Put ``pid`` (and every process it starts from now on) in the job."""
        if self.handle is None:
            return
        proc = self._k32.OpenProcess(_PROCESS_SET_QUOTA | _PROCESS_TERMINATE, False, pid)
        if not proc:
            raise _err(f"OpenProcess({pid})")
        try:
            if not self._k32.AssignProcessToJobObject(self.handle, proc):
                raise _err(f"AssignProcessToJobObject({pid})")
        finally:
            self._k32.CloseHandle(proc)

    def terminate(self) -> None:
        if self.handle is not None:
            self._k32.TerminateJobObject(self.handle, 1)

    def close(self) -> None:
        """Close the handle: with KILL_ON_JOB_CLOSE, every process still in the job dies."""
        if self.handle is not None:
            self._k32.CloseHandle(self.handle)
            self.handle = None


def popen_kwargs(*, new_group: bool) -> dict[str, Any]:
    return {"creationflags": CREATE_NEW_PROCESS_GROUP} if new_group else {}


def pin(cpus: set[int]) -> str | None:
    from ._winaffinity import pin_current_process

    return pin_current_process(sorted(cpus))


def pinning_check() -> tuple[bool, str]:
    from ._winaffinity import processor_group_sizes

    sizes = processor_group_sizes()
    if not sizes:
        return False, "processor groups are unreadable: slots run unpinned"
    return True, (f"{sum(sizes)} CPU(s) in {len(sizes)} processor group(s) "
                  f"({', '.join(map(str, sizes))}); pinned per group")


def console_encoding() -> str:
    """The console's OEM code page (aerender writes its output in it), e.g. ``cp437``."""
    cp = 0
    if sys.platform == "win32":
        try:
            k32 = ctypes.WinDLL("kernel32")
            # aerender writes through a pipe: the console's OEM page when one exists, else ANSI
            cp = int(k32.GetConsoleOutputCP()) or int(k32.GetOEMCP())
        except (OSError, AttributeError):
            cp = 0
    return f"cp{cp}" if cp and cp != 65001 else "utf-8"




def name_problem_in(path: str) -> tuple[str, str] | None:
    """The first folder or file name in Windows path ``path`` that Windows cannot create,
    and why (the drive, a UNC server and share, and a ``\\\\?\\`` prefix are not names)."""
    if path[:4] in ("\\\\?\\", "//?/"):
        path = path[4:]
        if path[:4].upper() == "UNC\\":
            path = "\\\\" + path[4:]
    rest = ntpath.splitdrive(path)[1]
    for name in re.split(r"[\\/]", rest):
        if name in ("", ".", ".."):
            continue
        problem = windows_name_problem(name)
        if problem is not None:
            return name, problem
    return None
