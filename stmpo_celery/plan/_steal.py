"""Work stealing for the adaptive schedule (pure: no I/O, no clock).

The adaptive plan starts as N equal blocks, one per slot, so a uniform comp pays one
aerender launch per slot. When a slot goes idle it takes over the unrendered tail of
the running chunk whose finish it can bring forward the most: the victim gets an
earlier end frame, its aerender is stopped right after writing it, and the thief
launches its own aerender for the tail.

Where to cut needs the cost of frames nobody has rendered yet. Each frame's render
time is recorded as it finishes; an unrendered frame's cost is estimated from the
nearest rendered frames on either side (block starts are sampled early, so the
whole range is covered soon). A wrong guess is corrected by the next steal.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Running:
    """A running chunk as the thief sees it."""

    index: int
    start: int
    end: int  #: current end (thieves may have lowered it)
    done: int  #: highest frame finished in order (start - 1 before the first frame)
    started_at: float  #: when its aerender was launched
    frame_started_at: float | None  #: when the frame in progress began (None: launching)


@dataclass(frozen=True)
class Steal:
    victim: int
    new_end: int  #: the victim keeps start..new_end
    start: int  #: the thief renders start..end
    end: int
    gain: float  #: estimated seconds the victim's finish moves forward


class CostModel:
    """Seconds per frame: known where rendered; elsewhere the dearer of the nearest
    rendered frames on either side. Erring high is the safe side: a thief that takes
    too little leaves work that the next idle slot steals, while one that takes too
    much becomes the new tail of the render."""

    def __init__(self, known: Mapping[int, float], default: float) -> None:
        self.frames = sorted(known)
        self.known = dict(known)
        self.default = default

    def cost(self, frame: int) -> float:
        if frame in self.known:
            return self.known[frame]
        i = bisect.bisect_left(self.frames, frame)
        left = self.frames[i - 1] if i > 0 else None
        right = self.frames[i] if i < len(self.frames) else None
        if left is None and right is None:
            return self.default
        if left is None:
            assert right is not None
            return self.known[right]
        if right is None:
            return self.known[left]
        return max(self.known[left], self.known[right])


def remaining(r: Running, model: CostModel, launch: float, now: float) -> tuple[float, list[float]]:
    """Estimated seconds until ``r`` finishes, and the costs of its frames after the current."""
    current = r.done + 1
    if r.frame_started_at is None:  # still launching After Effects
        head = max(0.0, launch - (now - r.started_at)) + model.cost(current)
    else:
        head = max(0.0, model.cost(current) - (now - r.frame_started_at))
    tail = [model.cost(f) for f in range(current + 1, r.end + 1)]
    return head + sum(tail), tail


def plan_steal(running: Sequence[Running], model: CostModel, launch: float, now: float,
               min_gain: float, min_frames: int = 1) -> Steal | None:
    """The best tail to take now (at least ``min_frames`` long), or None when no steal
    brings a finish forward by ``min_gain`` seconds."""
    best: Steal | None = None
    for r in running:
        current = r.done + 1
        if current >= r.end:  # the frame in progress is its last: nothing to take
            continue
        total, tail = remaining(r, model, launch, now)
        head = total - sum(tail)
        # victim keeps current..k, thief takes k+1..end; tail[j] is frame current+1+j
        kept = head
        rest = sum(tail)
        best_k, best_finish = None, total
        for j, c in enumerate(tail):
            finish = max(kept, launch + rest)
            if len(tail) - j < min_frames:
                break
            if finish < best_finish:
                best_k, best_finish = current + j, finish
            kept += c
            rest -= c
        if best_k is None:
            continue
        gain = total - best_finish
        if gain >= min_gain and (best is None or gain > best.gain):
            best = Steal(r.index, best_k, best_k + 1, r.end, gain)
    return best


def learn_launch(first_frame_latencies: Sequence[float], model: CostModel, seed: float) -> float:
    """aerender start-up: time to the first frame minus a typical frame, else the seed."""
    if not first_frame_latencies:
        return seed
    costs = sorted(model.known.values())
    typical = costs[len(costs) // 2] if costs else 0.0
    lat = sorted(first_frame_latencies)
    return max(0.0, lat[len(lat) // 2] - typical)
