"""``stmpo inspect``: read an After Effects project without After Effects."""

from __future__ import annotations

import json

import click

from ..deadline import describe, read_project


@click.command("inspect")
@click.argument("project")
@click.option("--json", "as_json", is_flag=True,
              help="Print the report as JSON [default: text].")
def inspect_command(project: str, as_json: bool) -> None:
    """Read PROJECT (.aep) without After Effects: comps, render queue, output modules,
    footage (missing flagged) and fonts."""
    info = read_project(project)
    if as_json:
        click.echo(json.dumps(info.to_json(), indent=2, ensure_ascii=False))
    else:
        for line in describe(info):
            click.echo(line)
