"""Chunk plans: which frame ranges go to aerender runs (pure, no I/O).

Every chunk is a contiguous inclusive range (aerender takes ``-s``/``-e``); frames
that were skipped (already on disk) split ranges, never get rendered again.

* ``static`` — N equal blocks, one per slot (the reference orchestrator's split).
* ``fixed`` — chunks of ``chunk_size`` frames (auto: four per slot) pulled by idle slots.
* ``guided`` — guided self-scheduling: each chunk is ``ceil(remaining / N)``
  frames (at least ``chunk_size`` when given), big first, small at the end.
* ``adaptive`` — starts as ``static`` (or, for a comp with a recorded history, as
  :func:`cost_blocks` of equal predicted cost); at run time idle slots take over
  unrendered tails of running chunks (see :mod:`stmpo_celery.plan._steal`), never a
  tail shorter than ``chunk_size`` frames.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence

from ..config import defaults
from ..errors import BadInput
from ._frames import runs

SCHEDULES = defaults.SCHEDULES


def _cut(frames: Sequence[int], sizes: Sequence[int]) -> list[tuple[int, int]]:
    """Cut sorted ``frames`` into consecutive pieces of ``sizes``; split pieces at gaps."""
    out: list[tuple[int, int]] = []
    i = 0
    for size in sizes:
        piece = frames[i : i + size]
        i += size
        if not piece:
            continue
        start = prev = piece[0]
        for f in piece[1:]:
            if f != prev + 1:
                out.append((start, prev))
                start = f
            prev = f
        out.append((start, prev))
    return out


def equal_sizes(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    base, extra = divmod(total, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]


def guided_sizes(total: int, n_slots: int, minimum: int = 1) -> list[int]:
    sizes: list[int] = []
    left = total
    while left > 0:
        size = min(left, max(minimum, math.ceil(left / max(1, n_slots))))
        sizes.append(size)
        left -= size
    return sizes


def plan_chunks(frames: Sequence[int], n_slots: int, schedule: str = "static",
                chunk_size: int | None = None) -> list[tuple[int, int]]:
    """The chunk list for ``frames`` (sorted, distinct) on ``n_slots`` slots."""
    if schedule not in SCHEDULES:
        raise BadInput(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
    if chunk_size is not None and chunk_size <= 0:
        raise BadInput(f"--chunk-size {chunk_size} is not positive: use auto or a frame count")
    frames = sorted(set(frames))
    if not frames:
        return []
    total = len(frames)
    if schedule == "fixed":
        # auto: four chunks per slot, so idle slots can even out the tail
        chunk_size = chunk_size or max(1, math.ceil(total / (4 * max(1, n_slots))))
        out: list[tuple[int, int]] = []
        for a, b in runs(frames):  # every contiguous run cut into chunk_size pieces
            out.extend((s, min(b, s + chunk_size - 1)) for s in range(a, b + 1, chunk_size))
        return out
    if schedule == "guided":
        sizes = guided_sizes(total, n_slots, chunk_size or 1)
    else:  # static, adaptive (initial plan)
        sizes = equal_sizes(total, n_slots)
    return _cut(frames, sizes)


def makespan_bound(costs: Sequence[float], n_slots: int, launch: float) -> float:
    """No schedule beats ``L + max(sum(c) / N, max(c))`` (DESIGN.md §7)."""
    if not costs:
        return 0.0
    return launch + max(sum(costs) / max(1, n_slots), max(costs))


def predict_makespan(chunks: Sequence[tuple[int, int]], n_slots: int, launch: float,
                     frame_cost: float) -> float:
    """Makespan of ``chunks`` pulled in order by ``n_slots`` idle slots, each chunk paying
    one aerender launch, every frame costing ``frame_cost`` (list scheduling)."""
    free = [0.0] * max(1, n_slots)
    for s, e in chunks:
        k = free.index(min(free))
        free[k] += launch + (e - s + 1) * frame_cost
    return max(free)


def task_share(frames: Sequence[int], index: int, count: int) -> list[int]:
    """Task ``index`` (1-based) of ``count``: the listed ``frames`` cut, in order, into
    ``count`` near-equal pieces (the big-task job template's tasks; gaps allowed)."""
    if count < 1 or not 1 <= index <= count:
        raise BadInput(f"--task {index}/{count} is not a task of the job: use I/N with "
                       "1 <= I <= N")
    frames = sorted(set(frames))
    if count > len(frames):
        raise BadInput(f"--task {index}/{count}: the job has {len(frames)} frame(s), fewer "
                       "than its tasks; write the bundle again (stmpo bundle)")
    sizes = equal_sizes(len(frames), count)
    start = sum(sizes[: index - 1])
    return frames[start : start + sizes[index - 1]]
def cost_blocks(frames: Sequence[int], n_slots: int, cost: Mapping[int, float],
                default: float) -> list[tuple[int, int]]:
    """``n_slots`` consecutive blocks of equal predicted cost (a previous render's
    ``cost`` per frame, ``default`` where it has none): the adaptive schedule's first
    blocks when the comp has a history. Each block keeps at least one frame."""
    frames = sorted(set(frames))
    if not frames:
        return []
    parts = max(1, min(n_slots, len(frames)))
    prefix = [0.0]
    for f in frames:
        prefix.append(prefix[-1] + max(0.0, cost.get(f, default)))
    cuts = [0]
    for k in range(1, parts):
        target = prefix[-1] * k / parts
        lo, hi = cuts[-1] + 1, len(frames) - (parts - k)  # every block keeps a frame
        p = min(max(bisect.bisect_left(prefix, target), lo), hi)
        if p > lo and abs(prefix[p - 1] - target) <= abs(prefix[p] - target):
            p -= 1
        cuts.append(p)
    cuts.append(len(frames))
    return _cut(frames, [b - a for a, b in zip(cuts, cuts[1:], strict=False)])
