"""``stmpo fonts install/remove``: the fonts attached to a job, for one session.

The job bundle's ``Fonts`` environment runs ``stmpo fonts install --from FontsDir`` when a
session starts and ``stmpo fonts remove`` when it ends. Several sessions can run on one
host at the same time (and share fonts), and a session can be killed before its exit
action runs, so fonts are not simply copied and deleted:

* Every font stmpo installs is recorded in a per-user **registry**
  (``registry.json`` in the state folder, changed only under an exclusive file lock) with
  its content hash and the **sessions that hold it**. ``remove`` drops this session's
  holds and deletes a font only when no other session holds it.
* A session is identified by ``--session``, else ``$STMPO_FONTS_SESSION``, else Deadline's
  ``$DEADLINE_SESSION_ID``, else the OpenJD session working directory
  (``$OPENJD_SESSION_WORKING_DIR``), else the process that runs the session (see below),
  so ``install`` and ``remove`` of one session find the same record.
* Each session record names its **holder**: the process whose life bounds the session
  (the worker agent or ``openjd run`` that started the action; ``sudo``/``setsid``
  launchers and one-shot shells in between are skipped), with its start time so a reused
  pid is not mistaken for it. A session whose holder is gone, or whose OpenJD working
  directory was deleted, has ended without running ``remove``: the next ``install`` or
  ``remove`` of any session reclaims its holds (and deletes the fonts nobody else holds).
* A font file stmpo did not install is never replaced nor deleted. A different font of
  the same file name already installed (by hand, or by another session from another job)
  is not overwritten: stmpo says so, and the render uses the installed one.

Where fonts go (per user, no administrator rights needed):

* Linux: ``$XDG_DATA_HOME/fonts/stmpo`` (``~/.local/share/fonts/stmpo``), then
  ``fc-cache`` on that folder when it exists (best effort);
* macOS: ``~/Library/Fonts``;
* Windows: ``%LOCALAPPDATA%\\Microsoft\\Windows\\Fonts``, registered for the user in
  ``HKCU`` and loaded with ``AddFontResourceExW`` (:mod:`stmpo_celery.host._winfonts`).

The registry lives in ``$XDG_STATE_HOME/stmpo/fonts`` (``~/.local/state/stmpo/fonts``),
``~/Library/Application Support/stmpo/fonts`` or ``%LOCALAPPDATA%\\stmpo\\fonts``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import struct
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import BadInput, EnvironmentProblem
from ..host import FONT_PLATFORM
from ._fontleases import (
    Registry,
    Session,
    locked,
    session_ended,
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


def font_key(name: str) -> str:
    """Registry key of a font file name: Windows and macOS folders ignore case."""
    return name.casefold()


def find_fonts(source: Path) -> list[Path]:
    """Font files below ``source`` (recursively), in a stable order. The metadata macOS
    leaves beside files it copies or zips (``._Name.ttf`` AppleDouble files, a
    ``__MACOSX`` folder) is not a font and is passed over."""
    found = [p for p in source.rglob("*")
             if p.suffix.lower() in FONT_EXTENSIONS and not p.name.startswith("._")
             and "__MACOSX" not in p.relative_to(source).parts and p.is_file()]
    return sorted(found, key=lambda p: (len(p.relative_to(source).parts), str(p)))


def font_problem(path: Path) -> str | None:
    """Why ``path`` is not the font its extension says (empty, or another kind of file),
    or None. After Effects does not say when it cannot use an attached font: it renders
    with a substitute, so a broken font file is refused before anything is installed."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if size == 0:
        return "is empty"
    kind = _KINDS.get(path.suffix.lower())
    if kind is not None and not kind[0](head, size):
        return f"is not {kind[1]} (it starts with {head[:8]!r})"
    return None


def _starts(*signatures: bytes) -> Callable[[bytes, int], bool]:
    """A format whose files start with one of these bytes."""
    return lambda head, size: head.startswith(signatures)


def _pfm_or_fnt(versions: tuple[int, ...]) -> Callable[[bytes, int], bool]:
    """A Windows font metrics (.pfm) or raster font (.fnt) header: its version word (the
    size it gives next is not checked: some font tools write it wrong)."""
    def ok(head: bytes, size: int) -> bool:
        return len(head) >= 2 and struct.unpack_from("<H", head)[0] in versions
    return ok


def _dfont(head: bytes, size: int) -> bool:
    """A Mac resource fork in a data fork: data and map offsets and lengths inside the file."""
    if len(head) < 16:
        return False
    data_at, map_at, data_len, map_len = struct.unpack_from(">IIII", head)
    return data_at >= 16 and data_at + data_len <= size and map_len > 0 and \
        map_at + map_len <= size


_SFNT = _starts(b"\x00\x01\x00\x00", b"true", b"typ1", b"OTTO")  # TrueType/OpenType tables
#: per extension: does a file's head (its first 16 bytes) and size fit the format, and
#: what the format is called (.pfm/.fnt/.dfont are told by their header's numbers)
_KINDS: dict[str, tuple[Callable[[bytes, int], bool], str]] = {
    ".ttf": (_SFNT, "a TrueType/OpenType font"),
    ".otf": (_SFNT, "a TrueType/OpenType font"),
    ".ttc": (_starts(b"ttcf"), "a TrueType/OpenType collection"),
    ".otc": (_starts(b"ttcf"), "a TrueType/OpenType collection"),
    ".pfb": (_starts(b"\x80\x01"), "a PostScript Type 1 font (PFB)"),
    ".afm": (_starts(b"StartFontMetrics"), "Adobe font metrics"),
    ".fon": (_starts(b"MZ"), "a Windows font resource"),
    ".pfm": (_pfm_or_fnt((0x100,)), "PostScript font metrics (PFM)"),
    ".fnt": (_pfm_or_fnt((0x200, 0x300)), "a Windows raster font (FNT)"),
    ".dfont": (_dfont, "a Mac font suitcase (dfont)"),
}
FONT_EXTENSIONS = frozenset(_KINDS)  #: the files ``stmpo fonts`` installs


def refuse_broken_fonts(files: list[Path], fix: str) -> None:
    """Raise :class:`BadInput` naming the first of ``files`` that is not a usable font."""
    bad = [(f, why) for f in files if (why := font_problem(f)) is not None]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise BadInput(f"the font file {bad[0][0]} {bad[0][1]}{more}: {fix}")


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- sessions --------------------------------------------------------------------------------
def _place_file(src: Path, dest: Path, platform: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    if platform == "win32":
        from ..host import winfonts

        winfonts.register(dest)


def _delete_file(path: Path, platform: str) -> None:
    if platform == "win32":
        from ..host import winfonts

        winfonts.unregister(path)
    try:
        path.unlink()
    except (FileNotFoundError, NotADirectoryError):
        pass  # already gone


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Outcome:
    installed: list[str] = field(default_factory=list)  #: copied by this session
    shared: list[str] = field(default_factory=list)  #: installed by another live session
    present: list[str] = field(default_factory=list)  #: installed outside stmpo, same content
    conflicts: list[str] = field(default_factory=list)  #: messages
    deleted: list[str] = field(default_factory=list)
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
            _delete_file(path, pl.platform)
        except OSError as exc:  # e.g. still loaded on Windows: retried next time
            entry["pending_delete"] = True
            out.conflicts.append(f"could not delete {path} yet ({exc.strerror or exc}); "
                                 "the next install or remove retries")
            continue
        del reg.fonts[key]
        out.deleted.append(path.name)


def install_fonts(source: Path, pl: Places, session: Session) -> Outcome:
    """Install every font file below ``source`` for ``session``."""
    out = Outcome()
    files = find_fonts(source)
    wanted: dict[str, tuple[Path, str]] = {}
    for f in files:
        key, digest = font_key(f.name), file_hash(f)
        if key in wanted:
            if wanted[key][1] != digest:
                out.conflicts.append(f"{f} has the same name as {wanted[key][0]} but other "
                                     "content: only the first is installed")
            continue
        wanted[key] = (f, digest)
    with locked(pl.state_dir) as reg_path:
        reg = Registry.load(reg_path)
        out.reclaimed = reclaim_ended(reg, session.key)
        rec = reg.sessions.setdefault(session.key, {"fonts": [], "since": _now()})
        rec.update(pid=session.pid, create_time=session.create_time, workdir=session.workdir,
                   source=str(source))
        held: list[str] = rec["fonts"]
        copies: list[tuple[Path, Path, str]] = []
        for key, (src, digest) in wanted.items():
            dest = pl.font_dir / src.name
            entry = reg.fonts.get(key)
            if entry is not None:
                if entry.get("sha256") != digest:
                    out.conflicts.append(
                        f"{src.name}: another session installed a different font of this name "
                        f"({entry['path']}); not replaced, the render uses that one")
                    continue
                dest = Path(entry["path"])
                if not dest.exists() or entry.get("pending_delete"):
                    copies.append((src, dest, key))
                entry.pop("pending_delete", None)
                others = [h for h in reg.holders(key) if h != session.key]
                (out.shared if others else out.installed).append(src.name)
            else:
                existing = _existing(pl.font_dir, src.name)
                if existing is not None:
                    if file_hash(existing) == digest:
                        out.present.append(src.name)
                    else:
                        out.conflicts.append(
                            f"{src.name}: a different font file of this name is already "
                            f"installed ({existing}); not overwritten, the render uses it")
                    continue  # not ours: never held, never deleted
                reg.fonts[key] = {"path": str(dest), "sha256": digest, "since": _now()}
                copies.append((src, dest, key))
                out.installed.append(src.name)
            if key not in held:
                held.append(key)
        reg.save(reg_path)  # holds first: a crash while copying leaves nothing unrecorded
        for src, dest, _key in copies:
            try:
                _place_file(src, dest, pl.platform)
            except OSError as exc:  # release what this install added; nothing half-done stays
                for _s, _d, key in copies:
                    if key in held:
                        held.remove(key)
                collect(reg, pl, Outcome())
                if not held:
                    reg.sessions.pop(session.key, None)
                reg.save(reg_path)
                raise EnvironmentProblem(
                    f"cannot install the font {src.name} into {dest.parent}: "
                    f"{exc.strerror or exc}") from exc
        collect(reg, pl, out)
        if not held:
            del reg.sessions[session.key]
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
        reg = Registry.load(reg_path)
        out.reclaimed = reclaim_ended(reg, session.key)
        rec = reg.sessions.pop(session.key, None)
        mine = list(rec.get("fonts", [])) if rec else []
        for key in mine:
            if reg.holders(key) and key in reg.fonts:
                out.kept.append(Path(reg.fonts[key]["path"]).name)
        collect(reg, pl, out)
        reg.save(reg_path)
        if not reg.fonts and pl.own_font_dir:  # stmpo's folder goes with its last font
            with contextlib.suppress(OSError):
                pl.font_dir.rmdir()
    if rec is None:
        out.kept.clear()
    out.installed = mine  # what this session held
    return out


def refresh_cache(pl: Places) -> None:
    """Tell the font system (best effort): ``fc-cache`` on Linux, a broadcast on Windows."""
    if pl.platform == "linux":
        exe = shutil.which("fc-cache")
        if exe and pl.font_dir.is_dir():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run([exe, str(pl.font_dir)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=120, check=False)
    elif pl.platform == "win32":
        from ..host import winfonts

        winfonts.broadcast_font_change()
