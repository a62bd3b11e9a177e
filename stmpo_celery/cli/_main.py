"""The ``stmpo`` command line.

Shared options fall back to ``STMPO_*`` environment variables and profiles through
:mod:`stmpo_celery.config._settings`; every error is one line on stderr with a documented
exit code (:class:`stmpo_celery.errors.ExitCode`), never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..config import Command, defaults
from ..errors import BadInput, EnvironmentProblem, ExitCode, StmpoError
from ._finite import NON_NEGATIVE, POSITIVE
from ._once import repeated_option
from ._options import options_from, setting_options
from ._render_start import (
    _comp_label,
    _early_redis,
    _EarlyCancel,
    _task_frames,
    write_cancelled_early,
)

F = Callable[..., Any]


class _LazyGroup(click.Group):
    """Commands that live in their own modules are imported only when run or listed, so
    ``stmpo render`` does not pay for the bundle, farm, fonts and monitoring code."""

    LAZY = {"bundle": ("._bundle", "bundle_command"),
            "inspect": ("._inspect", "inspect_command"),
            "fonts": ("._fonts", "fonts_group"),
            "status": ("._monitor", "status_command"),
            "host": ("._monitor", "host_group"),
            "farm": ("._farm", "farm_group"),
            "versions": ("._farm", "versions_group"),
            "plan": ("._plan", "plan_cmd"),
            "config": ("._config", "config")}

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
    from ..host import (
        forget_env,
        make_host_plan,
        raise_fd_limit,
        reap_run_dirs,
        remove_run_dir,
    )

    started = time.time()
    # Until the run takes over its own signals, a cancel stops here: nothing may be left.
    early = _EarlyCancel.install()  # main() installed it already; this returns it
    options = prep = embedded = None
    try:
        from ..orchestrator import create_outputs, prepare

        if kw.get("task_of"):
            kw["frames"] = _task_frames(kw["frames"], kw["task_of"], kw.get("output") or "")
        options = options_from(kw)
        prep = prepare(options)
        forget_env(defaults.SECRET_ENVS)  # read: no process started from here has them
        first = make_host_plan(prep)  # NUMA map, RAM: checked before anything is created
        short = raise_fd_limit(defaults.FDS_PER_RUN + defaults.FDS_PER_SLOT * first.n_slots)
        if short is not None:  # else Redis and the slots fail at random, mid-run
            raise EnvironmentProblem(short)
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

        early.check()  # a cancel an at-fork hook swallowed while Redis was started
        run = Run(prep, plan, stdout=sys.stdout, tty=sys.stdout.isatty(), embedded=embedded)
        early.attach(run)  # a cancel from here on is the run's: it stops and cleans up
        embedded = None  # the run owns it now
        run.history = hist
        code = run.execute()
    except BaseException as exc:  # a cancel, maybe wrapped by the import it cut short
        cancel = _EarlyCancel.found_in(exc)
        if cancel is None:
            raise
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


@cli.command()
@click.option("--dir", "directory", default="demo", show_default=True,
              help="Where the demo project, frames and logs go.")
@click.option("--frames", default="1-240", show_default=True, help="Frames to render.")
@click.option("--concurrency", type=int, default=4, show_default=True,
              help="Slots (simulated aerender processes).")
@click.option("--frame-cost", type=POSITIVE, default=0.04, show_default=True,
              help="Simulated seconds per frame.")
@click.option("--startup", type=NON_NEGATIVE, default=1.0, show_default=True,
              help="Simulated After Effects start-up seconds.")
def demo(directory: str, frames: str, concurrency: int, frame_cost: float, startup: float) -> None:
    """Render a simulated 240-frame comp with the aerender simulator and an embedded Redis."""
    from ..host import uncreatable
    from ..plan import parse_frames

    parse_frames(frames)  # bad input: one line, before anything is written
    if concurrency < 0:
        raise BadInput(f"--concurrency {concurrency}: pass 0 (auto) or a number of slots")
    if not directory.strip():
        raise BadInput("--dir is empty: name the folder the demo writes to")
    blocked = uncreatable(directory)
    if blocked is not None:
        raise BadInput(f"--dir {directory} cannot be created: {' '.join(blocked)}")
    root = Path(directory).resolve()
    made = [d for d in (root, root / "renders") if not d.exists()]
    try:
        (root / "renders").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--dir {directory} cannot be created ({exc.strerror or exc}): "
                       "pick a folder you can write") from None
    project = root / "demo.aep"
    if not project.exists():
        project.write_bytes(b"stmpo demo project (rendered by stmpo-fake-aerender)\n")
        made.append(project)
    fake = Path(sys.executable).with_name("stmpo-fake-aerender")
    typed = click.get_current_context().get_parameter_source
    for var, name, value in (("STMPO_FAKE_STARTUP", "startup", startup),
                             ("STMPO_FAKE_FRAME_COST", "frame_cost", frame_cost)):
        if typed(name) is click.core.ParameterSource.COMMANDLINE:  # a flag beats the variable
            os.environ[var] = str(value)
        else:
            os.environ.setdefault(var, str(value))
    args = ["render", "--project", str(project), "--comp", "Main Comp", "--frames", frames,
            "--output", str(root / "renders" / "demo_[#####].png"),
            "--aerender", str(fake) if fake.exists() else "stmpo-fake-aerender",
            "--concurrency", str(concurrency), "--no-skip-existing",
            # the simulator needs little RAM and CPU: size the plan for it
            "--ram-per-process-gb", "0.5", "--threads-per-slot", "1",
            "--summary", str(root / "summary.json"), "--log-dir", str(root / "logs")]
    from ..host import shell_join

    click.echo(f"stmpo demo: {shell_join(['stmpo', *args])}")
    try:
        cli.main(args=args, prog_name="stmpo", standalone_mode=False)
    except (StmpoError, click.ClickException):  # refused before it started: leave nothing
        for path in sorted(made, key=lambda p: (p.is_dir(), -len(p.parts))):  # files first
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink()
        raise


@cli.command()
@click.option("--aerender", "--aerender_path", "aerender",
              help="aerender to check [default: $AERENDER_PATH, PATH, standard locations].")
@click.option("--broker", help="Redis URL to check [default: $STMPO_BROKER_URL, else the host "
                               "service, else an embedded Redis].")
@click.option("--output-dir", help="Where frames will be written, for the disk space check "
                                   "[default: the current folder].")
@click.option("--min-ram-gb", type=NON_NEGATIVE, default=4.0, show_default=True,
              help="Available RAM below this fails the check (GB).")
@click.option("--min-disk-gb", type=NON_NEGATIVE, default=1.0, show_default=True,
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
        # an OpenJD environment: say why in the monitor (not after --json's document)
        if not sys.stdout.isatty() and not as_json:
            from ..text import directive

            click.echo(directive("openjd_fail", reason))
        sys.exit(int(ExitCode.ENVIRONMENT))


def _register_commands() -> None:
    """Examples for the commands defined here; lazy ones get theirs when loaded."""
    from ._help import add_examples, set_examples

    set_examples(cli, "")
    for name, command in list(cli.commands.items()):
        add_examples(command, name)


_register_commands()




def _error(message: str, args: list[str] | None = None) -> None:
    """One line on stderr; for a command an OpenJD session runs — a render that reports to
    OpenJD (``--progress openjd``, or auto without a terminal), the job's font install
    and removal without a terminal — also the ``openjd_fail`` directive naming the
    problem, so the Deadline monitor says why."""
    from ..text import directive, one_line

    click.echo(f"stmpo: error: {one_line(message)}", err=True)
    if not args:
        return
    if (args[0] == "render" and _progress_mode(args) == "openjd") or (
            args[0] == "fonts" and not sys.stdout.isatty()):
        click.echo(directive("openjd_fail", message))


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


#: options whose value holds a secret: a Redis URL's password, or user:password
_URL_SECRETS = ("--broker", "--farm")
_AUTH_SECRETS = ("--flower-auth", "--auth")


def _option_values(argv: list[str], flag: str) -> list[str]:
    """The values given to ``flag`` on a command line not parsed (yet), in order: as
    ``FLAG VALUE`` or ``FLAG=VALUE``."""
    found: list[str] = []
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith(flag + "="):
            found.append(arg.partition("=")[2])
    return found


def _scrub_secrets(argv: list[str]) -> None:
    """Hide passwords given on the command line from ``ps`` (this process and the slots
    it forks, a farm worker or Flower for as long as it lives); children get them
    through a 0600 file or stdin, never argv."""
    flags = _URL_SECRETS + _AUTH_SECRETS
    if not any(a in flags or a.startswith(tuple(f + "=" for f in flags)) for a in argv):
        return  # nothing to hide: no broker client imported for nothing (~70 ms)
    from ..broker import url_secrets
    from ..host import scrub_argv

    found: list[str] = []
    for flag in flags:
        for value in _option_values(argv, flag):
            found += url_secrets(value) if flag in _URL_SECRETS else [value.partition(":")[2]]
    scrub_argv(found)


def _utf8_pipes() -> None:
    """Output into a pipe or a file is UTF-8, as the OpenJD runtime (and the farm) read it:
    Windows would write its ANSI code page, which cannot hold every name (a font or comp
    named in Japanese crashed the command, after it had done its work) and garbles the
    rest. A console keeps its own encoding."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            if not stream.isatty():
                reconfigure = stream.reconfigure  # type: ignore[union-attr]
                reconfigure(encoding="utf-8", errors="backslashreplace")


def main(argv: list[str] | None = None) -> None:
    """Entry point: map every failure to one line and a named exit code."""
    with contextlib.suppress(ValueError):  # not the main thread: nothing was installed
        signal.signal(signal.SIGINT, signal.default_int_handler)
    args = sys.argv[1:] if argv is None else argv
    started = time.time()
    if argv is None:
        _utf8_pipes()
    try:
        if args[:1] == ["render"]:  # from the first moment: a cancel ends with its code
            _EarlyCancel.install()
        else:  # a kill that is a cancel runs the command's cleanup (a submit's copies)
            with contextlib.suppress(ValueError):  # not the main thread: signals stay
                _EarlyCancel.install(keep_sigint=True)
        if argv is None:
            _scrub_secrets(args)
        if (twice := repeated_option(cli, args)) is not None:
            first, second = twice
            given = f"{first} is given twice" if first == second else (
                f"{first} and {second} are both given")
            raise BadInput(f"{given}: the last would win in silence; give it once")
        cli.main(args=argv, prog_name="stmpo", standalone_mode=False)
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
    except OSError as exc:  # a path name past the file system's limit, wherever it is met
        if exc.errno != errno.ENAMETOOLONG:
            raise
        from ..plan import NAME_MAX, name_bytes

        path = str(exc.filename)
        long = [p for p in re.split(r"[\\/]", path) if name_bytes(p) > NAME_MAX]
        what = (f"the name {long[0][:24]}... ({name_bytes(long[0])} bytes)" if long
                else f"the path {path[:48]}... ({name_bytes(path)} bytes)")
        _error(f"{what} is longer than the file system allows: shorten it", args)
        sys.exit(int(ExitCode.BAD_INPUT))
    except KeyboardInterrupt:
        sys.exit(int(ExitCode.INTERRUPTED))
    except BaseException as exc:  # a cancel while the command line is read, maybe wrapped
        cancel = _EarlyCancel.found_in(exc)  # by the import it cut short (see render)
        if cancel is None:
            raise
        if args[:1] != ["render"]:
            click.echo(f"stmpo: CANCELLED by {cancel.words}", err=True)
            sys.exit(int(cancel.code))
        click.echo(f"stmpo: CANCELLED by {cancel.words} before the render started: "
                   "nothing was rendered")
        summaries = _option_values(args, "--summary")  # the last one counts, as in click
        if summaries and summaries[-1]:  # the README promises it from the first moment
            write_cancelled_early(summaries[-1], None, cancel.name, cancel.code, started)
        sys.exit(int(cancel.code))
    finally:
        if _EarlyCancel.current is not None:  # the command line was refused before render
            _EarlyCancel.current.uninstall()


if __name__ == "__main__":
    main()
