"""Windows pinning: put the current process on one processor group and CPU mask.

A slot calls :func:`pin_current_process` as its first statement, so the aerender it starts
(and the After Effects that aerender starts) inherit the pinning. Windows keeps at most 64
CPUs in a processor group and a plain affinity mask covers only one group, so CPU ids are
turned into ``(group, mask)`` by :func:`stmpo_celery.plan._affinity.group_affinity` and applied
with three calls, each best-effort:

1. ``SetThreadGroupAffinity``: move the (only) thread into the group;
2. ``SetProcessAffinityMask``: the process mask, inherited by child processes;
3. ``SetProcessDefaultCpuSetMasks`` (Windows 11 / Server 2022 and later): the default CPU
   set of threads the process creates afterwards.

Importing this module is safe on every platform; off Windows the functions do nothing.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Sequence
from ctypes import wintypes
from typing import Any

from ..plan import format_cpulist, group_affinity


class _GroupAffinity(ctypes.Structure):
    """GROUP_AFFINITY: a KAFFINITY (pointer-sized) mask and a WORD group number."""

    _fields_ = [
        ("Mask", ctypes.c_size_t),
        ("Group", ctypes.c_ushort),
        ("Reserved", ctypes.c_ushort * 3),
    ]


def _kernel32() -> Any:
    if sys.platform != "win32":  # also tells type checkers on other platforms to skip it
        raise OSError("kernel32 exists only on Windows")
    k32 = ctypes.WinDLL("kernel32", use_last_error=True)
    # Pseudo-handles are pointer-sized: passed as plain ints they are truncated (WinError 6).
    h, ga = wintypes.HANDLE, ctypes.POINTER(_GroupAffinity)
    k32.GetCurrentThread.argtypes, k32.GetCurrentThread.restype = [], h
    k32.GetCurrentProcess.argtypes, k32.GetCurrentProcess.restype = [], h
    k32.SetThreadGroupAffinity.argtypes = [h, ga, ga]
    k32.SetThreadGroupAffinity.restype = wintypes.BOOL
    k32.SetProcessAffinityMask.argtypes = [h, ctypes.c_size_t]
    k32.SetProcessAffinityMask.restype = wintypes.BOOL
    k32.GetActiveProcessorGroupCount.restype = wintypes.WORD
    k32.GetActiveProcessorCount.argtypes = [wintypes.WORD]
    k32.GetActiveProcessorCount.restype = wintypes.DWORD
    cpu_sets = getattr(k32, "SetProcessDefaultCpuSetMasks", None)
    if cpu_sets is not None:
        cpu_sets.argtypes, cpu_sets.restype = [h, ga, wintypes.USHORT], wintypes.BOOL
    return k32


def processor_group_sizes() -> list[int] | None:
    """Active logical processors per processor group, or None off Windows or on failure."""
    if sys.platform != "win32":
        return None
    try:
        k32 = _kernel32()
        count = int(k32.GetActiveProcessorGroupCount())
        sizes = [int(k32.GetActiveProcessorCount(g)) for g in range(count)]
    except (OSError, AttributeError):
        return None
    return sizes if sizes and all(sizes) else None


def pin_current_process(
    cpus: Sequence[int], group_sizes: Sequence[int] | None = None
) -> str | None:
    """Pin this process to ``cpus`` (ids numbered group after group); None when every call
    worked, else one line saying what did not (the slot then runs less pinned or unpinned)."""
    where = f"CPUs {format_cpulist(cpus)}"
    if sys.platform != "win32":
        return f"could not pin to {where}: processor groups exist only on Windows"
    sizes = list(group_sizes) if group_sizes else processor_group_sizes()
    if not sizes:
        return f"could not pin to {where}: this host's processor groups are unreadable"
    try:
        group, mask = group_affinity(cpus, sizes)
    except ValueError as exc:
        return f"could not pin to {where}: {exc}"
    k32 = _kernel32()
    ga = _GroupAffinity(mask, group)
    failed: list[str] = []
    if not k32.SetThreadGroupAffinity(k32.GetCurrentThread(), ctypes.byref(ga), None):
        failed.append(f"SetThreadGroupAffinity (WinError {ctypes.get_last_error()})")
    if not k32.SetProcessAffinityMask(k32.GetCurrentProcess(), mask):
        failed.append(f"SetProcessAffinityMask (WinError {ctypes.get_last_error()})")
    cpu_sets = getattr(k32, "SetProcessDefaultCpuSetMasks", None)
    if cpu_sets is not None and not cpu_sets(
        k32.GetCurrentProcess(), ctypes.byref(ga), 1
    ):
        failed.append(f"SetProcessDefaultCpuSetMasks (WinError {ctypes.get_last_error()})")
    if failed:
        return f"pinning to {where} (group {group}) partly failed: {', '.join(failed)}"
    return None
