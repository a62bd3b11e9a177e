"""Work stealing (pure): cost estimates, split points, when not to steal."""

from __future__ import annotations

from stmpo_celery.plan._chunks import predict_makespan
from stmpo_celery.plan._steal import CostModel, Running, learn_launch, plan_steal, remaining
from stmpo_celery.slot._schedule import spare_tasks


def test_cost_model_knows_rendered_frames_and_errs_high_between() -> None:
    m = CostModel({10: 1.0, 20: 5.0}, default=2.0)
    assert m.cost(10) == 1.0 and m.cost(20) == 5.0
    assert m.cost(15) == 5.0  # between a light and a heavy frame: assume heavy
    assert m.cost(5) == 1.0 and m.cost(30) == 5.0  # beyond: the nearest
    assert CostModel({}, default=2.0).cost(7) == 2.0


def test_remaining_counts_launch_current_frame_and_tail() -> None:
    m = CostModel({}, default=1.0)
    launching = Running(0, 1, 10, 0, started_at=100.0, frame_started_at=None)
    total, tail = remaining(launching, m, launch=5.0, now=102.0)
    assert total == 3.0 + 1.0 + 9.0 and len(tail) == 9
    midway = Running(0, 1, 10, 4, started_at=100.0, frame_started_at=110.5)
    total, tail = remaining(midway, m, launch=5.0, now=111.0)
    assert total == 0.5 + 5.0  # half of frame 5 left, then frames 6-10


def test_steal_halves_a_long_tail_accounting_for_the_launch() -> None:
    m = CostModel({f: 1.0 for f in range(1, 11)}, default=1.0)
    victim = Running(3, 1, 100, 10, started_at=0.0, frame_started_at=20.0)
    st = plan_steal([victim], m, launch=10.0, now=20.0, min_gain=1.0)
    assert st is not None and st.victim == 3 and st.end == 100
    kept = st.new_end - 10  # frames 11..new_end at 1 s each
    taken = 100 - st.new_end
    assert abs(kept - (10 + taken)) <= 1  # both finish together
    assert st.start == st.new_end + 1 and st.gain > 30


def test_no_steal_when_the_tail_is_shorter_than_a_launch() -> None:
    m = CostModel({f: 1.0 for f in range(1, 11)}, default=1.0)
    victim = Running(0, 1, 14, 10, started_at=0.0, frame_started_at=20.0)
    assert plan_steal([victim], m, launch=10.0, now=20.0, min_gain=2.5) is None
    last = Running(0, 1, 11, 10, started_at=0.0, frame_started_at=20.0)
    assert plan_steal([last], m, launch=0.0, now=20.0, min_gain=0.0) is None


def test_thief_picks_the_chunk_whose_finish_it_moves_most() -> None:
    costs = {f: 1.0 for f in range(1, 200)}
    costs.update({f: 10.0 for f in range(100, 110)})
    m = CostModel(costs, default=1.0)
    light = Running(0, 1, 60, 30, started_at=0.0, frame_started_at=30.0)
    heavy = Running(1, 100, 160, 109, started_at=0.0, frame_started_at=30.0)
    st = plan_steal([light, heavy], m, launch=5.0, now=30.0, min_gain=1.0)
    assert st is not None and st.victim == 1


def test_uniform_finish_together_means_no_steal() -> None:
    m = CostModel({f: 1.0 for f in range(1, 241)}, default=1.0)
    slots = [Running(k, 60 * k + 1, 60 * k + 60, 60 * k + 58, 0.0, 60.0) for k in range(3)]
    assert plan_steal(slots, m, launch=25.0, now=60.0, min_gain=6.0) is None


def test_learned_launch_cost() -> None:
    m = CostModel({1: 0.5, 2: 0.5, 3: 0.5}, default=0.5)
    assert learn_launch([], m, seed=30.0) == 30.0
    assert learn_launch([2.5, 2.4, 9.0], m, seed=30.0) == 2.0


def test_spares_and_predicted_makespan() -> None:
    assert spare_tasks(4, 240) == 16 and spare_tasks(4, 4) == 0
    assert predict_makespan([(1, 60), (61, 120)], 2, 10.0, 1.0) == 70.0
    assert predict_makespan([(1, 10)] * 4, 2, 1.0, 1.0) == 22.0


def test_min_frames_bounds_the_stolen_tail() -> None:
    m = CostModel({f: 1.0 for f in range(1, 11)}, default=1.0)
    victim = Running(0, 1, 30, 10, started_at=0.0, frame_started_at=20.0)
    free = plan_steal([victim], m, launch=2.0, now=20.0, min_gain=0.5)
    assert free is not None and free.end - free.start + 1 < 12
    bounded = plan_steal([victim], m, launch=2.0, now=20.0, min_gain=0.5, min_frames=12)
    assert bounded is not None and bounded.end - bounded.start + 1 >= 12
    assert plan_steal([victim], m, launch=2.0, now=20.0, min_gain=0.5, min_frames=25) is None
