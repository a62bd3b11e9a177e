"""Makespan of every schedule against the lower bound, measured side by side.

    python -m bench.makespan [--slots 4] [--light 0.04]

Three workloads on 240 frames with the aerender simulator, a launch cost of ~25
light frames: uniform; a heavy section (50 frames ten times slower, inside one
static block); a ramp (cost rising 1x to 10x through the range). Makespan is
first aerender launch -> last frame (the schedule's own time); the bound is
``L + max(sum(c)/N, max(c))`` with L the start-up measured in the same run.
"""

from __future__ import annotations

import argparse

from bench.common import render, table

SCHEDULES = ("adaptive", "guided", "static", "fixed")


def workloads(light: float) -> dict[str, tuple[dict[str, str], list[float]]]:
    frames = range(1, 241)
    heavy = {f: (10.0 if 131 <= f <= 180 else 1.0) for f in frames}
    ramp = {f: 1.0 + 9.0 * (f - 1) / 239 for f in frames}
    return {
        "uniform": ({}, [light] * 240),
        "heavy": ({"HEAVY": "131-180x10"}, [light * heavy[f] for f in frames]),
        "ramp": ({"RAMP": "1-240x10"}, [light * ramp[f] for f in frames]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--light", type=float, default=0.04, help="seconds per light frame")
    ap.add_argument("--only", default="", help="comma-separated workloads to run")
    args = ap.parse_args()
    only = {w for w in args.only.split(",") if w}
    startup = 25 * args.light
    rows = [["workload", "schedule", "makespan s", "x bound", "static/this", "chunks", "wall s"]]
    for name, (knobs, costs) in workloads(args.light).items():
        if only and name not in only:
            continue
        results = {}
        for sched in SCHEDULES:
            extra = ["--schedule", sched, "--launch-cost", f"{startup:g}"]
            if sched == "fixed":
                extra += ["--chunk-size", "20"]
            s = render("1-240", args.slots, {"STARTUP": f"{startup:g}",
                                             "FRAME_COST": f"{args.light:g}", **knobs}, *extra)
            t = s["timing"]
            results[sched] = (t["last_frame"] - t["first_launch"], s)
        static_launch = [c["launch_s"] for c in results["static"][1]["chunks"]
                         if c.get("launch_s")]
        launch = sorted(static_launch)[len(static_launch) // 2] - costs[0]
        bound = launch + max(sum(costs) / args.slots, max(costs))
        for sched in SCHEDULES:
            span, s = results[sched]
            ran = [c for c in s["chunks"] if c["status"] == "done"]
            rows.append([name, sched, f"{span:.2f}", f"{span / bound:.2f}",
                         f"{results['static'][0] / span:.2f}", str(len(ran)),
                         f"{s['wall_s']:.2f}"])
        rows.append([name, "bound", f"{bound:.2f}", "1.00", "", "", f"(L={launch:.2f})"])
    print(table(rows))


if __name__ == "__main__":
    main()
