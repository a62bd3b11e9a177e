"""``stmpo bundle``: write a ready Deadline Cloud job bundle (placeholder)."""

from __future__ import annotations

import click


@click.command("bundle")
def bundle_command() -> None:
    """Write a Deadline Cloud job bundle for a project/comp/frames/output."""
    raise click.ClickException("stmpo bundle is not implemented yet")
