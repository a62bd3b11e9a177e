"""Which files of a job's fonts folder are fonts, and whether each is whole (pure file
reading, no installing): run by ``stmpo bundle`` at submission and by ``stmpo fonts
install`` on the worker, before anything is installed.

After Effects renders with a substitute font, without failing, when a font is missing or
broken; so a file that is not what its extension says, is cut short, or shares its name
with a different font of the same job is refused (exit 2), and files After Effects cannot
use (web fonts, odd names) are named once.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ..errors import BadInput


def font_key(name: str) -> str:
    """Registry key of a font file name: Windows and macOS folders ignore case."""
    return name.casefold()


def _passed_over(source: Path, path: Path) -> bool:
    """The metadata macOS leaves beside files it copies or zips (``._Name.ttf`` AppleDouble
    files, a ``__MACOSX`` folder): not a font, neither installed nor mentioned."""
    return path.name.startswith("._") or "__MACOSX" in path.relative_to(source).parts


def _in_order(source: Path) -> Callable[[Path], tuple[int, str]]:
    return lambda p: (len(p.relative_to(source).parts), str(p))


def find_fonts(source: Path) -> list[Path]:
    """Font files below ``source`` (recursively), in a stable order."""
    found = [p for p in source.rglob("*") if p.suffix.lower() in FONT_EXTENSIONS
             and not _passed_over(source, p) and p.is_file()]
    return sorted(found, key=_in_order(source))


#: web fonts: After Effects cannot use them (a job's folder may carry them beside its fonts)
WEB_FONT_EXTENSIONS = frozenset({".woff", ".woff2", ".eot"})


def skipped_files(source: Path) -> list[tuple[Path, str]]:
    """The files below ``source`` that look like fonts but are not installed, each with
    ``"web"`` (a web font), ``"name"`` (a space or dot after a font extension,
    ``Brand.ttf ``) or ``"link"`` (a link to a file that is not there)."""
    out = []
    for p in sorted(source.rglob("*"), key=_in_order(source)):
        ext = p.suffix.lower()
        if ext in FONT_EXTENSIONS and p.is_symlink() and not p.exists() and \
                not _passed_over(source, p):
            out.append((p, "link"))
            continue
        if ext in FONT_EXTENSIONS or _passed_over(source, p) or not p.is_file():
            continue
        if ext in WEB_FONT_EXTENSIONS:
            out.append((p, "web"))
        elif Path(re.sub(r"[\s.]+$", "", p.name)).suffix.lower() in FONT_EXTENSIONS:
            out.append((p, "name"))
    return out


def skipped_note(source: Path, skipped: list[tuple[Path, str]]) -> str | None:
    """One line saying which of :func:`skipped_files` were skipped and why (None: none)."""
    if not skipped:
        return None
    web = [str(p.relative_to(source)) for p, why in skipped if why == "web"]
    odd = [repr(str(p.relative_to(source))) for p, why in skipped if why == "name"]
    parts = []
    if web:
        parts.append(f"{_listing(web)} (web fonts: After Effects cannot use them; attach the "
                     ".otf or .ttf)")
    if odd:
        parts.append(f"{_listing(odd)} (a space or dot after the extension: rename it)")
    links = [str(p.relative_to(source)) for p, why in skipped if why == "link"]
    if links:
        parts.append(f"{_listing(links)} (a link to a file that is not there: attach the "
                     "font file itself)")
    return (f"skipped {len(skipped)} file(s) of {source} that are not installable fonts: "
            + "; ".join(parts))


def _listing(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


# -- is it the font it says ------------------------------------------------------------------
#: reads what it needs of an open font file of this size: None when it fits the format,
#: else what is wrong with it (described, never quoted)
Check = Callable[[IO[bytes], int], "str | None"]


def font_problem(path: Path) -> str | None:
    """Why ``path`` is not the font its extension says (empty, cut short, or another kind
    of file), or None. After Effects does not say when it cannot use an attached font: it
    renders with a substitute, so a broken font file is refused before anything is
    installed. The content is described, never quoted: the file may be anything (a link
    to a private file, say)."""
    kind = _KINDS.get(path.suffix.lower())
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            if size == 0:
                return "is empty"
            why = kind[0](f, size) if kind is not None else None
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None if why is None or kind is None else f"is not {kind[1]} ({why})"


def _read(f: IO[bytes], at: int, n: int) -> bytes:
    f.seek(at)
    return f.read(n)


#: what a file that is not the font it claims may be, by how it starts
_SFNT_TAGS = (b"\x00\x01\x00\x00", b"true", b"typ1", b"OTTO")  # TrueType/OpenType tables
_LOOKS: tuple[tuple[tuple[bytes, ...], str], ...] = (
    ((b"PK\x03\x04",), "it is a ZIP archive: attach the font files inside it"),
    ((b"%PDF",), "it is a PDF document"),
    ((b"%!",), "it is PostScript text, such as a .pfa font"),
    ((b"wOFF", b"wOF2"), "it is a web font (WOFF), which After Effects cannot use"),
    ((b"ttcf",), "it is a TrueType/OpenType collection (.ttc)"),
    (_SFNT_TAGS, "it is a single TrueType/OpenType font (.ttf or .otf)"),
    ((b"\x80\x01",), "it is a PostScript Type 1 font (.pfb)"),
    ((b"StartFontMetrics",), "it is Adobe font metrics (.afm)"),
    ((b"MZ",), "it is a Windows program or font resource"),
    ((b"\x1f\x8b",), "it is compressed (gzip)"),
)


def _looks_like(head: bytes) -> str:
    """What a file seems to be from its first bytes, in words."""
    text = head.removeprefix(b"\xef\xbb\xbf")
    if text.lstrip().startswith(b"<"):
        return "it looks like HTML or XML, such as a web page saved under the font's name"
    for signatures, what in _LOOKS:
        if text.startswith(signatures):
            return what
    if text and all(b >= 0x20 and b != 0x7F or b in b"\t\n\r" for b in text):
        return "it is text"
    return "its first bytes fit no font format"


def _starts(*signatures: bytes) -> Check:
    """A format whose files start with one of these bytes."""
    def check(f: IO[bytes], size: int) -> str | None:
        head = _read(f, 0, 16)
        return None if head.startswith(signatures) else _looks_like(head)
    return check


def _pfm_or_fnt(versions: tuple[int, ...]) -> Check:
    """A Windows font metrics (.pfm) or raster font (.fnt) header: its version word (the
    size it gives next is not checked: some font tools write it wrong)."""
    def check(f: IO[bytes], size: int) -> str | None:
        head = _read(f, 0, 16)
        if len(head) >= 2 and struct.unpack_from("<H", head)[0] in versions:
            return None
        return _looks_like(head)
    return check


def _dfont(f: IO[bytes], size: int) -> str | None:
    """A Mac resource fork in a data fork: data and map offsets and lengths inside the file."""
    head = _read(f, 0, 16)
    if len(head) == 16:
        data_at, map_at, data_len, map_len = struct.unpack_from(">IIII", head)
        if data_at >= 16 and data_at + data_len <= size and map_len > 0 and \
                map_at + map_len <= size:
            return None
    return _looks_like(head)


def _cut(size: int, what: str, need: int) -> str:
    return f"it is cut short: {size} bytes, and {what} {need}"


def _sfnt_at(f: IO[bytes], size: int, at: int) -> str | None:
    """A whole TrueType/OpenType font at byte ``at``: its header, a table directory of at
    least one table, and every table it lists inside the file."""
    head = _read(f, at, 12)
    if not head.startswith(_SFNT_TAGS):
        return _looks_like(head)
    if len(head) < 12:
        return _cut(size, "its header needs", at + 12)
    (count,) = struct.unpack_from(">H", head, 4)
    if count == 0:
        return "its table directory lists no tables"
    end = at + 12 + 16 * count
    if end > size:
        return _cut(size, "its table directory needs", end)
    tables = struct.iter_unpack(">4sIII", _read(f, at + 12, 16 * count))
    end = max(offset + length for _tag, _sum, offset, length in tables)
    return _cut(size, "its tables need", end) if end > size else None


def _sfnt(f: IO[bytes], size: int) -> str | None:
    return _sfnt_at(f, size, 0)


def _collection(f: IO[bytes], size: int) -> str | None:
    """A TrueType/OpenType collection: its header, and a whole font at each offset it lists."""
    head = _read(f, 0, 12)
    if not head.startswith(b"ttcf"):
        return _looks_like(head)
    if len(head) < 12:
        return _cut(size, "its header needs", 12)
    (count,) = struct.unpack_from(">I", head, 8)
    if count == 0:
        return "its header lists no fonts"
    end = 12 + 4 * count
    if end > size:
        return _cut(size, "its list of fonts needs", end)
    for i, at in enumerate(struct.unpack(f">{count}I", _read(f, 12, 4 * count)), 1):
        if _read(f, at, 4) not in _SFNT_TAGS:
            return f"its font {i} of {count} is not at byte {at}, where its header says"
        why = _sfnt_at(f, size, at)
        if why is not None:
            return f"its font {i} of {count}: {why}"
    return None


#: per extension: does an open file of this size fit the format (None) or what is wrong,
#: and what the format is called
_KINDS: dict[str, tuple[Check, str]] = {
    ".ttf": (_sfnt, "a TrueType/OpenType font"),
    ".otf": (_sfnt, "a TrueType/OpenType font"),
    ".ttc": (_collection, "a TrueType/OpenType collection"),
    ".otc": (_collection, "a TrueType/OpenType collection"),
    ".pfb": (_starts(b"\x80\x01"), "a PostScript Type 1 font (PFB)"),
    ".afm": (_starts(b"StartFontMetrics"), "Adobe font metrics"),
    ".fon": (_starts(b"MZ"), "a Windows font resource"),
    ".pfm": (_pfm_or_fnt((0x100,)), "PostScript font metrics (PFM)"),
    ".fnt": (_pfm_or_fnt((0x200, 0x300)), "a Windows raster font (FNT)"),
    ".dfont": (_dfont, "a Mac font suitcase (dfont)"),
}
FONT_EXTENSIONS = frozenset(_KINDS)  #: the files ``stmpo fonts`` installs


def refuse_broken_fonts(files: list[Path], fix: str) -> None:
    """Raise :class:`BadInput` naming the first of ``files`` that is not a usable font
    (``fix`` says what to do), or two of them with one name and different content: fonts
    are installed side by side in one folder, so only one of them could be used."""
    bad = [(f, why) for f in files if (why := font_problem(f)) is not None]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise BadInput(f"the font file {bad[0][0]} {bad[0][1]}{more}: {fix}")
    by_key: dict[str, list[Path]] = {}
    for f in files:
        by_key.setdefault(font_key(f.name), []).append(f)
    for group in by_key.values():
        if len(group) > 1:
            by_name(group)


def by_name(files: list[Path]) -> dict[str, tuple[Path, str]]:
    """``files`` by :func:`font_key` of their name, each the first of that name with its
    content hash. :class:`BadInput` when two of one name differ (the same font twice is
    fine)."""
    out: dict[str, tuple[Path, str]] = {}
    for f in files:
        try:
            digest = file_hash(f)
        except OSError as exc:
            raise BadInput(f"the font file {f} cannot be read ({exc.strerror or exc}): make "
                           "it readable or remove it") from None
        key = font_key(f.name)
        if key not in out:
            out[key] = (f, digest)
        elif out[key][1] != digest:
            raise BadInput(
                f"the font files {out[key][0]} and {f} have one name but different content: "
                "rename one of them (a job's fonts are installed side by side in one folder, "
                "so only one could be used)")
    return out


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def same_content(path: Path, digest: str) -> bool:
    try:
        return file_hash(path) == digest
    except OSError:  # a folder of that name, or unreadable: not this font
        return False
