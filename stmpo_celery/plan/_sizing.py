"""How many slots to start on this host (pure, no I/O).

``N = min(RAM budget // RAM per process, usable CPUs // threads per slot, max concurrency,
frames)``, at least 1, with the RAM budget = min(80 % of total RAM, RAM available now).
An explicit ``--concurrency`` overrides the RAM and CPU limits but is still capped by
``--max-concurrency`` and the frame count; a movie output always gets one slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import SETTINGS, defaults
from ..errors import BadInput

#: Order in which equal limits are named as the binding one.
_LIMIT_ORDER = ("ram", "cpu", "max-concurrency", "frames")


@dataclass(frozen=True)
class Sizing:
    n: int  #: slots to start, >= 1
    bound_by: str  #: "ram" | "cpu" | "max-concurrency" | "frames" | "forced" | "movie"
    limits: dict[str, int]  #: each limit's slot count, e.g. {"ram": 25, "cpu": 16, ...}
    ram_budget_gb: float
    notes: tuple[str, ...]  #: sentences for the plan printout


def default_threads_per_slot(mfr: bool) -> int:
    """CPUs one slot wants: 16 with Multi-Frame Rendering on, 8 with it off."""
    return defaults.THREADS_PER_SLOT_MFR if mfr else defaults.THREADS_PER_SLOT_NO_MFR


def _check(
    ram_per_process_gb: float,
    threads_per_slot: int,
    max_concurrency: int,
    frames: int,
    forced: int | None,
) -> None:
    for name, value in (("ram_per_process_gb", ram_per_process_gb),
                        ("threads_per_slot", threads_per_slot),
                        ("max_concurrency", max_concurrency)):
        SETTINGS[name].check(value)  # the same ranges and words as every command
    if forced is not None and forced < 1:
        raise BadInput(
            f"--concurrency {forced} is below 1: pass a slot count of 1 or more, or leave it "
            "out to size automatically"
        )
    if frames < 1:
        raise BadInput(f"the task has {frames} frames to render: check --frames")


def ram_budget(total_ram_gb: float, available_ram_gb: float) -> tuple[float, str]:
    """GB the slots may plan to use, and how that was decided: the lower of
    ``RAM_FRACTION`` of the total and what is available now."""
    total = max(0.0, total_ram_gb)
    budget = float(max(0.0, min(defaults.RAM_FRACTION * total, available_ram_gb)))
    return budget, (f"RAM budget {budget:.1f} GB (the lower of {defaults.RAM_FRACTION:.0%} "
                    f"of {total:.1f} GB total and {max(0.0, available_ram_gb):.1f} GB "
                    f"available)")


def size_slots(
    *,
    usable_cpus: int,
    total_ram_gb: float,
    available_ram_gb: float,
    ram_per_process_gb: float,
    threads_per_slot: int,
    max_concurrency: int,
    frames: int,
    forced: int | None = None,
    movie: bool = False,
    forced_by: str = "--concurrency",
) -> Sizing:
    """Choose the slot count and say which limit chose it (see the module docstring).
    ``forced_by`` names where ``forced`` came from (the flag, ``$STMPO_CONCURRENCY``, a
    profile key), as the notes say it."""
    _check(ram_per_process_gb, threads_per_slot, max_concurrency, frames, forced)
    budget, budget_text = ram_budget(total_ram_gb, available_ram_gb)
    limits = {
        "ram": math.floor(budget / ram_per_process_gb + 1e-9),
        "cpu": max(0, usable_cpus) // threads_per_slot,
        "max-concurrency": max_concurrency,
        "frames": frames,
    }
    ram_text = f"{budget_text} / {ram_per_process_gb:g} GB per process = {limits['ram']} slot(s)"
    notes: list[str] = []
    if movie:
        notes.append("movie output (mov/mp4) cannot be split across processes: 1 slot renders it")
        if forced is not None and forced > 1:
            notes.append(f"{forced_by} {forced} ignored: a movie is rendered by one process")
        return Sizing(1, "movie", limits, budget, tuple(notes))
    if forced is not None:
        limits["forced"] = forced
        n = min(forced, max_concurrency, frames)
        if n == forced:
            bound = "forced"
        elif n == max_concurrency:
            bound = "max-concurrency"
            notes.append(f"{forced_by} {forced} capped to {n} by --max-concurrency")
        else:
            bound = "frames"
            notes.append(f"{forced_by} {forced} capped to {n}: the task has {frames} frame(s)")
        if n > limits["ram"]:
            notes.append(
                f"{n} slots exceed the RAM limit ({ram_text}): they may run out of memory; "
                "lower --concurrency or --ram-per-process-gb"
            )
        if n > limits["cpu"]:
            notes.append(
                f"{n} slots on {usable_cpus} usable CPUs get fewer than --threads-per-slot "
                f"{threads_per_slot} CPUs each"
            )
    else:
        low = min(limits[k] for k in _LIMIT_ORDER)
        bound = next(k for k in _LIMIT_ORDER if limits[k] == low)
        n = max(1, low)
        if bound == "ram":
            notes.append(f"RAM binds: {ram_text}")
            if low == 0:
                notes.append(
                    "not even one process fits the RAM budget: starting 1 slot anyway; free "
                    "memory or lower --ram-per-process-gb"
                )
        elif bound == "cpu" and low == 0:
            notes.append(
                f"{usable_cpus} usable CPU(s) are fewer than --threads-per-slot "
                f"{threads_per_slot}: starting 1 slot"
            )
    return Sizing(n, bound, limits, budget, tuple(notes))
