"""``stmpo fonts``: the click commands; the per-session font leases are
:mod:`stmpo_celery.deadline`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..deadline import (
    FONT_EXTENSIONS,
    Registry,
    current_session,
    find_fonts,
    install_fonts,
    places,
    refresh_cache,
    refuse_broken_fonts,
    remove_fonts,
    say,
    session_ended,
    skipped_files,
    skipped_note,
)
from ..errors import BadInput, EnvironmentProblem
from ..text import one_line


def _names(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


@click.group("fonts")
def fonts_group() -> None:
    """Install or remove the fonts attached to a job, per session.

    Sessions on one host share fonts safely: a font is deleted only when no running
    session holds it, and the holds of a session that was killed are reclaimed. A job
    font whose file name is taken on this host by a different font stmpo installed is
    refused (exit 3), as are two different fonts of one name in a job (exit 2).
    """


_SESSION_HELP = ("Session id (default: $STMPO_FONTS_SESSION, $DEADLINE_SESSION_ID, the OpenJD "
                 "session folder, else the process running the session).")


@fonts_group.command("install")
@click.option("--from", "source", help="Folder of fonts attached to the job [default: none: "
                                           "install nothing].")
@click.option("--session", help=_SESSION_HELP)
def install(source: str | None, session: str | None) -> None:
    """Install the fonts in --from for this session (nothing to do when none are attached)."""
    sess = current_session(session)  # a blank --session is refused, fonts or not
    if source is None or not source.strip():
        say("no fonts attached to the job (FontsDir is empty): nothing to install")
        return
    folder = Path(source).expanduser()
    if folder.exists() and not folder.is_dir():
        raise BadInput(f"--from {folder} is a file: pass the folder of fonts attached to the "
                       "job (FontsDir)")
    if not folder.is_dir():
        # Submitters name a fonts folder only when it holds fonts (Deadline does not attach
        # an empty one): the fonts did not arrive, and After Effects would substitute them.
        raise EnvironmentProblem(
            f"the job's fonts folder {folder} does not exist on this host: its fonts did not "
            "arrive (check the job attachments or the storage profile's path mapping)")
    files = find_fonts(folder)
    skipped = skipped_note(folder, skipped_files(folder))
    if not files:
        if skipped:
            say("warning: " + skipped, err=True)
        say(f"no fonts attached: {folder} holds no font files "
            f"({' '.join(sorted(FONT_EXTENSIONS))}): nothing to install")
        return
    refuse_broken_fonts(files, "attach the real font file or remove it from the job's "
                               "fonts; nothing was installed")
    if skipped:
        say("warning: " + skipped, err=True)
    pl = places()
    out = install_fonts(folder, pl, sess)
    for line in out.reclaimed:
        say(line)
    for line in out.conflicts:
        say("warning: " + line, err=True)
    if out.installed or out.deleted:
        refresh_cache(pl)
    parts = []
    if out.installed:
        parts.append(f"installed {len(out.installed)} ({_names(out.installed)})")
    if out.shared:
        parts.append(f"{len(out.shared)} already installed by another session, now shared "
                     f"({_names(out.shared)})")
    if out.adopted:
        parts.append(f"{len(out.adopted)} found in stmpo's fonts folder unrecorded, now held "
                     f"({_names(out.adopted)})")
    if out.present:
        parts.append(f"{len(out.present)} already installed outside stmpo, used as they are "
                     f"({_names(out.present)})")
    if out.conflicts:
        parts.append(f"{len(out.conflicts)} not installed (see the warnings)")
    say(f"session {sess.key}: " + "; ".join(parts or ["nothing installed"])
        + f"; fonts folder {pl.font_dir}")


@fonts_group.command("remove")
@click.option("--session", help=_SESSION_HELP)
def remove(session: str | None) -> None:
    """Remove the fonts this session installed (those other sessions still use stay)."""
    pl = places()
    sess = current_session(session)
    out = remove_fonts(pl, sess)
    if out is None:
        say("no fonts were installed on this host by stmpo: nothing to remove")
        return
    for line in out.reclaimed:
        say(line)
    for line in out.conflicts:
        say("warning: " + line, err=True)
    if out.deleted:
        refresh_cache(pl)
    if not out.installed and not out.deleted:
        say(f"session {sess.key} installed no fonts: nothing to remove")
        return
    parts = [f"removed {len(out.deleted)}" + (f" ({_names(out.deleted)})" if out.deleted else "")]
    if out.kept:
        parts.append(f"kept {len(out.kept)} still used by other sessions ({_names(out.kept)})")
    say(f"session {sess.key}: " + "; ".join(parts))


@fonts_group.command("list")
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output [default: one line per font].")
def list_fonts(as_json: bool) -> None:
    """Show the fonts stmpo installed on this host and the sessions holding them."""
    pl = places()
    reg_path = pl.state_dir / "registry.json"
    reg = Registry.load(reg_path) if reg_path.exists() else Registry()
    if as_json:
        click.echo(json.dumps({"font_dir": str(pl.font_dir), "fonts": reg.fonts,
                               "sessions": reg.sessions}, indent=2, ensure_ascii=False))
        return
    click.echo(one_line(f"fonts folder: {pl.font_dir}"))
    if not reg.fonts:
        click.echo("no fonts installed by stmpo")
    for key, entry in sorted(reg.fonts.items()):
        holders = reg.holders(key)
        click.echo(one_line(f"{Path(entry['path']).name}  held by {len(holders)} session(s): "
                            + (", ".join(holders) or "none (to delete)")))
    for key, rec in sorted(reg.sessions.items()):
        why = session_ended(rec)
        state = f"ended: {why}" if why else f"running (process {rec.get('pid')})"
        click.echo(one_line(f"session {key}: {len(rec.get('fonts', []))} font(s), {state}"))
