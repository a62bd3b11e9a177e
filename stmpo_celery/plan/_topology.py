"""The shape of a host's CPUs: :class:`Topology` (CPUs, NUMA nodes, sockets, SMT
siblings, Windows processor groups), cpulist text, and hosts made up from counts.

Pure: detection (sysfs, psutil, Windows APIs) lives in :mod:`stmpo_celery.host`; the
planners here only ever receive a :class:`Topology`.

On Windows CPU ids are numbered group after group, as Task Manager shows them: the lowest
id of a processor group is processor 0 of that group.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from ..errors import BadInput

GROUP_MAX = 64  #: Windows puts at most this many logical processors in one processor group
MAX_CPU_ID = 65535  #: no host has CPU ids this large: a larger one is a typo

_ITEM = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


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
        raise BadInput(f"--cpus {cpus} is odd, so not SMT pairs: pass an even count or --no-smt")
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


def adopt_cores(topo: Topology, known: Topology) -> Topology:
    """``topo`` (a numa map that lists no ``cores``) with the SMT siblings ``known`` (e.g.
    :func:`detect` on this host) knows; CPUs ``known`` lacks stay cores of their own."""
    if topo.smt:
        return topo
    core = {c.id: c.core for c in known.cpus}
    cpus = tuple(replace(c, core=core.get(c.id, c.id)) for c in topo.cpus)
    return replace(topo, cpus=cpus, notes=(*topo.notes, f"SMT siblings from {known.source}"))
