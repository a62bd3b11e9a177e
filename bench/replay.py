"""The adaptive schedule against the static split on comps nobody tuned it for, replayed
on known frame costs (``plan/_simulate.py``: the slots' own steal code, no processes).

    python -m bench.replay [--draws 7,8,9] [--comps 120]

For each draw, ``--comps`` random comps of 240 frames (slow frames alone or in clusters, one
or two heavy sections anywhere, at the very start or end, random walks), each at N = 4 and
8 slots and a launch of 25 and 50 light frames: the ratio static / adaptive, how many runs
are slower than static, the worst and the geometric mean. Then the heavy-at-the-start
family, the case where a first render can lose (docs/architecture.md). Figures are ratios
measured in this one run.
"""

from __future__ import annotations

import argparse
import random
import statistics

from stmpo_celery.plan._chunks import plan_chunks
from stmpo_celery.plan._simulate import simulate

LIGHT = 0.04
FRAMES = range(1, 241)
KINDS = ("spikes", "section", "two", "walk", "start", "end")


def random_comp(rng: random.Random) -> tuple[str, dict[int, float]]:
    """One comp's frame costs, of a kind drawn at random."""
    kind = rng.choice(KINDS)
    c = {f: LIGHT for f in FRAMES}
    if kind == "spikes":
        p, m = rng.uniform(0.03, 0.2), rng.uniform(2, 10)
        for f in c:
            if rng.random() < p:
                c[f] = LIGHT * m
    elif kind == "walk":
        x = 1.0
        for f in c:
            x = max(0.5, min(12.0, x * rng.uniform(0.85, 1.18)))
            c[f] = LIGHT * x
    else:
        for _ in range(2 if kind == "two" else 1):
            length, m = rng.randint(5, 80), rng.uniform(2, 12)
            first = {"start": 1, "end": 241 - length}.get(kind) or rng.randint(1, 240 - length)
            for f in range(first, first + length):
                c[f] = LIGHT * m
    return kind, c


def ratio(costs: dict[int, float], n: int, launch: float) -> float:
    """static / adaptive makespan of ``costs`` on ``n`` slots (above 1: adaptive faster)."""
    chunks = plan_chunks(list(costs), n, "static")
    static = simulate(costs, chunks, n, launch, steal=False).makespan
    return static / simulate(costs, chunks, n, launch).makespan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", default="7,8,9", help="comma-separated random seeds")
    ap.add_argument("--comps", type=int, default=120, help="random comps per draw")
    args = ap.parse_args()
    launches = (25 * LIGHT, 50 * LIGHT)
    every: list[float] = []
    for seed in (int(s) for s in args.draws.split(",")):
        rng = random.Random(seed)
        runs = []
        for i in range(args.comps):
            kind, costs = random_comp(rng)
            runs += [(ratio(costs, n, launch), f"{kind}{i} N={n} L={launch:g}")
                     for launch in launches for n in (4, 8)]
        runs.sort()
        every += [r for r, _ in runs]
        print(f"draw {seed}: {len(runs)} runs, {sum(r < 0.999 for r, _ in runs)} slower than "
              f"static, worst {runs[0][0]:.2f}x ({runs[0][1]}), geometric mean "
              f"{statistics.geometric_mean(r for r, _ in runs):.2f}x")
    print(f"all draws: {sum(r < 0.999 for r in every)} of {len(every)} runs slower than "
          f"static, worst {min(every):.2f}x")
    start = [ratio({f: LIGHT * (m if f <= last else 1) for f in FRAMES}, n, launch)
             for launch in (25 * LIGHT, 37.5 * LIGHT, 50 * LIGHT) for n in (4, 8)
             for last, m in ((10, 3), (20, 3), (10, 6), (30, 4))]
    print(f"heavy at the start: {sum(r < 0.999 for r in start)} of {len(start)} slower than "
          f"static, worst {min(start):.2f}x")


if __name__ == "__main__":
    main()
