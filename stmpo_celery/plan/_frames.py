"""Frame specs: ``"1-240"``, ``"1-10,50-60"``, ``"-5--1"``, ``"7"`` (pure, no I/O)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..errors import BadInput

#: A render host never needs more frames than this in one task; a larger spec is a typo.
MAX_FRAMES = 1_000_000

_RANGE = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?$")


def parse_frames(spec: str) -> list[int]:
    """Parse a frame spec into a sorted list of distinct frame numbers.

    Items are separated by commas; each is a single frame (``7``, ``-3``) or an inclusive
    range ``a-b`` whose ends may be negative (``-10--1``, ``-5-5``).
    """
    if spec is None or not str(spec).strip():
        raise BadInput("frame spec is empty: pass --frames like 1-240 or 1-10,50-60")
    frames: set[int] = set()
    for item in str(spec).split(","):
        if not item.strip():
            raise BadInput(f"frame spec {spec!r} has an empty item: remove the stray comma")
        m = _RANGE.match(item)
        if not m:
            raise BadInput(
                f"frame spec item {item.strip()!r} is not a frame or a range: "
                "use 7, 1-240 or -10--1"
            )
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) is not None else start
        if end < start:
            raise BadInput(
                f"frame range {item.strip()!r} ends before it starts: write it as {end}-{start}"
            )
        if end - start + 1 + len(frames) > MAX_FRAMES:
            raise BadInput(f"frame spec {spec!r} names more than {MAX_FRAMES} frames: split it")
        frames.update(range(start, end + 1))
    return sorted(frames)


def runs(frames: Iterable[int]) -> list[tuple[int, int]]:
    """Collapse frames into contiguous inclusive runs: ``[1,2,3,7]`` -> ``[(1,3),(7,7)]``."""
    out: list[tuple[int, int]] = []
    for f in sorted(set(frames)):
        if out and f == out[-1][1] + 1:
            out[-1] = (out[-1][0], f)
        else:
            out.append((f, f))
    return out


def format_frames(frames: Sequence[int] | Iterable[int]) -> str:
    """The inverse of :func:`parse_frames`: ``[1,2,3,7]`` -> ``"1-3,7"``."""
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs(frames))
