"""Affinity blocks: which CPUs each slot is pinned to (pure planning, no I/O).

Rules, in order of strength:

* a block never crosses a Windows processor group (at most 64 CPUs; the group boundary
  wins over a NUMA node that spans groups);
* SMT siblings of a physical core always land in the same block;
* with at least as many slots as NUMA nodes a block never straddles a node; with fewer,
  a slot takes whole nodes (the notes say so);
* slots spread over nodes in proportion to their CPUs (the remainder to larger nodes) and
  a node's cores divide as evenly as possible, in contiguous runs of whole cores;
* no CPU is in two blocks, unless there are more slots than physical cores: then blocks
  share cores round-robin, ``shared`` is set and a note says so.

The output depends only on the topology and the slot count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import BadInput
from ._topology import GROUP_MAX, Topology, format_cpulist

Core = tuple[int, ...]


@dataclass(frozen=True)
class Block:
    slot: int
    cpus: tuple[int, ...]  #: sorted CPU ids
    node: int | None  #: the NUMA node of every CPU, None when the block spans nodes
    group: int | None  #: the processor group, None when the host has only one

    @property
    def cpulist(self) -> str:
        return format_cpulist(self.cpus)


@dataclass(frozen=True)
class BlockPlan:
    blocks: tuple[Block, ...]
    shared: bool  #: some CPU is in more than one block
    notes: tuple[str, ...]  #: sentences for the plan printout

    def lines(self) -> list[str]:
        """One line per slot, then the notes."""
        out = []
        for b in self.blocks:
            where = "nodes spanned" if b.node is None else f"node {b.node}"
            if b.group is not None:
                where += f", group {b.group}"
            out.append(f"slot {b.slot}: CPUs {b.cpulist} ({len(b.cpus)} CPUs, {where})")
        return out + list(self.notes)


@dataclass(frozen=True)
class _Domain:
    node: int
    group: int
    cores: tuple[Core, ...]  #: sorted by lowest CPU id

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.cores)


def _domains(topo: Topology) -> list[_Domain]:
    """Node x group pieces of the host; each core goes where its lowest CPU is."""
    where = {c.id: (c.group, c.node) for c in topo.cpus}
    found: dict[tuple[int, int], list[Core]] = {}
    for core in sorted(topo.cores().values()):
        found.setdefault(where[core[0]], []).append(core)
    return [_Domain(node, group, tuple(cores)) for (group, node), cores in sorted(found.items())]


def _apportion(weights: Sequence[int], n: int, caps: Sequence[int] | None = None) -> list[int]:
    """Split ``n >= len(weights)`` slots: one each, then each next slot to the part with the
    most weight per slot (ties: larger part, then lower index), never above its cap.
    Stops early when every part is at its cap."""
    counts = [1] * len(weights)
    for _ in range(n - len(weights)):
        open_ = [i for i in range(len(weights)) if caps is None or counts[i] < caps[i]]
        if not open_:
            break
        best = max(open_, key=lambda i: (weights[i] / counts[i], weights[i], -i))
        counts[best] += 1
    return counts


def _partition(weights: Sequence[int], k: int) -> list[tuple[int, int]]:
    """Cut ``len(weights) >= k`` items into ``k`` contiguous non-empty runs whose weights
    are as even as possible; returns ``(start, end)`` index pairs, end exclusive."""
    m, total = len(weights), sum(weights)
    cum = [0]
    for w in weights:
        cum.append(cum[-1] + w)
    cuts = [0]
    for j in range(1, k):
        lo, hi = cuts[-1] + 1, m - (k - j)
        target = j * total / k
        cuts.append(min(range(lo, hi + 1), key=lambda b: (abs(cum[b] - target), b)))
    cuts.append(m)
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _fill(doms: Sequence[_Domain], k: int) -> tuple[list[list[Core]], bool]:
    """``k`` blocks (as core lists) over ``doms``; True when blocks had to share cores."""
    if k < len(doms):  # fewer slots than nodes: each slot takes a run of whole nodes
        runs = _partition([d.size for d in doms], k)
        return [[c for d in doms[a:b] for c in d.cores] for a, b in runs], False
    counts = _apportion([d.size for d in doms], k, [len(d.cores) for d in doms])
    shared = sum(counts) < k
    if shared:  # more slots than cores: spread by cores, then round-robin inside a node
        counts = _apportion([len(d.cores) for d in doms], k)
    blocks: list[list[Core]] = []
    for d, n in zip(doms, counts, strict=True):
        if n <= len(d.cores):
            runs = _partition([len(c) for c in d.cores], n)
            blocks += [list(d.cores[a:b]) for a, b in runs]
        else:
            blocks += [[d.cores[j % len(d.cores)]] for j in range(n)]
    return blocks, shared


def plan_blocks(topo: Topology, n_slots: int) -> BlockPlan:
    """One CPU block per slot on ``topo``, following the module's rules."""
    if n_slots < 1:
        raise BadInput(f"slot count {n_slots} is below 1: pass --concurrency 1 or more")
    if not topo.cpus:
        raise BadInput("the topology has no usable CPU: check --numa-map or the cpuset")
    doms = _domains(topo)
    groups = topo.groups()
    notes: list[str] = []
    if len(groups) == 1 or n_slots >= len(doms):
        core_blocks, shared = _fill(doms, n_slots)
    else:  # Windows, fewer slots than node x group pieces: never cross a group
        by_group = [[d for d in doms if d.group == g] for g in groups]
        sizes = [sum(d.size for d in ds) for ds in by_group]
        if n_slots < len(groups):
            picked = sorted({i * len(groups) // n_slots for i in range(n_slots)})
            idle = [g for i, g in enumerate(groups) if i not in picked]
            notes.append(
                f"{n_slots} slot(s) on {len(groups)} processor groups: a slot cannot cross a "
                f"group, so {sum(sizes[groups.index(g)] for g in idle)} CPUs (group(s) "
                f"{', '.join(map(str, idle))}) stay idle; use {len(groups)} or more slots to "
                "use them"
            )
            counts = [1 if i in picked else 0 for i in range(len(groups))]
        else:
            counts = _apportion(sizes, n_slots, [sum(len(d.cores) for d in ds) for ds in by_group])
        core_blocks, shared = [], False
        for ds, k in zip(by_group, counts, strict=True):
            if k:
                core_blocks += _fill(ds, k)[0]
    node_of = {c.id: c.node for c in topo.cpus}
    group_of = {c.id: c.group for c in topo.cpus}
    blocks = []
    for slot, cores in enumerate(core_blocks):
        cpus = tuple(sorted(i for core in cores for i in core))
        nodes = sorted({node_of[i] for i in cpus})
        group = group_of[cpus[0]] if len(groups) > 1 else None
        blocks.append(Block(slot, cpus, nodes[0] if len(nodes) == 1 else None, group))
    return BlockPlan(tuple(blocks), shared, tuple(_summary(topo, blocks, shared) + notes))


def _summary(topo: Topology, blocks: list[Block], shared: bool) -> list[str]:
    n, nodes, cores = len(blocks), topo.nodes(), len(topo.cores())
    sizes = Counter(len(b.cpus) for b in blocks)
    shape = ", ".join(f"{c} x {s} CPUs" for s, c in sorted(sizes.items(), reverse=True))
    per_node = Counter(b.node for b in blocks if b.node is not None)
    spread = ", ".join(f"node {k}: {v}" for k, v in sorted(per_node.items()))
    out = [f"{n} slot(s) on {topo.describe()}: blocks {shape}" + (f" ({spread})" if spread else "")]
    spanning = [b for b in blocks if b.node is None]
    if spanning:
        out.append(
            f"{n} slot(s) for {len(nodes)} NUMA nodes: {len(spanning)} slot(s) span whole "
            f"nodes; use {len(nodes)} or more slots for node-local blocks"
        )
    if shared:
        load = Counter(i for b in blocks for i in b.cpus).most_common(1)[0][1]
        out.append(
            f"{n} slots on {cores} physical cores: blocks share cores round-robin (up to "
            f"{load} slots per CPU); lower --concurrency to {cores} for exclusive blocks"
        )
    return out


def group_affinity(cpus: Iterable[int], group_sizes: Sequence[int]) -> tuple[int, int]:
    """Windows ``(group, mask)`` for CPU ids numbered group after group.

    ``group_sizes`` are the active processor counts per group (``GetActiveProcessorCount``).
    ValueError when the ids are empty, beyond the host or in more than one group.
    """
    ids = sorted(set(cpus))
    if not ids:
        raise ValueError("no CPUs to pin to")
    bases = [sum(group_sizes[:g]) for g in range(len(group_sizes))]
    found: set[int] = set()
    mask = 0
    for i in ids:
        g = next((g for g in range(len(bases)) if bases[g] <= i < bases[g] + group_sizes[g]), None)
        if g is None:
            raise ValueError(f"CPU {i} is beyond this host's {sum(group_sizes)} processors")
        found.add(g)
        mask |= 1 << (i - bases[g])
    if len(found) > 1:
        raise ValueError(f"CPUs {format_cpulist(ids)} span processor groups {sorted(found)}")
    if mask >> GROUP_MAX:
        raise ValueError(f"CPUs {format_cpulist(ids)} do not fit one {GROUP_MAX}-CPU group")
    return found.pop(), mask
