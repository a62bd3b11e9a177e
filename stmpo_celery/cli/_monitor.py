"""``stmpo status`` and ``stmpo host up|down|info``: watching renders from a terminal.

Registered on the ``stmpo`` group by :mod:`.cli`.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from ..config import defaults
from ..errors import BadInput, EnvironmentProblem
from ._finite import FINITE


@click.command("status")
@click.option("--broker", help="Redis URL [default: $STMPO_BROKER_URL, else the profile's "
                               "broker key, else the host service and this user's embedded "
                               "runs].")
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable: one JSON document (with --once) or one per line "
                   "[default: text].")
@click.option("--once", is_flag=True,
              help="Print once and exit [default: refresh until Ctrl-C].")
@click.option("--interval", type=FINITE, default=1.0, show_default=True,
              help="Seconds between refreshes.")
def status_command(broker: str | None, as_json: bool, once: bool, interval: float) -> None:
    """Show the runs on this host: project, comp, state (rendering, failed, cancelled, done,
    dead), frames done and ETA per run; per slot its chunk, frames done, frames/s and ETA."""
    from ..broker import parse_broker_url
    from ..monitor import render_text, snapshot, sources

    if once and click.get_current_context().get_parameter_source("interval") is \
            click.core.ParameterSource.COMMANDLINE:
        raise BadInput("--interval does nothing with --once (one snapshot): drop one of them")
    if interval <= 0 or interval > 86400:
        raise BadInput(f"--interval is {interval:g}: it must be more than zero and at most "
                       "86400 (a day)")
    from ..broker import check_reachable

    if broker is not None and not broker:  # "" would fall back to the others in silence
        raise BadInput("--broker is empty: give the Redis URL, or leave --broker out")
    from ..config import broker_setting

    url, origin = broker_setting(broker)  # as render finds it: flag, $STMPO_BROKER_URL, profile
    if url:  # a broker named on purpose must answer (exit 3, one line)
        check_reachable(parse_broker_url(url))
    tty = sys.stdout.isatty() and not as_json
    try:
        while True:
            snap = snapshot(sources(url, origin))
            if as_json:
                click.echo(json.dumps(snap, indent=2 if once else None))
            else:
                text = render_text(snap)
                if tty and not once:
                    text = "\x1b[H\x1b[2J" + time.strftime("%H:%M:%S  ") + text
                click.echo(text)
            sys.stdout.flush()
            if once:
                _refuse_unread(snap["problems"])
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return


def _refuse_unread(problems: list[str]) -> None:
    """``--once`` is what scripts call: a broker that did not answer must not read as "no
    runs" with exit 0 (the runs on it are not shown). Exit 3 after the snapshot printed."""
    if problems:
        raise EnvironmentProblem(
            f"cannot read {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
            + ": the runs it holds are not shown above; check it "
            "with `stmpo host info` (the host service) or `stmpo doctor`")


@click.group("host")
def host_group() -> None:
    """A long-lived Redis (and Flower) for every render on this host."""


@host_group.command("up")
@click.option("--port", type=int, default=None,
              help="Redis TCP port [default: 6389].")
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="Address Redis listens on (it always requires its password).")
@click.option("--flower", help="Also start a Flower watching every run, on [HOST:]PORT "
                               "[default: no Flower].")
@click.option("--flower-auth", envvar="STMPO_FLOWER_AUTH",
              help="user:pass for Flower, required off loopback [default: $STMPO_FLOWER_AUTH, "
                   "else none].")
@click.option("--flower-url-prefix",
              help="URL prefix for Flower behind a reverse proxy [default: none, Flower at /].")
@click.option("--group", help="Let this group read the broker URL file (0640) "
                              "[default: owner only, 0600].")
@click.option("--foreground", is_flag=True,
              help="Stay in the foreground and stop both on SIGTERM, for systemd "
                   "[default: detach].")
def host_up(port: int | None, bind: str, flower: str | None, flower_auth: str | None,
            flower_url_prefix: str | None, group: str | None, foreground: bool) -> None:
    """Start the host's Redis (password, persisted config) and optionally its Flower."""
    from ..monitor import HostService, host_dir

    ctx = click.get_current_context()
    given = [f"--{n.replace('_', '-')}" for n in ("flower_auth", "flower_url_prefix")
             if ctx.get_parameter_source(n) is click.core.ParameterSource.COMMANDLINE]
    if given and flower is None:
        verb, them = ("apply", "them") if len(given) > 1 else ("applies", "it")
        raise BadInput(f"{', '.join(given)} only {verb} to Flower: add --flower [HOST:]PORT, "
                       f"or drop {them}")
    svc = HostService(host_dir())
    _refuse_changes(svc, port, bind if ctx.get_parameter_source("bind")
                    is click.core.ParameterSource.COMMANDLINE else None, flower,
                    flower_url_prefix, flower_auth or None)
    for line in svc.up(defaults.HOST_REDIS_PORT if port is None else port, bind, flower,
                       flower_auth or None,
                       flower_url_prefix, group, foreground):
        click.echo(f"stmpo host: {line}")
    if foreground:
        sys.stdout.flush()

        def ready() -> None:
            click.echo("stmpo host: serving in the foreground until SIGTERM, SIGINT or SIGHUP")
            sys.stdout.flush()

        sys.exit(svc.wait_foreground(ready))


def _refuse_changes(svc: Any, port: int | None, bind: str | None, flower: str | None,
                    url_prefix: str | None, auth: str | None) -> None:
    """``host up`` on a host whose services run: asking for another port, address, URL
    prefix or Flower password (``--flower-auth`` or ``$STMPO_FLOWER_AUTH``) than they run
    with is refused (it was ignored, and the caller believed it)."""
    from ..monitor import serves_at

    if svc.running("redis") is not None:
        now_port, now_bind = svc.conf_value("port"), svc.conf_value("bind")
        if (port is not None and str(port) != now_port) or (bind is not None
                                                           and bind != now_bind):
            raise BadInput(f"the host's Redis already runs on {now_bind}:{now_port}: run "
                           "'stmpo host down' first to move it")
    url = svc.info().get("flower_url") if svc.running("flower") is not None else None
    if flower is not None and url and not serves_at(str(url), flower, url_prefix):
        raise BadInput(f"the host's Flower already runs at {url}: run 'stmpo host down' "
                       "first to move it")
    if flower is not None and url and auth and not svc.flower_auth_matches(auth):
        raise BadInput(f"the host's Flower already runs at {url} with another password (or "
                       "none): run 'stmpo host down' first to change it")


@host_group.command("down")
@click.option("--force", is_flag=True,
              help="Stop even while runs still use the broker [default: refuse].")
def host_down(force: bool) -> None:
    """Stop the host's Flower and Redis."""
    from ..monitor import HostService, host_dir

    for line in HostService(host_dir()).down(force=force):
        click.echo(f"stmpo host: {line}")


@host_group.command("info")
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output [default: one line per field].")
def host_info(as_json: bool) -> None:
    """Where the host service lives and whether it runs."""
    from ..monitor import HostService, host_dir

    info = HostService(host_dir()).info()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for k, v in info.items():
        click.echo(f"{k:<12} {v if v is not None else '-'}")
