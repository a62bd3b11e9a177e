"""``stmpo fonts install/remove``: the fonts attached to a job, for one session.

The job bundle's ``Fonts`` environment runs ``stmpo fonts install --from FontsDir`` when a
session starts and ``stmpo fonts remove`` when it ends. Several sessions can run on one
host at the same time (and share fonts), and a session can be killed before its exit
action runs, so fonts are not simply copied and deleted:

* Every font stmpo installs is recorded in a per-user **registry**
  (``registry.json`` in the state folder, changed only under an exclusive file lock) with
  its content hash and the **sessions that hold it**. ``remove`` drops this session's
  holds and deletes a font only when no other session holds it. A registry that cannot
  be read is kept aside under another name (``registry.json.unreadable-TIME``), never
  overwritten.
* A session is identified by ``--session``, else ``$STMPO_FONTS_SESSION``, else Deadline's
  ``$DEADLINE_SESSION_ID``, else the OpenJD session working directory
  (``$OPENJD_SESSION_WORKING_DIR``), else the process that runs the session (see below),
  so ``install`` and ``remove`` of one session find the same record. A blank id is
  refused.
* Each session record names its **holder**: the process whose life bounds the session
  (the worker agent or ``openjd run`` that started the action; ``sudo``/``setsid``
  launchers and one-shot shells in between are skipped), with its start time so a reused
  pid is not mistaken for it. A session whose holder is gone, or whose OpenJD working
  directory was deleted, has ended without running ``remove``: the next ``install`` or
  ``remove`` of any session reclaims its holds (and deletes the fonts nobody else holds).
* One file name, one font. Fonts are installed side by side in one folder, so a job whose
  fonts folder holds two different font files of one name (ignoring case) is refused
  (:class:`BadInput`), at submission too. A job font whose name is taken in stmpo's fonts
  folder by a different font (held by another session, or left there unrecorded) is
  refused before anything is installed (:class:`EnvironmentProblem`: the host, not the
  job, is in the way): the render would use the other font. A font file of that name
  installed outside stmpo (the user's own fonts on macOS and Windows) is never replaced
  nor deleted: stmpo warns, and the render uses the installed one. A file in stmpo's
  fonts folder the registry does not record (its record was lost) is stmpo's all the
  same: a session that brings the same font takes it over.
* A font is copied under a temporary name (``.NAME.PID-START.part``) and renamed into
  place; a failing copy deletes it, and the next ``install`` or ``remove`` deletes those
  of copies that were killed.

Where fonts go (per user, no administrator rights needed):

* Linux: ``$XDG_DATA_HOME/fonts/stmpo`` (``~/.local/share/fonts/stmpo``), a folder of
  stmpo's own, removed with its last font (fontconfig rescans a font folder whose
  modification time changed: no cache to refresh);
* macOS: ``~/Library/Fonts``;
* Windows: ``%LOCALAPPDATA%\\Microsoft\\Windows\\Fonts``, registered for the user in
  ``HKCU`` and loaded with ``AddFontResourceExW`` (:mod:`stmpo_celery.host._winfonts`).

The registry lives in ``$XDG_STATE_HOME/stmpo/fonts`` (``~/.local/state/stmpo/fonts``),
``~/Library/Application Support/stmpo/fonts`` or ``%LOCALAPPDATA%\\stmpo\\fonts``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import BadInput, EnvironmentProblem
from ..host import FONT_PLATFORM, FontNotLoadable, replace_file
from ._fontfiles import (
    FONT_EXTENSIONS,
    by_name,
    file_hash,
    find_fonts,
    font_key,
    same_content,
)
from ._fontleases import (
    Registry,
    Session,
    locked,
    session_ended,
    session_record,
    sweep_leftovers,
    temp_name,
    write_fix,
)


# -- where things go -------------------------------------------------------------------------
@dataclass(frozen=True)
class Places:
    font_dir: Path  #: where this user's fonts are installed
    state_dir: Path  #: the registry and its lock
    platform: str  #: "linux", "darwin" or "win32"
    #: font_dir is stmpo's own (removed once empty), not the user's font folder of the OS
    own_font_dir: bool = False


def places(env: Mapping[str, str] | None = None, platform: str | None = None) -> Places:
    """The font folder and registry folder of the current user on ``platform``."""
    env = os.environ if env is None else env
    platform = platform or FONT_PLATFORM
    home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    if platform == "win32":
        from ..host import local_appdata, user_font_dir

        return Places(user_font_dir(env), local_appdata(env) / "stmpo" / "fonts", "win32")
    if platform == "darwin":
        return Places(home / "Library" / "Fonts",
                      home / "Library" / "Application Support" / "stmpo" / "fonts", "darwin")
    data = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    state = Path(env.get("XDG_STATE_HOME") or home / ".local" / "state")
    return Places(data / "fonts" / "stmpo", state / "stmpo" / "fonts", "linux",
                  own_font_dir=True)


# -- installing and deleting one file --------------------------------------------------------
def _place_file(src: Path | None, dest: Path, platform: str) -> None:
    """Copy ``src`` to ``dest`` under a temporary name, then rename it into place: a font
    is whole or absent (a failing copy deletes its temporary file). ``src`` None: ``dest``
    is already the font (one whose deletion failed while it was open), only put back in
    use."""
    if src is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(temp_name(f".{dest.name}", "part"))
        try:
            shutil.copyfile(src, tmp)
            replace_file(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    if platform == "win32":
        from ..host import winfonts

        winfonts.register(dest)


def _sweep_copies(pl: Places) -> None:
    """Delete what copies killed midway left in the font folder (:func:`_place_file`)."""
    sweep_leftovers(pl.font_dir, lambda name: name.startswith(".")
                    and Path(name).suffix.lower() in FONT_EXTENSIONS)


def _delete_file(path: Path, platform: str) -> bool:
    """Delete an installed font; False when it was not there."""
    if platform == "win32":
        from ..host import winfonts

        winfonts.unregister(path)
    try:
        path.unlink()
    except (FileNotFoundError, NotADirectoryError):
        return False  # already gone (or never copied: its install was killed)
    return True


def _drop_own_folder(reg: Registry, pl: Places) -> None:
    """stmpo's own font folder goes with its last font."""
    if not reg.fonts and pl.own_font_dir:
        with contextlib.suppress(OSError):
            pl.font_dir.rmdir()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- sessions --------------------------------------------------------------------------------
@dataclass
class Outcome:
    installed: list[str] = field(default_factory=list)  #: copied by this session
    shared: list[str] = field(default_factory=list)  #: installed by another live session
    present: list[str] = field(default_factory=list)  #: installed outside stmpo, same content
    #: in stmpo's font folder with the same content but recorded by no session: now held
    adopted: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  #: messages
    deleted: list[str] = field(default_factory=list)  #: files deleted (not those never copied)
    kept: list[str] = field(default_factory=list)  #: still held by other sessions
    reclaimed: list[str] = field(default_factory=list)  #: messages


def reclaim_ended(reg: Registry, current: str) -> list[str]:
    """Drop the sessions that ended without ``remove``; the fonts only they held become
    unheld (deleted by :func:`collect`)."""
    out = []
    for key, rec in list(reg.sessions.items()):
        if key == current:
            continue
        why = session_ended(rec)
        if why:
            del reg.sessions[key]
            out.append(f"session {key} ended without removing its fonts ({why}): "
                       f"released {len(rec.get('fonts', []))} font(s)")
    return out


def collect(reg: Registry, pl: Places, out: Outcome) -> None:
    """Delete every font stmpo installed that no session holds any more."""
    for key, entry in list(reg.fonts.items()):
        if reg.holders(key):
            continue
        path = Path(entry["path"])
        try:
            if path.exists() and entry.get("sha256") and file_hash(path) != entry["sha256"]:
                # replaced by someone else since: not ours to delete
                del reg.fonts[key]
                continue
            existed = _delete_file(path, pl.platform)
        except OSError as exc:  # e.g. still loaded on Windows: retried next time
            entry["pending_delete"] = True
            out.conflicts.append(f"could not delete {path} yet ({exc.strerror or exc}); "
                                 "the next install or remove retries")
            continue
        del reg.fonts[key]
        if existed:
            out.deleted.append(path.name)


def _in_the_way(name: str, path: Path, holders: list[str] | None) -> str:
    """Why the font ``name`` cannot be installed: ``path``, stmpo's, is another font of
    that name, held by ``holders`` (None: recorded by no session)."""
    where = (f"the font {name} cannot be installed: this host's stmpo fonts folder already "
             f"holds a different font file of that name ({path})")
    if holders:
        others = f" and {len(holders) - 1} more" if len(holders) > 1 else ""
        return (f"{where}, in use by session {holders[0]}{others}: render this job on "
                "another host, or on this one once that session has ended")
    if holders is not None:
        return (f"{where}, which no session uses but which could not be deleted yet: render "
                "this job on another host, or on this one once it is deleted (every stmpo "
                "fonts install or remove retries)")
    return (f"{where}, recorded by no session (its record was lost, or it was put there by "
            "hand): render this job on another host, or on this one after deleting that file "
            "once no render uses it")


def install_fonts(source: Path, pl: Places, session: Session) -> Outcome:
    """Install every font file below ``source`` for ``session``: all of them or none.

    :class:`BadInput` when two of them have one name and differ;
    :class:`EnvironmentProblem`, before anything is installed, when stmpo's font folder
    holds a different font of one's name (see the module docstring)."""
    out = Outcome()
    wanted = by_name(find_fonts(source))
    with locked(pl.state_dir) as reg_path:
        reg = Registry.load(reg_path, set_aside=True)
        out.reclaimed = reclaim_ended(reg, session.key)
        collect(reg, pl, out)  # fonts nobody holds any more are in nobody's way
        _sweep_copies(pl)
        in_the_way: list[str] = []
        #: (key, source, where it goes, content hash, its registry entry if recorded)
        plan: list[tuple[str, Path, Path, str, dict[str, Any] | None]] = []
        adopt: list[tuple[str, Path, str]] = []
        for key, (src, digest) in wanted.items():
            entry = reg.fonts.get(key)
            if entry is not None:
                if entry.get("sha256") != digest:
                    in_the_way.append(_in_the_way(src.name, Path(entry["path"]),
                                                  reg.holders(key)))
                else:
                    plan.append((key, src, Path(entry["path"]), digest, entry))
                continue
            existing = _existing(pl.font_dir, src.name)
            if existing is None:
                plan.append((key, src, pl.font_dir / src.name, digest, None))
            elif same_content(existing, digest):
                if pl.own_font_dir:  # stmpo's, its record lost: held from now on
                    adopt.append((key, existing, digest))
                else:
                    out.present.append(src.name)  # not ours: never held, never deleted
            elif pl.own_font_dir:
                in_the_way.append(_in_the_way(src.name, existing, None))
            else:
                out.conflicts.append(
                    f"{src.name}: a different font file of this name is already "
                    f"installed outside stmpo ({existing}); not overwritten, the render "
                    "uses it")
        if in_the_way:
            with contextlib.suppress(EnvironmentProblem):  # the refusal says more
                reg.save(reg_path)  # what was reclaimed stays reclaimed
            more = f" (and {len(in_the_way) - 1} more)" if len(in_the_way) > 1 else ""
            raise EnvironmentProblem(f"{in_the_way[0]}{more}; nothing was installed")

        rec = reg.sessions.setdefault(session.key, {"fonts": [], "since": _now()})
        rec.update(session_record(session), source=str(source))
        held: list[str] = rec["fonts"]
        added: list[str] = []  #: the holds this install adds (released if it fails)
        copies: list[tuple[Path | None, Path]] = []
        for key, src, dest, digest, entry in plan:
            if entry is None:
                reg.fonts[key] = {"path": str(dest), "sha256": digest, "since": _now()}
                copies.append((src, dest))
                out.installed.append(src.name)
            else:
                pending = entry.pop("pending_delete", None)
                if pending and dest.exists() and same_content(dest, digest):
                    copies.append((None, dest))  # still whole: in use again, not copied
                elif pending or not dest.exists():  # (over a file still open, a copy fails)
                    copies.append((src, dest))
                others = [h for h in reg.holders(key) if h != session.key]
                (out.shared if others else out.installed).append(src.name)
        for key, existing, digest in adopt:
            reg.fonts[key] = {"path": str(existing), "sha256": digest, "since": _now()}
            out.adopted.append(existing.name)
        for key in [p[0] for p in plan] + [a[0] for a in adopt]:
            if key not in held:
                held.append(key)
                added.append(key)
        if not held:
            del reg.sessions[session.key]
        reg.save(reg_path)  # holds first: a crash while copying leaves nothing unrecorded
        for origin, dest in copies:
            try:
                _place_file(origin, dest, pl.platform)
            except OSError as exc:  # release what this install added; nothing half-done stays
                for key in added:
                    held.remove(key)
                if not held:
                    reg.sessions.pop(session.key, None)
                collect(reg, pl, Outcome())
                with contextlib.suppress(EnvironmentProblem):  # the copy's error says more
                    reg.save(reg_path)
                _drop_own_folder(reg, pl)
                if isinstance(exc, FontNotLoadable):  # the job's file, not the host
                    raise BadInput(f"Windows cannot load the font {dest.name} (a damaged "
                                   "file, or not a font Windows takes): replace it in the "
                                   "job's fonts; nothing was installed") from None
                raise EnvironmentProblem(
                    f"cannot install the font {dest.name} into {dest.parent} "
                    f"({exc.strerror or exc}): {write_fix(exc, dest.parent)}, then run "
                    "again; nothing was installed") from None
        reg.save(reg_path)
    return out


def _existing(folder: Path, name: str) -> Path | None:
    """A file of this name in ``folder`` (ignoring case, as Windows and macOS do)."""
    direct = folder / name
    if direct.exists():
        return direct
    if not folder.is_dir():
        return None
    key = font_key(name)
    for p in folder.iterdir():
        if font_key(p.name) == key:
            return p
    return None


def remove_fonts(pl: Places, session: Session) -> Outcome | None:
    """Release ``session``'s fonts; None when there is no registry at all."""
    if not (pl.state_dir / "registry.json").exists():
        return None
    out = Outcome()
    with locked(pl.state_dir) as reg_path:
        reg = Registry.load(reg_path, set_aside=True)
        out.reclaimed = reclaim_ended(reg, session.key)
        rec = reg.sessions.pop(session.key, None)
        mine = list(rec.get("fonts", [])) if rec else []
        for key in mine:
            if reg.holders(key) and key in reg.fonts:
                out.kept.append(Path(reg.fonts[key]["path"]).name)
        collect(reg, pl, out)
        _sweep_copies(pl)
        reg.save(reg_path)
        _drop_own_folder(reg, pl)
    if rec is None:
        out.kept.clear()
    out.installed = mine  # what this session held
    return out


def refresh_cache(pl: Places) -> None:
    """Tell the font system that fonts came or went: a broadcast on Windows. (Elsewhere
    there is nothing to tell: fontconfig rescans a font folder whose modification time
    changed.)"""
    if pl.platform == "win32":
        from ..host import winfonts

        winfonts.broadcast_font_change()
