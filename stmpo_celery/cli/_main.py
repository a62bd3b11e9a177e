"""The ``stmpo`` command line.

Shared options fall back to ``STMPO_*`` environment variables and profiles through
:mod:`stmpo_celery.config._settings`; every error is one line on stderr with a documented
exit code (:class:`stmpo_celery.errors.ExitCode`), never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..config import SETTINGS, Command, RenderOptions, resolve
from ..errors import BadInput, ExitCode, StmpoError
from ..text import shell_quote
from ._finite import FINITE, NON_NEGATIVE
from ._options import setting_options
from ._render_start import (
    _comp_label,
    _early_redis,
    _EarlyCancel,
    _task_frames,
    write_cancelled_early,
)

F = Callable[..., Any]


def _resolved(kw: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    flags = {k: kw.get(k) for k in SETTINGS}
    return resolve(flags, kw.get("profile"))


def _options_from(kw: dict[str, Any]) -> RenderOptions:
    resolved = _resolved(kw)
    values = {k: v for k, (v, _src) in resolved.items()}
    return RenderOptions(
        project=kw["project"], frames=kw["frames"], output=kw["output"],
        comp=kw.get("comp"), rqindex=kw.get("rqindex"), aerender=kw.get("aerender"),
        summary=kw.get("summary"), rs_template=kw.get("rs_template"),
        om_template=kw.get("om_template"), mem_usage=kw.get("mem_usage"),
        continue_on_missing_footage=bool(kw.get("continue_on_missing_footage")),
        verbose=bool(kw.get("verbose")), progress=kw.get("progress") or "auto",
        flower=kw.get("flower"), flower_url_prefix=kw.get("flower_url_prefix"),
        flower_linger=float(kw.get("flower_linger") or 0.0),
        sources={k: src for k, (_v, src) in resolved.items() if src != "default"},
        **values,
    )


class _LazyGroup(click.Group):
    """Commands that live in their own modules are imported only when run or listed, so
    ``stmpo render`` does not pay for the bundle, farm, fonts and monitoring code."""

    LAZY = {"bundle": ("._bundle", "bundle_command"),
            "inspect": ("._inspect", "inspect_command"),
            "fonts": ("._fonts", "fonts_group"),
            "status": ("._monitor", "status_command"),
            "host": ("._monitor", "host_group"),
            "farm": ("._farm", "farm_group"),
            "versions": ("._farm", "versions_group")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY and name not in self.commands:
            import importlib

            from ._help import add_examples

            module, attr = self.LAZY[name]
            command = getattr(importlib.import_module(module, __package__), attr)
            add_examples(command, name)
            self.add_command(command, name)
        return super().get_command(ctx, name)


@click.group(cls=_LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="stmpo")
def cli() -> None:
    """Render one After Effects frame range with N pinned aerender slots on this host."""


@cli.command()
@click.option("--project", required=True, help="The .aep project file.")
@click.option("--comp", help="Composition name to render [default: none: or --rqindex].")
@click.option("--rqindex", type=int,
              help="Render-queue item to render (1-based) [default: none: or --comp].")
@click.option("--frames", required=True,
              help="Frames, an OpenJD range expression: 1-240, 1-10,50-60, 1-240:5, -5--1, 7.")
@click.option("--task", "task_of", metavar="I/N",
              help="Render only task I of N: FRAMES cut in order into N near-equal pieces "
                   "(the big-task job template) [default: every frame].")
@click.option("--output", required=True, help="Output pattern, e.g. /renders/shot_[#####].png.")
@click.option("--aerender", "--aerender_path", "aerender",
              help="aerender path [default: $AERENDER_PATH, else PATH, else the standard "
                   "install folders].")
@click.option("--summary", help="Write a JSON summary of the run here [default: none].")
@click.option("--rs-template", help="aerender -RStemplate [default: the queue item's].")
@click.option("--om-template", help="aerender -OMtemplate [default: the queue item's].")
@click.option("--mem-usage", type=(click.IntRange(0, 100), click.IntRange(1, 100)),
              help="aerender -mem_usage IMAGE_CACHE% MAX% [default: After Effects' own].")
@click.option("--continue-on-missing-footage", is_flag=True, default=False,
              help="aerender -continueOnMissingFootage [default: off: missing footage fails].")
@click.option("--flower", help="Start Flower for this run on [HOST:]PORT [default: no Flower].")
@click.option("--flower-url-prefix",
              help="URL prefix for Flower behind a reverse proxy [default: none].")
@click.option("--flower-linger", type=NON_NEGATIVE, default=0.0, show_default=True,
              help="Keep the run's Flower up this many seconds after a failure, to inspect "
                   "it (it serves what it saw; the run itself is over).")
@click.option("--progress", type=click.Choice(["auto", "bar", "openjd"]), default="auto",
              show_default=True,
              help="Progress as a bar (terminal) or OpenJD directives; auto picks by TTY.")
@click.option("-v", "--verbose", is_flag=True, help="Echo aerender lines under the bar too.")
@setting_options(Command.RENDER)
def render(**kw: Any) -> None:
    """Render FRAMES of one comp with N parallel aerender slots on this host."""
    from ..host import make_host_plan, reap_run_dirs, remove_run_dir

    started = time.time()
    # Until the run takes over its own signals, a cancel stops here: nothing may be left.
    early = _EarlyCancel.install()  # main() installed it already; this returns it
    options = prep = embedded = None
    try:
        from ..orchestrator import create_outputs, prepare

        if kw.get("task_of"):
            kw["frames"] = _task_frames(kw["frames"], kw["task_of"])
        options = _options_from(kw)
        prep = prepare(options)
        make_host_plan(prep)  # NUMA map, RAM: checked before anything is created
        # runs killed outright left their folders (with secrets) behind, maybe renderers
        # too: those stop before this run claims an output they may still be writing
        reap_run_dirs()
        create_outputs(prep)  # folders, summary probe, the output lock: the last step
        plan = make_host_plan(prep)  # for the frames left to render
        hist = None
        if options.history and plan.schedule == "adaptive" and len(plan.chunks) > 1:
            from ..orchestrator import history as _history

            hist = _history.load(prep.project, _comp_label(options), prep.broker)
            if hist is not None:
                plan.chunks = _history.plan_blocks(hist, prep.to_render, plan.n_slots)
                plan.notes.insert(0, hist.describe() + ": first blocks cut to equal predicted cost")
        embedded = _early_redis(prep)
        from ..orchestrator import Run  # Celery loads (~0.2-0.4 s) while Redis comes up

        run = Run(prep, plan, stdout=sys.stdout, tty=sys.stdout.isatty(), embedded=embedded)
        early.run = run  # a cancel from here on is the run's: it stops and cleans up
        embedded = None  # the run owns it now
        run.history = hist
        code = run.execute()
    except _EarlyCancel.Cancelled as cancel:
        code = cancel.code
        click.echo(f"stmpo: CANCELLED by {cancel.words} before the render started: "
                   "nothing was rendered")
        summary = options.summary if options is not None else kw.get("summary")
        if summary:  # nothing imported from here on: the cancel may have cut one short
            write_cancelled_early(summary, prep, cancel.name, code, started)
    finally:
        if embedded is not None:
            embedded.stop()
            remove_run_dir(embedded.run_dir)
        if prep is not None:  # released by the run; here too
            prep.release()
        early.uninstall()
    # Everything is stopped, cleaned and flushed: skip the interpreter's slow teardown
    # of Celery's modules (a render host waits on this exit to start the next task).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))


@cli.command("plan")
@click.option("--frames", required=True, help="Frames to plan for.")
@click.option("--output", default="frames_[#####].png", show_default=True,
              help="Output pattern (a movie forces one slot).")
@click.option("--cpus", type=int, help="Plan for another host with this many logical CPUs.")
@click.option("--ram-gb", type=FINITE, help="... and this much RAM (GB).")
@click.option("--numa-nodes", type=int, default=1, show_default=True)
@click.option("--smt/--no-smt", default=True, show_default=True)
@click.option("--frame-cost", type=FINITE, default=1.0, show_default=True,
              help="Assumed seconds per frame for the predicted makespan.")
@click.option("--project", "project", help="With --comp/--rqindex: predict from the comp's "
              "recorded frame costs (a previous render), with and without the history.")
@click.option("--comp", help="Composition the history is recorded for.")
@click.option("--rqindex", type=int, help="... or render-queue item.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@setting_options(Command.PLAN)
def plan_cmd(frames: str, output: str, cpus: int | None, ram_gb: float | None, numa_nodes: int,
             smt: bool, frame_cost: float, project: str | None, comp: str | None,
             rqindex: int | None, as_json: bool, **kw: Any) -> None:
    """Print the spawn plan (slots, CPUs, RAM, MFR, chunks) without starting anything."""
    from ..host import make_plan, other_host, this_host
    from ..orchestrator import check_numbers
    from ..plan import makespan_bound, parse_frames, parse_output, predict_makespan

    options = _options_from({**kw, "project": "", "frames": frames, "output": output})
    frame_list = parse_frames(frames)
    pattern = parse_output(output)
    chunk_size = check_numbers(options)
    if (cpus is None) != (ram_gb is None):
        raise BadInput("pass both --cpus and --ram-gb to plan for another host")
    given = click.get_current_context().get_parameter_source
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
    from ..broker import parse_broker_url
    from ..config import defaults
    from ..orchestrator import history as _history
    from ..plan import makespan_bound, plan_chunks, simulate

    if (comp is None) == (rqindex is None):
        raise BadInput("--project needs exactly one of --comp NAME or --rqindex N")
    if not os.path.isfile(project):
        raise BadInput(f"--project {project}: no such file")
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


@cli.group()
def config() -> None:
    """Inspect settings."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@setting_options(Command.CONFIG)
def config_show(as_json: bool, **kw: Any) -> None:
    """Print every effective setting and where it came from."""
    from ..broker import mask_url
    from ._auto import auto_notes

    resolved = _resolved(kw)
    for name, (value, _source) in resolved.items():  # show nothing render would refuse
        SETTINGS[name].check(value)
    _check_readable(resolved)
    notes = auto_notes({k: v for k, (v, _s) in resolved.items()})

    def safe(name: str, value: Any) -> Any:
        if SETTINGS[name].secret and value:
            return "***"
        return mask_url(str(value)) if name == "broker" and value else value

    if as_json:
        click.echo(json.dumps({k: {"value": safe(k, v), "source": s, **(
            {"means": notes[k]} if k in notes else {})} for k, (v, s) in resolved.items()},
            indent=2))
        return
    rows = [(name, SETTINGS[name].shown(safe(name, value)), source)
            for name, (value, source) in resolved.items()]
    width, vwidth = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    for name, shown, source in rows:
        means = f"  = {notes[name]}" if name in notes else ""
        click.echo(f"{name:<{width}}  {shown:<{vwidth}}  {source:<8}{means}".rstrip())


def _check_readable(resolved: dict[str, tuple[Any, str]]) -> None:
    """What a render reads before it starts: the broker URL parses, the NUMA map loads on
    this host, the log folder can be made (a session fails on them here, not in a task)."""
    from ..broker import parse_broker_url
    from ..host import this_host

    broker, log_dir = resolved["broker"][0], resolved["log_dir"][0]
    if broker:
        parse_broker_url(str(broker))
    if resolved["numa_map"][0]:
        this_host(str(resolved["numa_map"][0]))
    if log_dir:
        probe = os.path.abspath(str(log_dir))
        while not os.path.exists(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
            raise BadInput(f"log folder {log_dir} ({resolved['log_dir'][1]}) cannot be "
                           f"created: {probe} is not a writable folder; fix it or leave it "
                           "unset")


@cli.command()
@click.option("--dir", "directory", default="demo", show_default=True,
              help="Where the demo project, frames and logs go.")
@click.option("--frames", default="1-240", show_default=True, help="Frames to render.")
@click.option("--concurrency", type=int, default=4, show_default=True,
              help="Slots (simulated aerender processes).")
@click.option("--frame-cost", type=FINITE, default=0.04, show_default=True,
              help="Simulated seconds per frame.")
@click.option("--startup", type=FINITE, default=1.0, show_default=True,
              help="Simulated After Effects start-up seconds.")
def demo(directory: str, frames: str, concurrency: int, frame_cost: float, startup: float) -> None:
    """Render a simulated 240-frame comp with the aerender simulator and an embedded Redis."""
    root = Path(directory).resolve()
    (root / "renders").mkdir(parents=True, exist_ok=True)
    project = root / "demo.aep"
    if not project.exists():
        project.write_bytes(b"stmpo demo project (rendered by stmpo-fake-aerender)\n")
    fake = Path(sys.executable).with_name("stmpo-fake-aerender")
    os.environ.setdefault("STMPO_FAKE_STARTUP", str(startup))
    os.environ.setdefault("STMPO_FAKE_FRAME_COST", str(frame_cost))
    args = ["render", "--project", str(project), "--comp", "Main Comp", "--frames", frames,
            "--output", str(root / "renders" / "demo_[#####].png"),
            "--aerender", str(fake) if fake.exists() else "stmpo-fake-aerender",
            "--concurrency", str(concurrency), "--no-skip-existing",
            # the simulator needs little RAM and CPU: size the plan for it
            "--ram-per-process-gb", "0.5", "--threads-per-slot", "1",
            "--summary", str(root / "summary.json"), "--log-dir", str(root / "logs")]
    click.echo("stmpo " + " ".join(shell_quote(a) for a in args), err=True)
    cli.main(args=args, prog_name="stmpo", standalone_mode=False)


@cli.command()
@click.option("--aerender", "--aerender_path", "aerender",
              help="aerender to check [default: $AERENDER_PATH, PATH, standard locations].")
@click.option("--broker", help="Redis URL to check [default: $STMPO_BROKER_URL, else the host "
                               "service, else an embedded Redis].")
@click.option("--output-dir", help="Where frames will be written, for the disk space check "
                                   "[default: no disk check].")
@click.option("--min-ram-gb", type=FINITE, default=4.0, show_default=True,
              help="Available RAM below this fails the check (GB).")
@click.option("--min-disk-gb", type=FINITE, default=1.0, show_default=True,
              help="Free space in --output-dir below this fails the check (GB).")
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output [default: one line per check].")
def doctor(aerender: str | None, broker: str | None, output_dir: str | None,
           min_ram_gb: float, min_disk_gb: float, as_json: bool) -> None:
    """Check this host for a render; exit 3 when a check fails."""
    from ..monitor import run_checks

    checks = run_checks(aerender, broker, output_dir, min_ram_gb, min_disk_gb)
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        for c in checks:
            click.echo(c.line())
    failed = [c for c in checks if c.fatal and not c.ok]
    if failed:
        reason = (f"stmpo doctor: {len(failed)} check(s) failed: "
                  + "; ".join(f"{c.name}: {c.detail}" for c in failed))
        click.echo(reason, err=True)
        if not sys.stdout.isatty():  # an OpenJD environment: say why in the monitor
            from ..text import one_line

            click.echo(f"openjd_fail: {one_line(reason)}")
        sys.exit(int(ExitCode.ENVIRONMENT))


def _register_commands() -> None:
    """Examples for the commands defined here; lazy ones get theirs when loaded."""
    from ._help import add_examples, set_examples

    set_examples(cli, "")
    for name, command in list(cli.commands.items()):
        add_examples(command, name)


_register_commands()




def _error(message: str, args: list[str] | None = None) -> None:
    """One line on stderr; for a render that reports to OpenJD (``--progress openjd``, or
    auto without a terminal), also the ``openjd_fail`` directive naming the problem."""
    from ..text import one_line

    click.echo(f"stmpo: error: {one_line(message)}", err=True)
    if args and args[0] == "render" and _progress_mode(args) == "openjd":
        click.echo(f"openjd_fail: {one_line(message)}")


def _progress_mode(args: list[str]) -> str:
    mode = "auto"
    for i, arg in enumerate(args):
        if arg == "--progress" and i + 1 < len(args):
            mode = args[i + 1]
        elif arg.startswith("--progress="):
            mode = arg.split("=", 1)[1]
    if mode == "auto":
        return "bar" if sys.stdout.isatty() else "openjd"
    return mode


def _scrub_secrets(argv: list[str]) -> None:
    """Hide passwords given on the command line from ``ps`` (this process and the slots
    it forks); children get them through a 0600 file or stdin, never argv."""
    if not any(a.startswith(("--broker", "--flower-auth")) for a in argv):
        return  # nothing to hide: no broker client imported for nothing (~70 ms)
    from ..broker import url_secrets
    from ..host import scrub_argv

    found: list[str] = []
    for i, arg in enumerate(argv):
        for flag in ("--broker", "--flower-auth"):
            if arg == flag and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            else:
                continue
            found += url_secrets(value) if flag == "--broker" else [value.partition(":")[2]]
    scrub_argv(found)


def main(argv: list[str] | None = None) -> None:
    """Entry point: map every failure to one line and a named exit code."""
    with contextlib.suppress(ValueError):  # not the main thread: nothing was installed
        signal.signal(signal.SIGINT, signal.default_int_handler)
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["render"]:  # from the first moment: a cancel ends with its code
            _EarlyCancel.install()
        if argv is None:
            _scrub_secrets(args)
        cli.main(args=argv, prog_name="stmpo", standalone_mode=False)
    except _EarlyCancel.Cancelled as cancel:  # while the command line is read
        click.echo(f"stmpo: CANCELLED by {cancel.words} before the render started: "
                   "nothing was rendered")
        sys.exit(int(cancel.code))
    except StmpoError as exc:
        _error(exc.message, args)
        sys.exit(int(exc.code))
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        _error(f"{exc.format_message()}{hint}", args)
        sys.exit(int(ExitCode.BAD_INPUT))
    except click.Abort:
        sys.exit(int(ExitCode.INTERRUPTED))
    except KeyboardInterrupt:
        sys.exit(int(ExitCode.INTERRUPTED))
    finally:
        if _EarlyCancel.current is not None:  # the command line was refused before render
            _EarlyCancel.current.uninstall()


if __name__ == "__main__":
    main()
