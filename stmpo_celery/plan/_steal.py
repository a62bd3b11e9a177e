"""Work stealing for the adaptive schedule (pure: no I/O, no clock).

The adaptive plan starts as one block per slot (equal frame counts, or equal
predicted cost when a previous render of the comp left its frame costs). When a slot
goes idle it may take over the unrendered tail of a running chunk: the victim gets an
earlier end frame, its aerender is stopped right after writing it, and the thief
launches its own aerender for the tail.

Where to cut needs the cost of frames nobody has rendered yet, and that cost is
uncertain. :class:`CostModel` gives each unrendered frame a mean and a variance: close
to rendered frames (the victim's recent ones on the left, another chunk's first ones
on the right) it is the cost of the dearer side (the mean of its nearest frames);
further away that side's weight fades, over its reach, into the distribution of every
frame the run has rendered so far (or into a previous render's cost of that frame, when
the comp has a history). A frame still rendering counts as rendered once it has taken
longer than its estimate, at the time it has taken so far (a lower bound): a heavy
feature is believed from its first frame's overrun, not one frame later. The reach is
learned from the run: how long its light and its heavy features have lasted
(``reach`` frames stands in until the run has seen a feature end), and at least the
run of similar frames just rendered.

Idle slots are handed out over the victims one by one, each to the victim expected to
end last among those where it would pay for its launch: two idle slots split two long
victims rather than the same one twice, and a victim long enough for several thieves is
cut into that many parts at once, every part (the victim's and each thief's launch +
frames) ending together under the model. A steal is made only when it brings the
victim's finish forward by more than ``launch x margin`` plus ``STEAL_GAIN_SD`` standard
deviations of the victim's estimated remaining cost: the margin is learned from the run
(how much longer than the median its launches took), never below ``STEAL_MARGIN``.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..config import defaults

SIDE_FRAMES = 5  #: a side's cost is the mean of this many nearest rendered frames
HEAVY_FACTOR = 1.5  #: a frame this much dearer than the run's median is a heavy one


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
    """Seconds per frame with their uncertainty (see the module docstring).

    ``known`` are measured costs; ``default`` is used when nothing is known at all;
    ``prior`` (a previous render's costs, possibly of a changed project) stands in for
    the run's own distribution where this run has not measured the frame yet.
    """

    def __init__(self, known: Mapping[int, float], default: float,
                 reach: float = defaults.STEAL_REACH_FRAMES,
                 prior: Mapping[int, float] | None = None) -> None:
        self.frames = sorted(known)
        self.known = dict(known)
        self.default = default
        self.reach = max(1e-6, reach)
        self.prior = dict(prior or {})
        values = list(self.known.values()) or [default]
        self.mean = statistics.fmean(values)
        self.var = statistics.pvariance(values) if len(values) > 1 else 0.0
        self.median = statistics.median(values)
        self.reaches = self._feature_reaches()  #: (light, heavy) features' mean length

    def heavy(self, cost: float) -> bool:
        """Whether ``cost`` belongs to a heavy feature: dearer than 1.5x the run's median."""
        return cost > HEAVY_FACTOR * self.median

    def _feature_reaches(self) -> tuple[float, float]:
        """How far a light and a heavy feature reach, in frames: the mean length of this
        run's features of that kind, from the runs of consecutive rendered frames of one
        kind. Lengths taken as exponential (a feature as likely to end at every frame),
        so a run cut short by unrendered frames counts its frames but no end; ``reach``
        counts as one feature seen, so until the run has seen features end the reach
        stays about ``reach``. A comp whose slow frames come alone or in pairs thus
        learns that a slow frame says little about the next ones."""
        frames = {False: 0, True: 0}
        ends = {False: 0, True: 0}
        prev: tuple[int, bool] | None = None  # (frame, kind) of the previous rendered frame
        for f in self.frames:
            kind = self.heavy(self.known[f])
            frames[kind] += 1
            if prev is not None and prev[0] == f - 1 and prev[1] != kind:
                ends[prev[1]] += 1  # a feature of the other kind ended right here
            prev = (f, kind)
        light, heavy = ((frames[k] + self.reach) / (ends[k] + 1) for k in (False, True))
        return light, heavy

    def _side(self, i: int, step: int) -> tuple[float, int] | None:
        """(cost, run length) of the rendered frames next to index ``i`` going ``step``:
        the run is how many consecutive rendered frames cost about the same as the
        nearest (within a factor of 1.5) — the feature's observed length; the cost is
        the mean of the nearest ``SIDE_FRAMES`` consecutive frames, so one slow frame (a
        spike) next to the gap adds a fraction of its cost, a change is believed as it
        is confirmed frame by frame, and frames that alternate read as their mean."""
        if not 0 <= i < len(self.frames):
            return None
        ref = self.known[self.frames[i]]
        seq: list[float] = []  # the consecutive rendered frames from i, going step
        j = i
        while 0 <= j < len(self.frames) and (
                j == i or abs(self.frames[j] - self.frames[j - step]) <= 1):
            seq.append(self.known[self.frames[j]])
            j += step
        run = next((k for k, c in enumerate(seq) if not ref / 1.5 <= c <= ref * 1.5),
                   len(seq))
        return statistics.fmean(seq[:SIDE_FRAMES]), run

    def estimate(self, frame: int) -> tuple[float, float]:
        """(mean, variance) of the cost of ``frame``."""
        if frame in self.known:
            return self.known[frame], 0.0
        far_mean, far_var = self.mean, self.var
        if frame in self.prior:  # a previous render's cost: trusted like a neighbour
            far_mean = self.prior[frame]
            far_var = 0.25 * (self.prior[frame] - self.mean) ** 2
        i = bisect.bisect_left(self.frames, frame)
        sides: list[tuple[float, float]] = []  # (weight, cost)
        for idx, step in ((i - 1, -1), (i, 1)):
            side = self._side(idx, step)
            if side is None:
                continue
            cost, run = side
            dist = abs(frame - self.frames[idx])
            reach = self.reaches[self.heavy(cost)]
            sides.append((math.exp(-dist / max(reach, float(run))), cost))
        if not sides:
            return far_mean, far_var
        # The dearer side's feature is assumed to reach this frame with its own weight
        # (erring high is the safe side: a thief that takes too little leaves work the
        # next idle slot takes, one that takes too much becomes the tail); otherwise the
        # frame is drawn from the far distribution.
        w, near = max(sides, key=lambda x: x[1])
        mean = w * near + (1.0 - w) * far_mean
        var = w * (1.0 - w) * (near - far_mean) ** 2 + (1.0 - w) * far_var
        return mean, var

    def cost(self, frame: int) -> float:
        return self.estimate(frame)[0]

    def with_floors(self, running: Sequence[Running], now: float) -> CostModel:
        """This model plus what the frames in progress already tell: a frame rendering
        for longer than its estimate costs at least that long, and is counted as a
        rendered frame of that cost (a lower bound), so a feature is believed from the
        moment its first frame overruns, not once it has finished."""
        floors: dict[int, float] = {}
        for r in running:
            if r.frame_started_at is None:
                continue
            f = r.done + 1
            elapsed = now - r.frame_started_at
            if f not in self.known and elapsed > self.cost(f):
                floors[f] = elapsed
        if not floors:
            return self
        return CostModel({**self.known, **floors}, self.default, self.reach, self.prior)


def remaining(r: Running, model: CostModel, launch: float, now: float) -> tuple[float, list[float]]:
    """Estimated seconds until ``r`` finishes, and the costs of its frames after the current."""
    current = r.done + 1
    if r.frame_started_at is None:  # still launching After Effects
        head = max(0.0, launch - (now - r.started_at)) + model.cost(current)
    else:
        head = max(0.0, model.cost(current) - (now - r.frame_started_at))
    tail = [model.cost(f) for f in range(current + 1, r.end + 1)]
    return head + sum(tail), tail


def _best_split(r: Running, model: CostModel, launch: float, now: float, min_frames: int,
                shares: int = 1) -> Steal | None:
    """The thief's cut when ``shares`` idle slots (this thief among them) each take a
    tail of ``r``: the victim's part and every thief's launch + part end together, and
    this thief takes the last part. ``gain`` is how much earlier ``r`` ends."""
    current = r.done + 1
    if current >= r.end:  # the frame in progress is its last: nothing to take
        return None
    total, tail = remaining(r, model, launch, now)
    share = (total - launch) / (shares + 1)  # each thief's frames, in seconds
    if share <= 0:
        return None
    taken = 0.0
    j = len(tail)  # this thief takes tail[j:], i.e. frames current+1+j..end
    # j >= 1: the victim keeps the frame after the current one too, so it learns its new
    # end a frame before reaching it and stops right there (never in a thief's frame)
    while j > 1 and taken + tail[j - 1] / 2 <= share:
        j -= 1
        taken += tail[j]
    if len(tail) - j < min_frames:
        j = len(tail) - min_frames
        if j < 1:
            return None
        taken = sum(tail[j:])
    if j >= len(tail):
        return None
    finish = max(total - taken * shares if shares > 1 else total - taken, launch + taken)
    gain = total - finish
    return Steal(r.index, current + j, current + j + 1, r.end, gain)


def plan_steal(running: Sequence[Running], model: CostModel, launch: float, now: float,
               margin: float = defaults.STEAL_MARGIN, min_frames: int = 1,
               min_gain: float | None = None, idle: int = 1) -> Steal | None:
    """The tail to take now (at least ``min_frames`` long), or None when no steal is
    expected to bring a finish forward by ``launch * margin`` (or ``min_gain``).

    ``idle`` slots (this one included) are looking for work at once. They are handed
    out one by one, each to the victim expected to end last (with the thieves it has
    been given so far) among those it would bring forward by the gain asked, so two idle
    slots split two long victims rather than the same one twice, and a victim long
    enough for several is cut into that many parts at once (victim and thieves ending
    together) instead of being halved again while the first thief is still launching.
    This thief takes its part of the victim that ends last."""
    need = launch * margin if min_gain is None else min_gain
    model = model.with_floors(running, now)
    cands: list[tuple[Running, float]] = []
    for r in running:
        if r.done + 1 < r.end:
            cands.append((r, remaining(r, model, launch, now)[0]))
    shares = {r.index: 0 for r, _ in cands}

    def finish(rem: float, k: int) -> float:
        return rem if k == 0 else launch + (rem - launch) / (k + 1)

    for _ in range(max(1, idle)):
        pick: tuple[float, Running] | None = None
        for r, rem in cands:
            k = shares[r.index]
            if finish(rem, k) - finish(rem, k + 1) < need:
                continue
            if pick is None or finish(rem, k) > pick[0]:
                pick = (finish(rem, k), r)
        if pick is None:
            break
        shares[pick[1].index] += 1
    chosen = [(finish(rem, shares[r.index]), r) for r, rem in cands if shares[r.index]]
    if not chosen:
        return None
    victim = max(chosen, key=lambda c: c[0])[1]
    st = _best_split(victim, model, launch, now, min_frames, shares[victim.index])
    if st is None:
        return None
    # the gain rests on the victim's estimated remaining cost: ask more of it the less
    # certain that is (frames drawn independently: the variances add up)
    sd = math.sqrt(sum(model.estimate(f)[1] for f in range(victim.done + 1, victim.end + 1)))
    return st if st.gain - defaults.STEAL_GAIN_SD * sd >= need else None


def launch_costs(launches: Sequence[tuple[int, float]], model: CostModel) -> list[float]:
    """aerender start-ups observed: each launch's time to its first frame minus that
    frame's estimated cost (``launches`` holds (first frame, latency) pairs)."""
    return [max(0.0, lat - model.cost(first)) for first, lat in launches]


def learn_launch(launches: Sequence[tuple[int, float]], model: CostModel, seed: float) -> float:
    """aerender start-up: the median observed start-up, else the seed."""
    costs = launch_costs(launches, model)
    return statistics.median(costs) if costs else seed


def learn_margin(launches: Sequence[tuple[int, float]], model: CostModel,
                 floor: float = defaults.STEAL_MARGIN) -> float:
    """How much more than one launch a steal must gain: how much longer than the median
    a launch of this run has taken (relative), at least ``floor``, at most
    ``STEAL_MARGIN_MAX``."""
    costs = sorted(launch_costs(launches, model))
    if len(costs) < 2 or costs[len(costs) // 2] <= 0:
        return floor
    mid = costs[len(costs) // 2]
    return max(floor, min(defaults.STEAL_MARGIN_MAX, (costs[-1] - mid) / mid))
