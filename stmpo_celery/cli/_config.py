"""``stmpo config show``: every effective setting and where it came from."""

from __future__ import annotations

import json
from typing import Any

import click

from ..config import SETTINGS, Command, check_combinations, origin
from ..errors import BadInput
from ._options import resolved_settings, setting_options


@click.group()
def config() -> None:
    """Inspect settings."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@setting_options(Command.CONFIG)
def config_show(as_json: bool, **kw: Any) -> None:
    """Print every effective setting and where it came from."""
    from ..broker import mask_url
    from ._auto import auto_notes

    resolved = resolved_settings(kw)
    for name, (value, _source) in resolved.items():  # show nothing render would refuse
        SETTINGS[name].check(value)
    check_combinations({k: v for k, (v, _s) in resolved.items()},
                       lambda name: origin(name, resolved[name][1]))
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
    """What a render reads before it starts: the broker URL parses, Flower's credentials
    are user:password, the NUMA map loads on this host, the log folder can be made (a
    session fails on them here, not in a task)."""
    from ..broker import parse_broker_url
    from ..host import this_host, uncreatable
    from ..monitor import check_auth

    broker, log_dir = resolved["broker"][0], resolved["log_dir"][0]
    if broker:
        parse_broker_url(str(broker))
    check_auth(resolved["flower_auth"][0])
    if resolved["numa_map"][0]:
        this_host(str(resolved["numa_map"][0]))
    if log_dir:
        blocked = uncreatable(str(log_dir))
        if blocked is not None:
            raise BadInput(f"log folder {log_dir} ({resolved['log_dir'][1]}) cannot be "
                           f"created: {' '.join(blocked)}; fix it or leave it unset")


