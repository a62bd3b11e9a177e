"""``stmpo fonts install/remove``: fonts attached to a job, per session (placeholder)."""

from __future__ import annotations

import click


@click.group("fonts")
def fonts_group() -> None:
    """Install or remove the fonts attached to a job."""


@fonts_group.command("install")
@click.option("--from", "source", help="Folder of fonts attached to the job.")
def install(source: str | None) -> None:
    """Install fonts for this session (nothing to do when none are attached)."""
    click.echo("stmpo fonts: no fonts attached")


@fonts_group.command("remove")
def remove() -> None:
    """Remove the fonts this session installed."""
    click.echo("stmpo fonts: nothing to remove")
