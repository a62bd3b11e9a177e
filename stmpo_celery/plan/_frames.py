"""Frame specs are OpenJD range expressions, as Deadline Cloud writes them (pure, no I/O):
``"1-240"``, ``"1-10,50-60"``, ``"1-100:5"`` (every 5th frame), ``"1,3,7-20:2"``,
``"-5--1"``, ``"7"``. Parsed by openjd-model's range-expression parser."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..errors import BadInput

#: A render host never needs more frames than this in one task; a larger spec is a typo.
MAX_FRAMES = 1_000_000


#: an item without a step (``7``, ``1-240``, ``-10--1``): the common case, parsed here so
#: that ``stmpo render`` does not import openjd-model (~0.3 s) for it; the result is the
#: one openjd-model gives (tests compare the two)
_PLAIN_ITEM = re.compile(r"^(-?\d+)(?:\s*-\s*(-?\d+))?$")


def _item(text: str) -> range | list[int]:
    m = _PLAIN_ITEM.match(text)
    if m is not None:
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise BadInput(f"frame spec item {text!r} is not a frame, a range or a stepped range "
                           f"(it ends before it starts: write it as {hi}-{lo}): use 7, 1-240, "
                           "1-240:5 or -10--1")
        return range(lo, hi + 1)
    from openjd.model import IntRangeExpr  # heavy import (pydantic): only for steps

    try:
        return list(IntRangeExpr.from_str(text))
    except (ValueError, TypeError) as exc:
        lo_s, _, hi_s = text.partition(":")[0].rpartition("-")
        hint = ""
        if "descending" in str(exc) and lo_s.strip().lstrip("-").isdigit():
            hint = f" (it ends before it starts: write it as {hi_s.strip()}-{lo_s.strip()})"
        raise BadInput(
            f"frame spec item {text!r} is not a frame, a range or a stepped range{hint}: "
            "use 7, 1-240, 1-240:5 or -10--1"
        ) from None


def parse_frames(spec: str) -> list[int]:
    """Parse a frame spec into a sorted list of distinct frame numbers.

    Items are separated by commas; each is an OpenJD range expression item (the grammar of
    openjd-model's ``IntRangeExpr``): a frame (``7``, ``-3``), an inclusive range ``a-b``
    whose ends may be negative (``-10--1``), or a stepped range ``a-b:s`` (only the listed
    frames: ``1-9:4`` is 1, 5, 9). Items may overlap (their union is rendered), unlike in a
    strict OpenJD expression.
    """
    if spec is None or not str(spec).strip():
        raise BadInput("frame spec is empty: pass --frames like 1-240, 1-10,50-60 or 1-240:5")
    frames: set[int] = set()
    total = 0
    for item in str(spec).split(","):
        text = item.strip()
        if not text:
            raise BadInput(f"frame spec {spec!r} has an empty item: remove the stray comma")
        expr = _item(text)
        total += len(expr)
        if total > MAX_FRAMES:
            raise BadInput(f"frame spec {spec!r} names more than {MAX_FRAMES} frames: split it")
        frames.update(expr)
    return sorted(frames)


def parse_runs(spec: str) -> list[int]:
    """The frames of a spec stmpo wrote itself with :func:`format_frames` (``"1-3,7"``):
    for chunk events inside a run, where importing openjd-model (about a second of CPU)
    in every slot would cost more than the parse. User input goes to :func:`parse_frames`."""
    frames: list[int] = []
    for item in spec.split(","):
        text = item.strip()
        cut = text.find("-", 1)  # the first "-" after a leading minus sign
        if cut < 0:
            frames.append(int(text))
        else:
            frames.extend(range(int(text[:cut]), int(text[cut + 1 :]) + 1))
    return frames


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
