"""The spawn plan of one render: how many slots, which CPUs each, which chunks."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from .plan import plan_chunks
from .validate import Prepared


@dataclass
class HostPlan:
    n_slots: int
    bound_by: str
    blocks: list[tuple[int, ...] | None]
    chunks: list[tuple[int, int]]
    schedule: str
    notes: list[str] = field(default_factory=list)
    nodes: list[int | None] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks"] = [list(b) if b else None for b in self.blocks]
        d["chunks"] = [list(c) for c in self.chunks]
        return d

    def lines(self) -> list[str]:
        out = [f"plan: {self.n_slots} slot(s) (bound by {self.bound_by}), "
               f"{len(self.chunks)} chunk(s), schedule {self.schedule}"]
        for k, b in enumerate(self.blocks):
            node = self.nodes[k] if k < len(self.nodes) else None
            where = f" node {node}" if node is not None else ""
            out.append(f"plan: slot {k}: CPUs {','.join(map(str, b)) if b else 'unpinned'}{where}")
        out.extend(f"plan: {n}" for n in self.notes)
        return out


def even_blocks(cpus: list[int], n: int) -> list[tuple[int, ...]]:
    base, extra = divmod(len(cpus), n)
    out, i = [], 0
    for k in range(n):
        size = base + (1 if k < extra else 0)
        out.append(tuple(cpus[i : i + size]) if size else (cpus[k % len(cpus)],))
        i += size
    return out


def make_host_plan(prep: Prepared) -> HostPlan:
    o = prep.options
    frames = len(prep.to_render)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    notes: list[str] = []
    if not prep.pattern.is_sequence:
        n, bound = 1, "movie"
    elif o.concurrency:
        n, bound = min(o.concurrency, o.max_concurrency, max(1, frames)), "forced"
    else:
        n, bound = max(1, min(len(cpus) or 1, o.max_concurrency, frames)), "cpu"
    blocks: list[tuple[int, ...] | None] = (
        list(even_blocks(cpus, n)) if o.affinity and cpus else [None] * n
    )
    chunks = plan_chunks(prep.to_render, n, o.schedule, prep.chunk_size)
    return HostPlan(n, bound, blocks, chunks, o.schedule, notes)
