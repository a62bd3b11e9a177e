"""``stmpo bundle``: the click command; the bundle itself is :mod:`stmpo_celery.deadline`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..config import Command
from ..deadline import (
    BIG,
    CHUNK_LIMIT,
    IMAGE,
    describe_tasks,
    plan_bundle,
    task_chunks,
    write_bundle,
)
from ..errors import BadInput
from ..host import shell_join
from ..plan import format_frames, parse_frames
from ._options import setting_options


@click.command("bundle")
@click.option("--project", required=True, help="The .aep project file (on this machine).")
@click.option("--comp", help="Composition name to render.")
@click.option("--rqindex", type=int, help="Render-queue item to render (1-based).")
@click.option("--frames", required=True, help="Frames: 1-240, 1-10,50-60.")
@click.option("--output", help="Output pattern: /renders/shot_[#####].png (image sequence) "
              "or /renders/shot.mov (movie). Default: the queue item's output module file.")
@click.option("--dest", default="stmpo-bundle", show_default=True,
              help="The bundle folder to write.")
@click.option("--force", is_flag=True, help="Replace the job bundle already in --dest.")
@click.option("--frames-per-task", type=int,
              help="Most frames one task renders (image sequences; template default 100). "
                   f"Above {CHUNK_LIMIT}: the big-task template.")
@click.option("--target-runtime", type=int,
              help="Seconds Deadline Cloud should aim for per chunked task (0 = none).")
@click.option("--aerender", "--aerender_path", "aerender",
              help="aerender path on the workers (default: their AERENDER_PATH, PATH, ...).")
@click.option("--fonts-dir", help="Folder of fonts the project needs (attached to the job).")
@setting_options(Command.BUNDLE)
@click.option("--om-template", help="aerender -OMtemplate on the workers.")
@click.option("--rs-template", help="aerender -RStemplate on the workers.")
def bundle_command(**kw: Any) -> None:
    """Write a Deadline Cloud job bundle for a project/comp/frames/output.

    Submit it with `deadline bundle submit DEST`. Settings not given stay empty in the
    bundle, so each worker's STMPO_* environment, the profile or stmpo's default applies.
    """
    if not str(kw["dest"]).strip():  # "" would mean the current folder
        raise BadInput("--dest is empty: name the bundle's folder")
    b = plan_bundle(kw)
    dest = Path(kw["dest"]).resolve()
    template, params = write_bundle(b, dest, bool(kw.get("force")))
    for w in b.warnings:
        click.echo(f"stmpo bundle: warning: {w}", err=True)
    for note in b.notes:
        click.echo(f"stmpo bundle: {note}")
    what = {IMAGE: "image sequence", BIG: "image sequence (big tasks)"}.get(b.kind, "movie")
    click.echo(f"stmpo bundle: {what} bundle written to {dest} (template {template})")
    if b.kind == IMAGE:
        default = params["FramesPerTask"].default
        fpt = int(b.values.get("FramesPerTask", default or 1))
        tasks = task_chunks(parse_frames(str(b.values["Frames"])), fpt)
        click.echo(f"stmpo bundle: {len(tasks)} task(s) of at most {fpt} frame(s): "
                   + ", ".join(format_frames(t) for t in tasks[:6])
                   + (", ..." if len(tasks) > 6 else ""))
    elif b.kind == BIG:
        click.echo("stmpo bundle: " + describe_tasks(parse_frames(str(b.values["Frames"])),
                                                     int(b.values["TaskCount"])))
    else:
        click.echo(f"stmpo bundle: 1 task, one aerender process, frames {b.values['Frames']}")
    if b.host:
        click.echo(f"stmpo bundle: host requirements: Windows or macOS, at least {b.host[0]} "
                   f"vCPUs and {b.host[1] // 1024} GiB (a fleet runs the job only when its "
                   "minimum vCPUs and memory reach these)")
    click.echo(f"submit with: {shell_join(['deadline', 'bundle', 'submit', str(dest)])}")
