"""Work stealing (pure): cost estimates, split points, when not to steal, and the policy
replayed on workloads it was not tuned on."""

from __future__ import annotations

import itertools

import pytest

from stmpo_celery.plan._chunks import makespan_bound, plan_chunks, predict_makespan
from stmpo_celery.plan._simulate import simulate
from stmpo_celery.plan._steal import (
    CostModel,
    Running,
    learn_launch,
    learn_margin,
    plan_steal,
    remaining,
)
from stmpo_celery.slot._schedule import spare_tasks

LIGHT = 0.04
LAUNCH = 25 * LIGHT


def workload(name: str) -> dict[int, float]:
    """The benchmark's workloads (bench/makespan.py), as true per-frame costs."""
    frames = range(1, 241)
    if name == "uniform":
        return {f: LIGHT for f in frames}
    if name == "straddle":  # 51 frames at 12x across the 2nd/3rd static blocks (N=4)
        return {f: LIGHT * (12 if 100 <= f <= 150 else 1) for f in frames}
    if name == "heavy-end":
        return {f: LIGHT * (10 if f >= 200 else 1) for f in frames}
    if name == "ramp":
        return {f: LIGHT * (1 + 9 * (f - 1) / 239) for f in frames}
    if name == "islands":
        return {f: LIGHT * (10 if 40 <= f <= 70 or 150 <= f <= 175 else 1) for f in frames}
    raise KeyError(name)


def test_cost_model_knows_rendered_frames_and_errs_high_nearby() -> None:
    m = CostModel({10: 1.0, 11: 1.0, 12: 1.0, 20: 5.0, 21: 5.0}, default=2.0)
    assert m.cost(10) == 1.0 and m.cost(20) == 5.0
    assert m.estimate(10)[1] == 0.0  # a measured frame is certain
    assert m.cost(15) > 4.0  # between a light and a heavy feature: assume the heavy one
    assert CostModel({}, default=2.0).cost(7) == 2.0


def test_unreached_frames_fade_into_the_runs_distribution() -> None:
    known = {f: 0.1 for f in range(1, 101)}
    known.update({f: 1.0 for f in range(101, 106)})  # a heavy feature began five frames ago
    m = CostModel(known, default=0.1, reach=10)
    near, far = m.estimate(107), m.estimate(200)
    assert near[0] > 0.7  # recent cost near the current frame
    assert abs(far[0] - m.mean) < 0.05  # the run's observed mean further away
    assert m.estimate(106)[1] < m.estimate(114)[1]  # less certain further away
    assert far[1] == pytest.approx(m.var, rel=0.2)  # ... about as uncertain as the run
    # a feature seen for longer is trusted further
    long = {**known, **{f: 1.0 for f in range(101, 131)}}
    assert CostModel(long, default=0.1, reach=10).cost(150) > m.cost(125)


def test_one_slow_frame_adds_a_fraction_and_a_change_is_believed_as_it_is_confirmed() -> None:
    known = {f: 0.1 for f in range(1, 50)}
    known[47] = 1.0  # one hiccup two frames back: a fifth of its excess
    assert CostModel(known, default=0.1, reach=50).cost(51) == pytest.approx(0.28, abs=0.02)
    spike = {f: 0.1 for f in range(1, 50)}
    spike[49] = 1.0  # one spike as the newest frame is no more than that
    assert CostModel(spike, default=0.1, reach=50).cost(51) < 0.3
    changed = {**spike, **{f: 1.0 for f in range(45, 50)}}  # five frames agree: believe it
    assert CostModel(changed, default=0.1, reach=50).cost(51) > 0.9


def test_the_reach_of_features_is_learned_from_the_run() -> None:
    """A comp whose slow frames come alone learns that a slow frame says little about
    the next ones; a run that has seen no feature end keeps the configured reach."""
    spiky = {f: (0.8 if f % 9 == 0 else 0.1) for f in range(1, 181)}
    light, heavy = CostModel(spiky, default=0.1, reach=120).reaches
    assert heavy < 10 and 8 < light < 20  # 20 spikes of 1 frame, gaps of 8 frames
    fresh = {f: 0.1 for f in range(1, 60)} | {f: 1.0 for f in range(60, 64)}
    assert CostModel(fresh, default=0.1, reach=120).reaches[1] > 120  # no heavy end seen
    # after a run of spikes, frames two past the newest spike are near the light cost
    assert CostModel(spiky, default=0.1, reach=120).cost(183) < 0.3


def test_random_spikes_do_not_make_the_schedule_slower_than_static() -> None:
    """One frame in ten at 8x, at random, over twelve comps at N = 4 and 8: a thief must
    not take two slow frames in a row for a heavy section and pay a launch for light
    ones (it did: the median comp at N = 8 ran 6% slower than the static split)."""
    import random
    import statistics

    for n in (4, 8):
        ratios = []
        for seed in range(12):
            rng = random.Random(seed)
            costs = {f: LIGHT * (8 if rng.random() < 0.1 else 1) for f in range(1, 241)}
            chunks = plan_chunks(list(costs), n, "static")
            static = simulate(costs, chunks, n, LAUNCH, steal=False).makespan
            ratios.append(static / simulate(costs, chunks, n, LAUNCH).makespan)
        assert statistics.median(ratios) >= 1.0 - 1e-9, (n, ratios)
        assert min(ratios) > 0.93, (n, ratios)


def test_a_spiky_comp_is_never_slower_than_static_when_launches_vary() -> None:
    """Every 17th frame at 8x, N=8, launches 0-0.3 s apart: a thief must not take a
    spike for a heavy section and pay a launch for light frames."""
    costs = {f: LIGHT * (8 if f % 17 == 0 else 1) for f in range(1, 241)}
    chunks = plan_chunks(list(costs), 8, "static")
    # the slots' first frames come 0-0.3 s apart, as their launches differ
    costs.update({s: costs[s] + 0.05 * (i % 7) for i, (s, _e) in enumerate(chunks)})
    static = simulate(costs, chunks, 8, LAUNCH, steal=False).makespan
    adaptive = simulate(costs, chunks, 8, LAUNCH)
    assert adaptive.makespan <= static + 1e-9
    assert adaptive.launches == 8


def test_prior_from_history_stands_in_for_the_distribution() -> None:
    known = {f: 0.1 for f in range(1, 21)}
    prior = {f: (2.0 if f > 150 else 0.1) for f in range(1, 241)}
    m = CostModel(known, default=0.1, reach=5, prior=prior)
    assert m.cost(200) > 1.5 and m.cost(100) < 0.2


def test_remaining_counts_launch_current_frame_and_tail() -> None:
    m = CostModel({}, default=1.0)
    launching = Running(0, 1, 10, 0, started_at=100.0, frame_started_at=None)
    total, tail = remaining(launching, m, launch=5.0, now=102.0)
    assert total == 3.0 + 1.0 + 9.0 and len(tail) == 9
    midway = Running(0, 1, 10, 4, started_at=100.0, frame_started_at=110.5)
    total, tail = remaining(midway, m, launch=5.0, now=111.0)
    assert total == 0.5 + 5.0  # half of frame 5 left, then frames 6-10


def test_steal_halves_a_long_tail_so_both_end_together() -> None:
    m = CostModel({f: 1.0 for f in range(1, 11)}, default=1.0)
    victim = Running(3, 1, 100, 10, started_at=0.0, frame_started_at=20.0)
    st = plan_steal([victim], m, launch=10.0, now=20.0)
    assert st is not None and st.victim == 3 and st.end == 100
    kept = st.new_end - 10  # frames 11..new_end at 1 s each
    taken = 100 - st.new_end
    assert abs(kept - (10 + taken)) <= 1  # both finish together
    assert st.start == st.new_end + 1 and st.gain > 30


def test_several_idle_slots_cut_a_long_victim_in_as_many_parts() -> None:
    m = CostModel({f: 1.0 for f in range(1, 11)}, default=1.0)
    victim = Running(3, 1, 130, 10, started_at=0.0, frame_started_at=20.0)
    st = plan_steal([victim], m, launch=10.0, now=20.0, idle=3)
    assert st is not None
    # 120 s left, 3 thieves: victim keeps x, each thief 10 + y with x = 10 + y, x + 3y = 120
    assert abs((st.end - st.start + 1) - 27.5) <= 1
    assert abs(st.gain - (120 - 37.5)) <= 1.5


def test_two_idle_slots_split_two_long_victims_not_one_twice() -> None:
    costs = {f: 1.0 for f in range(1, 300)}
    m = CostModel(costs, default=1.0)
    a = Running(0, 1, 100, 20, started_at=0.0, frame_started_at=40.0)  # 80 s left
    b = Running(1, 101, 170, 110, started_at=0.0, frame_started_at=40.0)  # 60 s left
    first = plan_steal([a, b], m, launch=5.0, now=40.0, idle=2)
    assert first is not None and first.victim == 0
    a2 = Running(0, 1, first.new_end, 20, 0.0, 40.0)
    thief = Running(2, first.start, first.end, first.start - 1, started_at=40.0,
                    frame_started_at=None)
    second = plan_steal([a2, b, thief], m, launch=5.0, now=40.0, idle=1)
    assert second is not None and second.victim == 1


def test_no_steal_when_the_gain_does_not_pay_for_the_launch() -> None:
    m = CostModel({f: 1.0 for f in range(1, 11)}, default=1.0)
    victim = Running(0, 1, 14, 10, started_at=0.0, frame_started_at=20.0)  # 4 s left
    assert plan_steal([victim], m, launch=10.0, now=20.0) is None
    ok = Running(0, 1, 40, 10, started_at=0.0, frame_started_at=20.0)  # 30 s left
    assert plan_steal([ok], m, launch=10.0, now=20.0, margin=0.5) is not None
    assert plan_steal([ok], m, launch=10.0, now=20.0, margin=1.1) is None
    last = Running(0, 1, 11, 10, started_at=0.0, frame_started_at=20.0)
    assert plan_steal([last], m, launch=0.0, now=20.0, min_gain=0.0) is None


def test_a_frame_overrunning_its_estimate_is_believed_before_it_ends() -> None:
    # 50 light frames, then frame 51 has been rendering for 2 s (50x a light frame):
    # a heavy section has begun, and the 49 frames after it are no longer ~2 s of work
    m = CostModel({f: LIGHT for f in range(2, 51)}, default=LIGHT)
    victim = Running(0, 1, 100, 50, started_at=0.0, frame_started_at=10.0)
    assert m.with_floors([victim], now=12.0).cost(52) > 10 * LIGHT
    assert m.with_floors([victim], now=10.01) is m  # not yet over its estimate
    st = plan_steal([victim], m, launch=LAUNCH, now=12.0)
    assert st is not None and st.victim == 0 and st.end == 100


def test_uniform_finish_together_means_no_steal() -> None:
    m = CostModel({f: 1.0 for f in range(1, 241)}, default=1.0)
    slots = [Running(k, 60 * k + 1, 60 * k + 60, 60 * k + 58, 0.0, 60.0) for k in range(3)]
    assert plan_steal(slots, m, launch=25.0, now=60.0, idle=4) is None


def test_learned_launch_cost_and_margin() -> None:
    m = CostModel({1: 0.5, 2: 0.5, 3: 0.5, 11: 0.5, 12: 0.5, 21: 0.5}, default=0.5)
    assert learn_launch([], m, seed=30.0) == 30.0
    launches = [(1, 2.5), (11, 2.5), (21, 4.5)]  # 2 s start-ups, one took 4 s
    assert learn_launch(launches, m, seed=30.0) == pytest.approx(2.0)
    assert learn_margin([], m, floor=0.5) == 0.5
    assert learn_margin(launches, m, floor=0.5) == pytest.approx(1.0)  # (4 - 2) / 2
    assert learn_margin([(1, 2.5), (11, 2.5)], m, floor=0.5) == 0.5


def test_spares_and_predicted_makespan() -> None:
    assert spare_tasks(4, 240) == 16 and spare_tasks(4, 4) == 0
    assert predict_makespan([(1, 60), (61, 120)], 2, 10.0, 1.0) == 70.0
    assert predict_makespan([(1, 10)] * 4, 2, 1.0, 1.0) == 22.0


def test_min_frames_bounds_the_stolen_tail() -> None:
    m = CostModel({f: 1.0 for f in range(1, 11)}, default=1.0)
    victim = Running(0, 1, 30, 10, started_at=0.0, frame_started_at=20.0)
    free = plan_steal([victim], m, launch=2.0, now=20.0, margin=0.25)
    assert free is not None and free.end - free.start + 1 < 12
    bounded = plan_steal([victim], m, launch=2.0, now=20.0, margin=0.25, min_frames=12)
    assert bounded is not None and bounded.end - bounded.start + 1 >= 12
    assert plan_steal([victim], m, launch=2.0, now=20.0, margin=0.25, min_frames=25) is None


@pytest.mark.parametrize("n", [4, 8])
@pytest.mark.parametrize("name", ["uniform", "straddle", "heavy-end", "ramp", "islands"])
def test_replayed_policy_is_never_slower_than_static(name: str, n: int) -> None:
    costs = workload(name)
    chunks = plan_chunks(list(costs), n, "static")
    static = simulate(costs, chunks, n, LAUNCH, steal=False).makespan
    adaptive = simulate(costs, chunks, n, LAUNCH)
    bound = makespan_bound(list(costs.values()), n, LAUNCH)
    assert adaptive.makespan <= static + 1e-9
    assert adaptive.makespan <= 1.45 * bound
    if name == "uniform":
        assert adaptive.launches == n  # one launch per slot, no steal


def test_replayed_straddling_heavy_section_first_render() -> None:
    costs = workload("straddle")
    chunks = plan_chunks(list(costs), 4, "static")
    static = simulate(costs, chunks, 4, LAUNCH, steal=False).makespan
    adaptive = simulate(costs, chunks, 4, LAUNCH).makespan
    bound = makespan_bound(list(costs.values()), 4, LAUNCH)
    assert static / adaptive >= 1.5 and adaptive / bound <= 1.2


def best_single_steals(costs: dict[int, float], chunks: list[tuple[int, int]],
                       launch: float) -> float:
    """The least makespan of ``chunks`` (all launched at 0) when the slots that finish
    first each take one tail of a running chunk, cut anywhere, with every frame's true
    cost known in advance (foresight no render has): the best any steal policy with one
    launch per idle slot can do."""
    def span(a: int, b: int) -> float:
        return sum(costs[f] for f in range(a, b + 1))

    ends = [launch + span(a, b) for a, b in chunks]
    t0 = min(ends)
    idle = sum(1 for e in ends if e <= t0 + 1e-9)
    assert idle == 2, "written for two slots going idle together"
    running = [c for c, e in zip(chunks, ends, strict=True) if e > t0 + 1e-9]

    def first_open(a: int, b: int) -> int:  # the frame after the one in progress at t0
        t = launch
        for f in range(a, b + 1):
            t += costs[f]
            if t > t0:
                return f + 1
        return b + 1

    best = max(ends)
    cuts = [(i, x) for i, (a, b) in enumerate(running) for x in range(first_open(a, b), b + 1)]
    for (i, x), (j, y) in itertools.combinations(cuts, 2):
        if i == j and y <= x:
            continue
        keep = {k: b for k, (_a, b) in enumerate(running)}
        thieves = []
        for k, cut in sorted(((i, x), (j, y)), key=lambda p: -p[1]):
            thieves.append(t0 + launch + span(cut, keep[k]))
            keep[k] = cut - 1
        victims = [launch + span(a, keep[k]) for k, (a, _b) in enumerate(running)]
        best = min(best, max(victims + thieves))
    return best


def test_a_first_render_of_the_straddle_steals_as_well_as_foresight_would() -> None:
    """The first render cannot know which unrendered frames are heavy; even knowing
    every frame's cost, one steal per idle slot cannot end the straddling section
    sooner than this (the thieves' cuts and victims searched exhaustively). The
    adaptive schedule, learning costs as frames finish, comes within 1% of it."""
    costs = workload("straddle")
    chunks = plan_chunks(list(costs), 4, "static")
    best = best_single_steals(costs, chunks, LAUNCH)
    adaptive = simulate(costs, chunks, 4, LAUNCH).makespan
    assert adaptive <= 1.01 * best, (adaptive, best)
