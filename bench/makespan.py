"""Makespan of the adaptive schedule against the static split and the lower bound,
measured side by side in one run, on workloads the schedule was not tuned on.

    python -m bench.makespan [--slots 4,8] [--light 0.04] [--only straddle,ramp]

240 frames on the aerender simulator, launch ~25 light frames. Workloads: uniform;
``straddle`` (51 frames at 12x across the 2nd and 3rd static blocks of N=4); ``end``
(the last 41 frames at 10x); ``ramp`` (1x -> 10x); ``islands`` (two sections at 10x);
``spiky`` (one frame in ten at 8x, at random).
For each workload and slot count: ``static`` (the reference's split), ``adaptive`` on a
first render (no history), and ``adaptive`` again on a re-render that plans from the
first render's history. Makespan is first aerender launch -> last frame; the bound is
``L + max(sum(c)/N, max(c))`` with L the launch cost measured in the same run; every
figure is a ratio to the static split and to the bound. ``start`` is ``stmpo render``
executed -> a slot launching the first aerender (the simulator's own Python start-up,
which a native aerender does not have, is printed apart). The simulator's start-up is
calibrated first so that a launch as the run measures it is 25 light frames.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile

from bench.common import installed_bytecode, render, table

FRAMES = range(1, 241)


def workloads(light: float) -> dict[str, tuple[dict[str, str], list[float]]]:
    def heavy(spans: list[tuple[int, int, float]]) -> tuple[dict[str, str], list[float]]:
        knob = ",".join(f"{a}-{b}x{m:g}" for a, b, m in spans)
        cost = [light * next((m for a, b, m in spans if a <= f <= b), 1.0) for f in FRAMES]
        return {"HEAVY": knob}, cost

    return {
        "uniform": ({}, [light] * len(FRAMES)),
        "straddle": heavy([(100, 150, 12)]),
        "end": heavy([(200, 240, 10)]),
        "ramp": ({"RAMP": "1-240x10"}, [light * (1 + 9 * (f - 1) / 239) for f in FRAMES]),
        "islands": heavy([(40, 70, 10), (150, 175, 10)]),
        "spiky": heavy([(f, f, 8) for f in spikes()]),
    }


def spikes() -> list[int]:
    """One frame in ten at random (a fixed draw): slow frames alone or in pairs."""
    rng = random.Random(240)
    return [f for f in FRAMES if rng.random() < 0.1]


def calibrated_startup(launch: float, light: float, n: int = 4) -> float:
    """The simulator's start-up that makes a launch *as the run measures it* (process
    start, the renderer's own start, the first frame's latency less its cost) last
    ``launch`` seconds: the workloads are defined by launch = 25 light frames, and the
    stand-in's Python start-up must not make them harsher than that."""
    env = {"STARTUP": f"{launch:g}", "FRAME_COST": f"{light:g}"}
    s = render(f"1-{4 * n}", n, env, "--schedule", "static", project="bench calibration")
    measured = statistics.median(c["launch_s"] for c in s["chunks"] if c.get("launch_s"))
    overhead = max(0.0, measured - light - launch)
    return max(0.0, launch - overhead)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slots", default="4,8", help="comma-separated slot counts")
    ap.add_argument("--light", type=float, default=0.04, help="seconds per light frame")
    ap.add_argument("--only", default="", help="comma-separated workloads to run")
    args = ap.parse_args()
    only = {w for w in args.only.split(",") if w}
    installed_bytecode()
    startup = calibrated_startup(25 * args.light, args.light)
    print(f"simulator start-up {startup:.2f} s: a launch measured in a render is "
          f"{25 * args.light:.2f} s = 25 light frames")
    rows = [["workload", "N", "schedule", "makespan s", "static/this", "x bound", "launches",
             "start s"]]
    starts: dict[int, list[float]] = {}
    journals: dict[int, list[float]] = {}
    for n in (int(x) for x in args.slots.split(",")):
        for name, (knobs, costs) in workloads(args.light).items():
            if only and name not in only:
                continue
            env = {"STARTUP": f"{startup:g}", "FRAME_COST": f"{args.light:g}", **knobs}
            seed = ["--launch-cost", f"{25 * args.light:g}"]  # only adaptive uses it
            project = f"bench {name} {n}"
            with tempfile.TemporaryDirectory(prefix="stmpo-bench-hist-") as hist:
                runs = {
                    "static": render("1-240", n, env, "--schedule", "static",
                                     project=project),
                    "adaptive": render("1-240", n, env, "--schedule", "adaptive", *seed,
                                       project=project, history_dir=hist),
                    "+history": render("1-240", n, env, "--schedule", "adaptive", *seed,
                                       project=project, history_dir=hist),
                }
            static = runs["static"]
            launch = statistics.median(c["launch_s"] for c in static["chunks"]
                                       if c.get("launch_s")) - statistics.median(costs)
            bound = launch + max(sum(costs) / n, max(costs))
            spans = {k: s["timing"]["last_frame"] - s["timing"]["first_launch"]
                     for k, s in runs.items()}
            for k, s in runs.items():
                starts.setdefault(n, []).append(s["first_launch_s"])
                journals.setdefault(n, []).append(s["first_journal_s"])
                rows.append([name, str(n), k, f"{spans[k]:.2f}",
                             f"{spans['static'] / spans[k]:.2f}", f"{spans[k] / bound:.2f}",
                             str(s["launches"]), f"{s['first_launch_s']:.2f}"])
            rows.append([name, str(n), "bound", f"{bound:.2f}", "", "1.00", "",
                         f"L={launch:.2f}"])
    print(table(rows))
    for n, xs in starts.items():
        print(f"start -> first aerender launch, N={n}: median {statistics.median(xs):.2f} s "
              f"over {len(xs)} renders (max {max(xs):.2f} s); to the simulator's first "
              f"launch line {statistics.median(journals[n]):.2f} s")


if __name__ == "__main__":
    main()
