"""Replay a schedule on known frame costs (pure: no I/O, no clock).

:func:`simulate` plays the adaptive schedule the way the slots run it — every slot
launches its first block at time 0, an idle slot polls for a steal with
:func:`stmpo_celery.plan._steal.plan_steal` on what has been measured so far, a victim
stops after the frame its new end names — with the true costs standing in for After
Effects. ``stmpo plan`` uses it to predict a makespan from a previous render's costs,
and the unit tests use it to check the steal policy on workloads it was not tuned on.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..config import defaults
from ._steal import CostModel, Running, learn_launch, learn_margin, plan_steal

POLL_S = defaults.STEAL_WAIT_STEP_S  #: an idle slot looks for a steal this often


@dataclass
class SimResult:
    makespan: float
    launches: int
    steals: list[tuple[float, int, int, int]] = field(default_factory=list)  #: (t, victim, s, e)


@dataclass
class _Chunk:
    index: int
    start: int
    end: int
    done: int
    started_at: float
    frame_started_at: float | None = None

    def view(self) -> Running:
        return Running(self.index, self.start, self.end, self.done, self.started_at,
                       self.frame_started_at)


def simulate(costs: Mapping[int, float], chunks: Sequence[tuple[int, int]], n_slots: int,
             launch: float, *, seed_launch: float | None = None, steal: bool = True,
             prior: Mapping[int, float] | None = None,
             reach: float = defaults.STEAL_REACH_FRAMES,
             margin: float = defaults.STEAL_MARGIN, min_frames: int = 1,
             spares: int | None = None) -> SimResult:
    """Makespan (first launch -> last frame) of ``chunks`` on ``n_slots`` slots, pulled
    in order, with adaptive steals when ``steal``. ``costs[f]`` is frame f's true cost."""
    n_slots = max(1, n_slots)
    seed = launch if seed_launch is None else seed_launch
    queue = list(range(len(chunks)))
    spare = (spares if spares is not None else max(0, min(4 * n_slots,
                                                          len(costs) - n_slots)))
    if not steal:
        spare = 0
    known: dict[int, float] = {}
    latencies: list[tuple[int, float]] = []
    running: dict[int, _Chunk] = {}  # slot -> chunk
    events: list[tuple[float, int, int, str]] = []  # (time, order, slot, kind)
    order = 0
    result = SimResult(0.0, 0)
    next_index = len(chunks)

    def push(t: float, slot: int, kind: str) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (t, order, slot, kind))

    def begin(slot: int, index: int, s: int, e: int, t: float) -> None:
        running[slot] = _Chunk(index, s, e, s - 1, t, None)
        result.launches += 1
        push(t + launch + costs[s], slot, "frame")

    def idle(slot: int, t: float) -> None:
        nonlocal spare
        if queue:
            i = queue.pop(0)
            begin(slot, i, chunks[i][0], chunks[i][1], t)
        elif spare > 0 and running:
            push(t, slot, "poll")

    for slot in range(n_slots):
        idle(slot, 0.0)
    while events:
        t, _, slot, kind = heapq.heappop(events)
        if kind == "frame":
            ch = running[slot]
            f = ch.done + 1
            if ch.frame_started_at is None:
                latencies.append((f, t - ch.started_at))
            else:
                known[f] = t - ch.frame_started_at
            ch.done = f
            ch.frame_started_at = t
            result.makespan = max(result.makespan, t)
            if f >= ch.end:
                del running[slot]
                idle(slot, t)
            else:
                push(t + costs[f + 1], slot, "frame")
            continue
        # poll: an idle slot holding a spare task
        if not running or spare <= 0:
            continue
        default = sorted(known.values())[len(known) // 2] if known else 1.0
        model = CostModel(known, default, reach=reach, prior=prior)
        learned = learn_launch(latencies, model, seed)
        plan = plan_steal([c.view() for c in running.values()], model, learned, t,
                          margin=learn_margin(latencies, model, margin), min_frames=min_frames,
                          idle=sum(1 for e in events if e[3] == "poll") + 1)
        if plan is None:
            push(t + POLL_S, slot, "poll")
            continue
        victim = next(c for c in running.values() if c.index == plan.victim)
        victim.end = plan.new_end
        spare -= 1
        result.steals.append((t, plan.victim, plan.start, plan.end))
        begin(slot, next_index, plan.start, plan.end, t)
        next_index += 1
    return result
