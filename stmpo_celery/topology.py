"""CPU topology of a render host: the CPUs this process may use, their NUMA nodes,
physical cores (SMT siblings) and, on Windows, processor groups.

Three sources, one shape (:class:`Topology`): :func:`detect` reads Linux sysfs under an
injectable root and falls back to psutil counts; :func:`load_numa_map` reads a
``numa_map.json`` (the reference ``group_N`` format or the richer ``nodes`` format, see
``worker_config/README.md``); :func:`synthetic` builds one from counts to plan another host.

On Windows CPU ids are numbered group after group, as Task Manager shows them: the lowest
id of a processor group is processor 0 of that group.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import BadInput

GROUP_MAX = 64  #: Windows puts at most this many logical processors in one processor group
MAX_CPU_ID = 65535  #: no host has CPU ids this large: a larger one is a typo

_ITEM = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
_GROUP_KEY = re.compile(r"^(?:group_|node_)?(\d+)$")


@dataclass(frozen=True)
class Cpu:
    id: int
    node: int
    socket: int
    core: int  #: physical-core key, unique host-wide: the lowest id of its SMT siblings
    group: int = 0  #: Windows processor group (0 on Linux)


@dataclass(frozen=True)
class Topology:
    cpus: tuple[Cpu, ...]  #: only CPUs this process may use, sorted by id
    source: str  #: "sysfs", "psutil", "numa-map:<path>", "synthetic"
    notes: tuple[str, ...] = ()  #: what detection had to guess, as sentences

    def ids(self) -> list[int]:
        return [c.id for c in self.cpus]

    def nodes(self) -> list[int]:
        return sorted({c.node for c in self.cpus})

    def sockets(self) -> list[int]:
        return sorted({c.socket for c in self.cpus})

    def groups(self) -> list[int]:
        return sorted({c.group for c in self.cpus})

    def cpus_of(self, node: int) -> list[Cpu]:
        return [c for c in self.cpus if c.node == node]

    def cores(self) -> dict[int, tuple[int, ...]]:
        """Physical-core key -> that core's usable CPU ids (its SMT siblings), sorted."""
        out: dict[int, list[int]] = {}
        for c in self.cpus:
            out.setdefault(c.core, []).append(c.id)
        return {k: tuple(sorted(v)) for k, v in sorted(out.items())}

    @property
    def smt(self) -> bool:
        """True when some usable physical core has more than one usable CPU."""
        return any(len(v) > 1 for v in self.cores().values())

    def describe(self) -> str:
        """One line for the plan printout."""
        text = (
            f"{len(self.cpus)} CPUs ({len(self.cores())} cores, SMT {'on' if self.smt else 'off'})"
            f" on {len(self.nodes())} NUMA node(s), {len(self.sockets())} socket(s)"
        )
        if len(self.groups()) > 1:
            text += f", {len(self.groups())} processor groups"
        return f"{text}, from {self.source}"


def parse_cpulist(text: str) -> list[int]:
    """Parse a Linux cpulist (``"0-3,8,10-11"``) into sorted distinct ids; ``""`` -> ``[]``."""
    ids: set[int] = set()
    if not str(text).strip():
        return []
    for item in str(text).split(","):
        m = _ITEM.match(item)
        if not m:
            raise BadInput(f"cpu list item {item.strip()!r} is not a CPU id or range: write 0-3,8")
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) is not None else start
        if end < start:
            raise BadInput(f"cpu range {item.strip()!r} ends before it starts: write {end}-{start}")
        if end > MAX_CPU_ID:
            raise BadInput(f"cpu list {text!r} names CPU {end}, above {MAX_CPU_ID}: fix the typo")
        ids.update(range(start, end + 1))
    return sorted(ids)


def format_cpulist(ids: Iterable[int]) -> str:
    """Inverse of :func:`parse_cpulist`: ``[0, 1, 2, 3, 8]`` -> ``"0-3,8"``."""
    out = []
    for _, run in itertools.groupby(enumerate(sorted(set(ids))), lambda p: p[1] - p[0]):
        r = [i for _, i in run]
        out.append(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]))
    return ",".join(out)


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
    sys_root: str | os.PathLike[str] = "/sys", allowed: Iterable[int] | None = None
) -> Topology:
    """This host's topology from sysfs, restricted to ``allowed`` CPUs.

    ``allowed`` defaults to ``os.sched_getaffinity(0)`` (containers, cpusets). Odd or
    missing files never raise: the facts are guessed and said in ``notes``; with no sysfs
    at all the topology comes from psutil counts.
    """
    allow = set(allowed) if allowed is not None else _process_cpus()
    if allow is not None and not allow:
        raise BadInput("no CPU is allowed for this process: widen its cpuset or affinity")
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
        from .winaffinity import processor_group_sizes

        sizes = processor_group_sizes()
    logical = logical or os.cpu_count() or len(allow or ()) or 1
    return from_counts(logical, physical, allow, sizes, adjacent_siblings=sys.platform == "win32")


def from_counts(
    logical: int,
    physical: int,
    allowed: set[int] | None = None,
    group_sizes: Sequence[int] | None = None,
    adjacent_siblings: bool = False,
) -> Topology:
    """The psutil fallback: one node; SMT pairs guessed when logical == 2 x physical.

    Siblings are ``i`` and ``i + logical/2`` (Linux numbering) or ``2k`` and ``2k+1``
    (``adjacent_siblings``, Windows). ``group_sizes`` numbers CPUs group after group.
    """
    notes = ["sysfs is not readable: one NUMA node assumed, cores guessed from psutil counts"]
    smt = physical > 0 and logical == 2 * physical
    if physical and logical != physical and not smt:
        notes.append(f"{logical} CPUs on {physical} cores cannot be paired: each is its own core")
    group_of = [g for g, size in enumerate(group_sizes or ()) for _ in range(size)]
    cpus = []
    for i in sorted(allowed) if allowed is not None else range(max(1, logical)):
        core = i
        if smt and i < logical:
            core = i - i % 2 if adjacent_siblings else i % physical
        group = group_of[i] if i < len(group_of) else 0
        cpus.append(Cpu(id=i, node=0, socket=0, core=core, group=group))
    return Topology(cpus=tuple(cpus), source="psutil", notes=tuple(notes))


# --------------------------------------------------------------------------- synthetic


def synthetic(
    cpus: int,
    numa_nodes: int = 1,
    smt: bool = True,
    sockets: int | None = None,
    groups_of: int | None = None,
) -> Topology:
    """A made-up host for ``stmpo plan --cpus N --numa-nodes K [--smt]``.

    Linux numbering: with SMT, CPU ``i`` and ``i + cpus/2`` are siblings; cores are split
    evenly over sockets and nodes. With ``groups_of`` (Windows processor groups of that many
    CPUs) the numbering is Windows': siblings adjacent, each node's CPUs contiguous.
    """
    if cpus < 1 or cpus > MAX_CPU_ID:
        raise BadInput(f"--cpus {cpus} is not a CPU count: pass 1 to {MAX_CPU_ID}")
    if smt and cpus % 2:
        raise BadInput(f"--cpus {cpus} is odd, so not SMT pairs: pass an even count or drop --smt")
    n_cores = cpus // 2 if smt else cpus
    if not 1 <= numa_nodes <= n_cores:
        raise BadInput(f"--numa-nodes {numa_nodes} does not fit {n_cores} cores: pass 1-{n_cores}")
    if sockets is None:
        sockets = numa_nodes if numa_nodes <= 2 else (2 if numa_nodes % 2 == 0 else 1)
    if not 1 <= sockets <= n_cores or (numa_nodes % sockets and sockets % numa_nodes):
        raise BadInput(f"--sockets {sockets} does not fit {numa_nodes} NUMA nodes: one must "
                       "divide the other")
    if groups_of is not None and (not 1 <= groups_of <= GROUP_MAX or smt and groups_of % 2):
        raise BadInput(f"processor groups of {groups_of} CPUs are impossible: use 1-{GROUP_MAX}"
                       f"{', even with SMT' if smt else ''}")
    out: list[Cpu] = []
    for c in range(n_cores):
        if groups_of is None:
            ids = [c, c + n_cores] if smt else [c]
        else:
            ids = [2 * c, 2 * c + 1] if smt else [c]
        node, socket = c * numa_nodes // n_cores, c * sockets // n_cores
        out += [Cpu(i, node, socket, ids[0], i // groups_of if groups_of else 0) for i in ids]
    return Topology(cpus=tuple(sorted(out, key=lambda c: c.id)), source="synthetic")


# --------------------------------------------------------------------------- numa map

_NODE_KEYS = {"id", "cpus", "cores", "group", "socket"}
_NODE_KEYS_TEXT = "id, cpus, cores, group, socket"
_TOP_KEYS = {"nodes", "comment", "description", "$schema"}


def _int_id(value: Any, bad: Any, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{label} has {value!r}, which is not a CPU id: use integers like 0 or 17")
    if value < 0 or value > MAX_CPU_ID:
        raise bad(f"{label} has CPU id {value}: ids run from 0 to {MAX_CPU_ID}")
    return value


def _flat_ids(raw: Any, bad: Any, label: str) -> list[int]:
    if isinstance(raw, str):
        try:
            return parse_cpulist(raw)
        except BadInput as exc:
            raise bad(f"{label}: {exc.message}") from None
    if not isinstance(raw, list):
        raise bad(f"{label} CPUs are a {type(raw).__name__}: give a list or a string like 0-31")
    out: list[int] = []
    for item in raw:
        out.extend(_flat_ids(item, bad, label) if isinstance(item, list) else
                   [_int_id(item, bad, label)])
    return out


def _opt_int(entry: dict[str, Any], key: str, bad: Any, label: str) -> int | None:
    value = entry.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise bad(f"{label} has \"{key}\": {value!r}: use a whole number 0 or more")
    return value


def parse_numa_map(data: Any, where: str, windows: bool = False) -> list[Cpu]:
    """Validate decoded numa-map JSON (either format) and return its CPUs."""

    def bad(msg: str) -> BadInput:
        return BadInput(f"numa map {where} {msg}")

    shape = 'expected {"group_0": [0, 1, ...], ...} or {"nodes": [{"id": 0, "cpus": "0-31"}]}'
    if not isinstance(data, dict) or not data:
        what = "no nodes" if isinstance(data, dict) else f"the wrong shape ({type(data).__name__})"
        raise bad(f"has {what}: {shape}")
    raw: list[tuple[int, Any, dict[str, Any]]] = []  # (node id, cpus, the rich entry or {})
    if "nodes" in data:
        extra = sorted(set(data) - _TOP_KEYS)
        if extra:
            raise bad(f"has unknown key {extra[0]!r} beside \"nodes\": remove it")
        if not isinstance(data["nodes"], list) or not data["nodes"]:
            raise bad(f"has no node list under \"nodes\": {shape}")
        for idx, item in enumerate(data["nodes"]):
            if isinstance(item, list):
                raw.append((idx, item, {}))
            elif isinstance(item, dict):
                unknown = sorted(set(item) - _NODE_KEYS)
                if unknown:
                    raise bad(f"node #{idx} has unknown key {unknown[0]!r}: use {_NODE_KEYS_TEXT}")
                nid = _opt_int(item, "id", bad, f"node #{idx}")
                if "cpus" not in item:
                    raise bad(f'node #{idx} has no "cpus": list them like "0-31,128-159"')
                raw.append((idx if nid is None else nid, item["cpus"], item))
            else:
                raise bad(f"node #{idx} is a {type(item).__name__}: {shape}")
    else:
        for key, value in data.items():
            m = _GROUP_KEY.match(str(key))
            if not m:
                raise bad(f"has unknown key {key!r}: name nodes group_0, group_1, ... ({shape})")
            raw.append((int(m.group(1)), value, {}))
    owner: dict[int, int] = {}
    cpus: list[Cpu] = []
    pieces: set[tuple[int, int]] = set()
    grouped = [e for _, _, e in raw if "group" in e]
    if grouped and len(grouped) != len(raw):
        raise bad('gives "group" for some nodes only: give it for every node or for none')
    for nid, value, entry in sorted(raw, key=lambda r: r[0]):
        label = f"node {nid}"
        group = _opt_int(entry, "group", bad, label) or 0
        if (nid, group) in pieces:
            raise bad(f"defines {label} twice: give each node its own id (a node may repeat "
                      "only to split it across processor groups)")
        pieces.add((nid, group))
        ids = _flat_ids(value, bad, label)
        if not ids:
            raise bad(f"{label} has no CPUs: list at least one or remove the node")
        dups = sorted(i for i, k in Counter(ids).items() if k > 1 or i in owner)
        if dups:
            others = sorted({owner[i] for i in dups if i in owner} | {nid})
            raise bad(
                f"lists CPUs {format_cpulist(dups)} twice (node {', node '.join(map(str, others))})"
                ": each CPU belongs to exactly one node"
            )
        owner.update(dict.fromkeys(ids, nid))
        core_of = {i: i for i in ids}
        if entry.get("cores") is not None:
            if not isinstance(entry["cores"], list):
                raise bad(f'{label} "cores" is not a list of sibling lists: write [[0,64],[1,65]]')
            seen: set[int] = set()
            for core in entry["cores"]:
                sib = _flat_ids(core if isinstance(core, list) else [core], bad, f"{label} cores")
                stray = sorted(set(sib) - set(ids))
                twice = sorted(set(sib) & seen)
                if stray or twice or not sib:
                    what = (f"names CPUs {format_cpulist(stray)} outside the node" if stray else
                            f"puts CPUs {format_cpulist(twice)} in two cores" if twice else
                            "has an empty core")
                    raise bad(f'{label} "cores" {what}: list each node CPU in exactly one core')
                seen.update(sib)
                core_of.update(dict.fromkeys(sib, min(sib)))
        socket = _opt_int(entry, "socket", bad, label)
        cpus += [Cpu(i, nid, nid if socket is None else socket, core_of[i], group) for i in ids]
    last = -1
    for g in sorted({c.group for c in cpus}) if grouped else []:
        members = [c.id for c in cpus if c.group == g]
        if max(members) - min(members) >= GROUP_MAX or min(members) <= last:
            raise bad(
                f"puts CPUs {format_cpulist(members)} in processor group {g}: Windows numbers "
                f"CPUs group after group, at most {GROUP_MAX} per group; fix the groups"
            )
        last = max(members)
    if windows and not grouped and max(owner) >= GROUP_MAX:
        raise bad(
            f"lists CPUs up to {max(owner)} but no processor groups: on Windows give every "
            'node a "group" (see worker_config/numa_maps/windows-4groups.json)'
        )
    return cpus


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"has the key {key!r} twice")
        seen.add(key)
    return dict(pairs)


def load_numa_map(
    path: str | os.PathLike[str], allowed: set[int] | None = None, *, this_host: bool = True
) -> Topology:
    """Load a numa_map.json (reference ``group_N`` format or the rich ``nodes`` format).

    ``allowed`` defaults to this process's CPUs; ``this_host=False`` (planning another host)
    checks no CPU against this process. Every problem is a one-line BadInput.
    """
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BadInput(f"cannot read numa map {where}: {reason}: pass an existing file") from None
    try:
        data: Any = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"numa map {where} is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            "fix the syntax"
        ) from None
    except ValueError as exc:
        raise BadInput(f"numa map {where} {exc}: give each key once") from None
    cpus = parse_numa_map(data, where, windows=this_host and sys.platform == "win32")
    allow = (allowed if allowed is not None else _process_cpus()) if this_host else None
    foreign = sorted(c.id for c in cpus if allow is not None and c.id not in allow)
    if allow is not None and foreign:
        raise BadInput(
            f"numa map {where} names CPUs {format_cpulist(foreign)} that this process may not "
            f"use (allowed: {format_cpulist(allow)}): use a map made for this host or drop "
            "--numa-map to detect the topology"
        )
    return Topology(cpus=tuple(sorted(cpus, key=lambda c: c.id)), source=f"numa-map:{where}")


def adopt_cores(topo: Topology, known: Topology) -> Topology:
    """``topo`` (a numa map that lists no ``cores``) with the SMT siblings ``known`` (e.g.
    :func:`detect` on this host) knows; CPUs ``known`` lacks stay cores of their own."""
    if topo.smt:
        return topo
    core = {c.id: c.core for c in known.cpus}
    cpus = tuple(replace(c, core=core.get(c.id, c.id)) for c in topo.cpus)
    return replace(topo, cpus=cpus, notes=(*topo.notes, f"SMT siblings from {known.source}"))
