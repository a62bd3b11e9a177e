"""After Effects output patterns: ``shot_[#####].png`` -> one path per frame (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import BadInput

_TOKEN = re.compile(r"\[(#+)\]")
NAME_MAX = 255  #: bytes in one file or folder name on every file system a farm uses


def name_bytes(name: str) -> int:
    """Bytes of a file or folder name as file systems count them (UTF-8)."""
    return len(name.encode("utf-8", "surrogateescape"))


#: device names Windows reserves, with any extension (``CON.0001.png`` is the console)
WINDOWS_DEVICES = frozenset({"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
                             *(f"{d}{i}" for d in ("COM", "LPT") for i in "123456789¹²³")})
WINDOWS_FORBIDDEN = '<>:"|?*'  #: characters no Windows file or folder name may hold


def windows_name_problem(name: str) -> str | None:
    """Why ``name`` (one file or folder name) cannot be created on Windows, where After
    Effects renders: a character it forbids, a device name, or a trailing dot or space
    (which Windows silently drops, so the name would not be the one asked for)."""
    bad = sorted({c for c in name if c in WINDOWS_FORBIDDEN or ord(c) < 32})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return f"holds {shown}, which Windows does not allow in a name ({WINDOWS_FORBIDDEN})"
    if name.split(".")[0].rstrip(" ").upper() in WINDOWS_DEVICES:
        return (f"is the Windows device name {name.split('.')[0].rstrip(' ').upper()} "
                "(CON, PRN, AUX, NUL, COM1-9 and LPT1-9 are reserved, with any extension)")
    if name not in (".", "..") and name.endswith((".", " ")):
        return "ends with a dot or a space, which Windows drops from a name"
    return None


@dataclass(frozen=True)
class OutputPattern:
    """An output path as aerender's ``-output`` takes it.

    A pattern with a ``[###]`` token is an image sequence (one file per frame); one
    without is a movie, which a single aerender process must write whole.
    """

    raw: str

    @property
    def token(self) -> re.Match[str] | None:
        tokens = list(_TOKEN.finditer(self.raw))
        return tokens[-1] if tokens else None

    @property
    def is_sequence(self) -> bool:
        return self.token is not None

    def path_for(self, frame: int) -> str:
        tok = self.token
        if tok is None:
            return self.raw
        width = len(tok.group(1))
        return self.raw[: tok.start()] + f"{frame:0{width}d}" + self.raw[tok.end() :]


def parse_output(raw: str, source: str = "--output") -> OutputPattern:
    """``raw`` as an output pattern, refused (exit 2) in the words of where it came from
    (``source``: the flag, or the job parameters a submit checks)."""
    if not raw or not raw.strip():
        raise BadInput(f"{source} is empty: pass a path like /renders/shot_[#####].png")
    if "\x00" in raw:
        raise BadInput(f"{source} contains a NUL byte: pass a plain path")
    if raw.count("[#") > 1:
        raise BadInput(
            f"{source} {raw!r} has more than one frame token: keep a single [#####]"
        )
    if "[" in raw and "#" in raw and not _TOKEN.search(raw):
        raise BadInput(
            f"{source} {raw!r} has a malformed frame token: write it as [#####]"
        )
    *folders, name = re.split(r"[\\/]", raw)  # the name's length is checked per frame
    problem = windows_name_problem(name)
    if problem is not None:  # the name travels with the job: it must work where AE renders
        raise BadInput(f"{source} file name {name!r} {problem}: rename it")
    long = next((p for p in folders if name_bytes(p) > NAME_MAX), None)
    if long is not None:
        raise BadInput(f"{source} has a folder name of {name_bytes(long)} bytes "
                       f"({long[:24]}...): file systems allow {NAME_MAX}; shorten it")
    return OutputPattern(raw)


def check_frame_names(pattern: OutputPattern, frames: list[int],
                      source: str = "--output") -> None:
    """Refuse a pattern whose frame number makes a name Windows cannot create though the
    pattern's own name passed :func:`parse_output`: ``COM[#].png`` is ``COM1.png`` (a
    serial port) for frame 1. Device names end in one digit, 1 to 9: only those frames
    can do it."""
    if not pattern.is_sequence:
        return
    for f in sorted(frames):
        if f > 9:
            break
        if f >= 1:
            name = re.split(r"[\\/]", pattern.path_for(f))[-1]
            problem = windows_name_problem(name)
            if problem is not None:
                raise BadInput(f"{source} names frame {f} {name!r}, which {problem}: "
                               "put more digits in the token ([####]) or rename it")


def shared_frames(a: OutputPattern, a_frames: list[int], b: OutputPattern,
                  b_frames: list[int]) -> list[int]:
    """Frames of ``a`` whose file ``b`` would also write (two runs on one output)."""
    theirs = {b.path_for(f) for f in b_frames}
    return [f for f in a_frames if a.path_for(f) in theirs]
