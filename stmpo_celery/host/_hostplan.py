"""The spawn plan of one render: how many slots, which CPUs each, which chunks.

Pure given its facts (:class:`HostFacts`): ``stmpo plan --cpus 256 --ram-gb 1024``
plans another host from a laptop with the very code ``stmpo render`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psutil

from ..config import RenderOptions
from ..plan import (
    Topology,
    adopt_cores,
    default_threads_per_slot,
    format_cpulist,
    plan_blocks,
    plan_chunks,
    runs,
    size_slots,
    synthetic,
)
from ._numamap import load_numa_map
from ._topology import detect


@dataclass(frozen=True)
class HostFacts:
    topology: Topology
    total_ram_gb: float
    available_ram_gb: float
    this_host: bool = True


def this_host(numa_map: str | None) -> HostFacts:
    topo = detect()
    if numa_map:
        topo = adopt_cores(load_numa_map(numa_map), topo)
    vm = psutil.virtual_memory()
    return HostFacts(topo, vm.total / 2**30, vm.available / 2**30)


def other_host(cpus: int, ram_gb: float, numa_nodes: int = 1, smt: bool = True,
               numa_map: str | None = None) -> HostFacts:
    topo = (load_numa_map(numa_map, this_host=False) if numa_map
            else synthetic(cpus, numa_nodes=numa_nodes, smt=smt))
    return HostFacts(topo, ram_gb, ram_gb, this_host=False)


@dataclass
class HostPlan:
    n_slots: int
    bound_by: str
    blocks: list[tuple[int, ...] | None]
    chunks: list[tuple[int, int]]
    schedule: str
    notes: list[str] = field(default_factory=list)
    nodes: list[int | None] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)
    ram_per_slot_gb: float = 0.0
    threads_per_slot: int = 0
    mfr: bool = True
    mfr_max_cpu: int = 90
    topology: str = ""
    launch_cost: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_slots": self.n_slots, "bound_by": self.bound_by, "limits": self.limits,
            "schedule": self.schedule, "topology": self.topology,
            "slots": [{"slot": k, "cpus": list(b) if b else None,
                       "node": self.nodes[k] if k < len(self.nodes) else None}
                      for k, b in enumerate(self.blocks)],
            "ram_per_slot_gb": self.ram_per_slot_gb, "threads_per_slot": self.threads_per_slot,
            "mfr": self.mfr, "mfr_max_cpu": self.mfr_max_cpu,
            "chunks": [list(c) for c in self.chunks], "notes": self.notes,
            "launch_cost": self.launch_cost,
        }

    def lines(self) -> list[str]:
        mfr = f"-mfr {'ON' if self.mfr else 'OFF'} {self.mfr_max_cpu}"
        sizes = sorted({len(b) for b in self.blocks if b})
        given = ""  # the blocks share out the host's CPUs: say so where they differ
        if sizes and sizes != [self.threads_per_slot]:
            span = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
            given = f" (pinned to {span} each: the host's CPUs shared out)"
        elif self.blocks and not any(self.blocks):
            given = " (a budget only: unpinned, every slot floats over the host's CPUs)"
        out = [f"plan: {self.n_slots} slot(s), bound by {self.bound_by} "
               f"(limits: {', '.join(f'{k} {v}' for k, v in self.limits.items())})",
               f"plan: host {self.topology}",
               f"plan: {self.ram_per_slot_gb:g} GB RAM and {self.threads_per_slot} CPUs per slot"
               f"{given}, {mfr}; {len(self.chunks)} chunk(s), schedule {self.schedule}"]
        for k, b in enumerate(self.blocks):
            node = self.nodes[k] if k < len(self.nodes) else None
            where = f" (node {node})" if node is not None else ""
            cpus = format_cpulist(b) if b else "unpinned"
            out.append(f"plan: slot {k}: CPUs {cpus}{where}")
        out.extend(f"plan: {n}" for n in self.notes)
        return out


def make_plan(o: RenderOptions, frames: list[int], sequence: bool, facts: HostFacts,
              chunk_size: int | None) -> HostPlan:
    threads = o.threads_per_slot or default_threads_per_slot(o.mfr)
    sizing = size_slots(
        usable_cpus=len(facts.topology.cpus), total_ram_gb=facts.total_ram_gb,
        available_ram_gb=facts.available_ram_gb, ram_per_process_gb=o.ram_per_process_gb,
        threads_per_slot=threads, max_concurrency=o.max_concurrency, frames=max(1, len(frames)),
        forced=o.concurrency or None, movie=not sequence, forced_by=o.origin("concurrency"),
    )
    notes = list(facts.topology.notes) + list(sizing.notes)
    blocks: list[tuple[int, ...] | None] = [None] * sizing.n
    nodes: list[int | None] = [None] * sizing.n
    if o.affinity:
        bp = plan_blocks(facts.topology, sizing.n)
        blocks = [b.cpus for b in bp.blocks]
        nodes = [b.node for b in bp.blocks]
        notes += list(bp.notes)
    else:
        notes.append("pinning off (--no-affinity): slots float over every CPU")
    schedule = o.schedule if sequence else "static"
    chunks = plan_chunks(frames, sizing.n, schedule, chunk_size)
    gaps = len(runs(frames)) if frames else 0
    if sequence and gaps > sizing.n:  # more launches than slots, whatever the schedule
        notes.append(f"the frames fall in {gaps} separate runs (a stepped or gapped range): "
                     "aerender renders one unbroken range per launch, so each run costs a "
                     "launch of After Effects")
    return HostPlan(
        n_slots=sizing.n, bound_by=sizing.bound_by, blocks=blocks, chunks=chunks,
        schedule=schedule, notes=notes, nodes=nodes, limits=dict(sizing.limits),
        ram_per_slot_gb=o.ram_per_process_gb, threads_per_slot=threads, mfr=o.mfr,
        mfr_max_cpu=o.mfr_max_cpu, topology=facts.topology.describe(), launch_cost=o.launch_cost,
    )


def make_host_plan(prep: Any) -> HostPlan:
    """The plan for a validated render on this host."""
    o: RenderOptions = prep.options
    facts = this_host(o.numa_map)
    return make_plan(o, prep.to_render, prep.pattern.is_sequence, facts, prep.chunk_size)

