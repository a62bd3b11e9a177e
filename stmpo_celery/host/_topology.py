"""Detect this host's CPU topology: the CPUs this process may use, their NUMA nodes,
physical cores (SMT siblings) and, on Windows, processor groups.

:func:`detect` reads Linux sysfs under an injectable root and falls back to psutil
counts; :func:`~stmpo_celery.host._numamap.load_numa_map` reads a ``numa_map.json``. Both
give the pure :class:`~stmpo_celery.plan.Topology`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..plan import Cpu, Topology, format_cpulist, from_counts, parse_cpulist

__all__ = ["detect"]


# --------------------------------------------------------------------------- detect


def _process_cpus() -> set[int] | None:
    """CPUs this process may run on (cpuset/container aware); None where unknowable."""
    getter = getattr(os, "sched_getaffinity", None)  # Windows, macOS: no cross-group answer
    try:
        return set(getter(0)) if getter is not None else None
    except OSError:
        return None


def _read(path: Path, as_list: bool = False) -> Any:
    """An int (or a cpulist) from a sysfs file; None when missing or unparsable."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
        return parse_cpulist(text) if as_list else int(text)
    except (OSError, ValueError, BadInput):
        return None


def detect(
    sys_root: str | os.PathLike[str] | None = None, allowed: Iterable[int] | None = None
) -> Topology:
    """This host's topology from sysfs, restricted to ``allowed`` CPUs.

    ``allowed`` defaults to ``os.sched_getaffinity(0)`` (containers, cpusets). Odd or
    missing files never raise: the facts are guessed and said in ``notes``; with no sysfs
    at all the topology comes from psutil counts.
    """
    allow = set(allowed) if allowed is not None else _process_cpus()
    if allow is not None and not allow:
        raise BadInput("no CPU is allowed for this process: widen its cpuset or affinity")
    if sys_root is None:
        if not sys.platform.startswith("linux"):  # (under Wine, Z:\sys is the Linux host's)
            return _from_psutil(allow)
        sys_root = "/sys"
    root = Path(sys_root) / "devices" / "system"
    present: dict[int, Path] = {}
    try:
        for entry in (root / "cpu").iterdir():
            if re.fullmatch(r"cpu\d+", entry.name) and entry.is_dir():
                present[int(entry.name[3:])] = entry / "topology"
    except OSError:
        pass
    ids = sorted(present if allow is None else allow & present.keys())
    if not ids:
        return _from_psutil(allow)
    notes: list[str] = []
    if allow is not None and allow - present.keys():
        notes.append(f"CPUs {format_cpulist(allow - present.keys())} have no sysfs entry: left out")
    node_of: dict[int, int] = {}
    try:
        node_dirs = sorted((root / "node").iterdir())
    except OSError:
        node_dirs = []
    for entry in node_dirs:
        if re.fullmatch(r"node\d+", entry.name):
            for i in _read(entry / "cpulist", as_list=True) or []:
                node_of.setdefault(i, int(entry.name[4:]))
    lost = [i for i in ids if i not in node_of]
    if lost:
        where = "sysfs lists no NUMA node" if not node_of else "they are in no NUMA node"
        notes.append(f"CPUs {format_cpulist(lost)} put on node 0: {where}")
    socket_of: dict[int, int] = {}
    links: dict[int, set[int]] = {}
    by_core_id: dict[tuple[int, int], set[int]] = {}
    guessed: list[int] = []
    for i in ids:
        tdir = present[i]
        pkg = _read(tdir / "physical_package_id")
        socket_of[i] = pkg if pkg is not None and pkg >= 0 else 0
        sib = _read(tdir / "thread_siblings_list", True) or _read(tdir / "core_cpus_list", True)
        core_id = _read(tdir / "core_id")
        if sib and i in sib:
            links[i] = set(sib)
        elif core_id is not None:
            by_core_id.setdefault((socket_of[i], core_id), set()).add(i)
        else:
            guessed.append(i)
    for members in by_core_id.values():
        for i in members:
            links[i] = members
    if guessed:
        notes.append(f"no core facts for CPUs {format_cpulist(guessed)}: each is its own core")
    cores = _core_keys(ids, links)
    cpus = tuple(Cpu(i, node_of.get(i, 0), socket_of[i], cores[i]) for i in ids)
    return Topology(cpus=cpus, source="sysfs", notes=tuple(notes))


def _core_keys(ids: Iterable[int], links: dict[int, set[int]]) -> dict[int, int]:
    """Join CPUs that name each other as siblings (even one-sidedly); key = lowest id."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i in ids:
        for j in links.get(i, ()):
            a, b = find(i), find(j)
            parent[max(a, b)] = min(a, b)
    return {i: find(i) for i in ids}


def _from_psutil(allow: set[int] | None) -> Topology:
    try:
        import psutil

        logical, physical = psutil.cpu_count(logical=True) or 0, psutil.cpu_count(False) or 0
    except Exception:  # psutil missing or failing: fall back to what os knows
        logical, physical = 0, 0
    sizes = None
    if sys.platform == "win32":
        from ._winaffinity import processor_group_sizes

        sizes = processor_group_sizes()
    logical = logical or os.cpu_count() or len(allow or ()) or 1
    return from_counts(logical, physical, allow, sizes, adjacent_siblings=sys.platform == "win32")


