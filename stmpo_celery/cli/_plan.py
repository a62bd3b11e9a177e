"""``stmpo plan``: the spawn plan and predicted makespan, without starting anything."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from ..config import Command, RenderOptions
from ..errors import BadInput
from ._finite import POSITIVE
from ._options import options_from, setting_options
from ._render_start import _comp_label


@click.command("plan")
@click.option("--frames", required=True, help="Frames to plan for.")
@click.option("--output", default="frames_[#####].png", show_default=True,
              help="Output pattern (a movie forces one slot).")
@click.option("--cpus", type=int, help="Plan for another host with this many logical CPUs.")
@click.option("--ram-gb", type=POSITIVE, help="... and this much RAM (GB).")
@click.option("--numa-nodes", type=int, default=1, show_default=True,
              help="... with --cpus/--ram-gb: and this many NUMA nodes.")
@click.option("--smt/--no-smt", default=True, show_default=True,
              help="... with --cpus/--ram-gb: whose cores run two threads each (or not).")
@click.option("--frame-cost", type=POSITIVE, default=1.0, show_default=True,
              help="Assumed seconds per frame for the predicted makespan.")
@click.option("--project", "project", help="With --comp/--rqindex: predict the adaptive "
              "schedule from the comp's recorded frame costs (a previous render), with and "
              "without the history.")
@click.option("--comp", help="Composition the history is recorded for.")
@click.option("--rqindex", type=int, help="... or render-queue item.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@setting_options(Command.PLAN)
def plan_cmd(frames: str, output: str, cpus: int | None, ram_gb: float | None, numa_nodes: int,
             smt: bool, frame_cost: float, project: str | None, comp: str | None,
             rqindex: int | None, as_json: bool, **kw: Any) -> None:
    """Print the spawn plan (slots, CPUs, RAM, MFR, chunks) without starting anything."""
    from ..host import check_output_names, make_plan, other_host, this_host
    from ..orchestrator import check_numbers
    from ..plan import (
        makespan_bound,
        parse_frames,
        parse_output,
        predict_makespan,
    )

    options = options_from({**kw, "project": "", "frames": frames, "output": output})
    frame_list = parse_frames(frames)
    pattern = parse_output(output)
    check_output_names(pattern, frame_list)
    chunk_size = check_numbers(options, movie=not pattern.is_sequence, planning=True)
    given = click.get_current_context().get_parameter_source
    cpu_flags = [flag for name, flag in (("cpus", "--cpus"), ("numa_nodes", "--numa-nodes"),
                                         ("smt", "--smt/--no-smt"))
                 if given(name) is click.core.ParameterSource.COMMANDLINE]
    if options.numa_map and cpu_flags:
        raise BadInput(f"{', '.join(cpu_flags)} describe(s) the CPUs, as "
                       f"{options.origin('numa_map')} does, and the map's would be used: drop "
                       f"{'them' if len(cpu_flags) > 1 else 'it'} (with the map, --ram-gb "
                       "alone plans for the host it describes)")
    if options.numa_map and ram_gb is not None:
        cpus = 1  # the map says how many
    if (cpus is None) != (ram_gb is None):
        raise BadInput("pass both --cpus and --ram-gb to plan for another host")
    for name, flag in (("numa_nodes", "--numa-nodes"), ("smt", "--smt/--no-smt")):
        if cpus is None and given(name) is click.core.ParameterSource.COMMANDLINE:
            raise BadInput(f"{flag} describes another host: pass it with --cpus and --ram-gb "
                           "(this host's own topology is detected)")
    if cpus is not None and numa_nodes < 1:
        raise BadInput(f"--numa-nodes {numa_nodes}: a host has at least one NUMA node")
    if (comp is not None or rqindex is not None) and not project:
        raise BadInput("--comp/--rqindex pick the history of a project: pass --project too")
    if cpus is not None and ram_gb is not None:
        if cpus <= 0 or ram_gb <= 0:
            raise BadInput("--cpus and --ram-gb must be more than zero")
        facts = other_host(cpus, ram_gb, numa_nodes, smt, options.numa_map)
    else:
        facts = this_host(options.numa_map)
    plan = make_plan(options, frame_list, pattern.is_sequence, facts, chunk_size)
    predicted = predict_makespan(plan.chunks, plan.n_slots, options.launch_cost, frame_cost)
    bound = makespan_bound([frame_cost] * len(frame_list), plan.n_slots, options.launch_cost)
    hist_info: dict[str, Any] | None = None
    if project:
        hist_info = _plan_history(options, plan, frame_list, project, comp, rqindex)
    if as_json:
        click.echo(json.dumps({**plan.to_dict(), "predicted_makespan_s": predicted,
                               "lower_bound_s": bound, "frame_cost_s": frame_cost,
                               "history": hist_info}, indent=2))
        return
    for line in plan.lines():
        click.echo(line)
    click.echo("plan: chunks " + " ".join(f"{s}-{e}" if s != e else str(s)
                                         for s, e in plan.chunks))
    click.echo(f"plan: predicted makespan {predicted:.1f} s at {frame_cost:g} s/frame and "
               f"{options.launch_cost:g} s launch (lower bound {bound:.1f} s)")
    if hist_info is None and project:
        click.echo("plan: no history recorded for this comp: a first render")
    elif hist_info is not None:
        click.echo(f"plan: {hist_info['description']}")
        click.echo("plan: with history: chunks " + " ".join(
            f"{s}-{e}" if s != e else str(s) for s, e in hist_info["chunks"]))
        click.echo(f"plan: predicted makespan from the recorded costs: "
                   f"{hist_info['with_s']:.1f} s with history, {hist_info['without_s']:.1f} s "
                   f"without (adaptive, {hist_info['launch_s']:.1f} s launch; lower bound "
                   f"{hist_info['bound_s']:.1f} s)")


def _plan_history(options: RenderOptions, plan: Any, frames: list[int], project: str,
                  comp: str | None, rqindex: int | None) -> dict[str, Any] | None:
    """Predicted makespans of the comp's recorded costs with and without its history."""
    from ..aerender import check_target
    from ..broker import parse_broker_url
    from ..config import defaults
    from ..orchestrator import history as _history
    from ..plan import makespan_bound, plan_chunks, simulate

    if (comp is None) == (rqindex is None):
        raise BadInput("--project needs exactly one of --comp NAME or --rqindex N")
    check_target(comp, rqindex)  # the same words as render: an empty comp, an index of 0
    if not os.path.isfile(project):
        raise BadInput(f"--project {project}: no such file")
    if os.path.getsize(project) == 0:
        raise BadInput(f"--project {project}: the project file is empty")
    label = _comp_label(RenderOptions(project, "", "", comp=comp, rqindex=rqindex))
    url = options.broker or os.environ.get(defaults.BROKER_ENV)
    hist = _history.load(project, label, parse_broker_url(url) if url else None)
    if hist is None:
        return None
    costs = _history.fill(hist.costs, frames, hist.default())
    n = plan.n_slots
    chunks = _history.plan_blocks(hist, frames, n)
    without = simulate(costs, plan_chunks(frames, n, "static"), n, hist.launch)
    with_h = simulate(costs, chunks, n, hist.launch, prior=hist.costs)
    return {"description": hist.describe(), "exact": hist.exact, "chunks": chunks,
            "launch_s": hist.launch, "with_s": with_h.makespan, "without_s": without.makespan,
            "bound_s": makespan_bound(list(costs.values()), n, hist.launch)}


