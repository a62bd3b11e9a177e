"""The simulator's knobs: ``STMPO_FAKE_*`` environment variables (see :mod:`.simulator`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

_TRUE = {"1", "true", "yes", "on"}

#: STMPO_FAKE_FAILURE: the line printed, and whether the renderer then renders on (True)
#: or stops (False). Every one of them exits 0, as After Effects too often does.
FAILURES: dict[str, tuple[str, bool]] = {
    "licence": ("aerender ERROR: Unable to obtain a license. Please sign in to Creative Cloud "
                "or set up a render-only node.", False),
    "startup": ("aerender ERROR: unexpected failure during application startup", False),
    "serial": ("Trapcode Particular: Another user is using the same serial number.", True),
    "missing-effect": ("INFO:This project contains a reference to a missing effect. Please "
                       "install the following effect to restore this reference. ( Particular )",
                       True),
    "missing-deps": ("aerender ERROR: Unable to render: a layer has missing dependencies", True),
    "autosave": ("After Effects error: Auto-save failed: the project folder is not writable.",
                 True),
    "logged-error": ("PROGRESS: After Effects logged one error; see the render log.", True),
    "read-source": ("Could not read from source. Please check the settings and try again.",
                    True),  # bare, as After Effects prints a footage decode failure
    "outside-range": ("WARNING:After Effects warning: timeSpanStart of -0,87 seconds will cause "
                      "render to have frames outside of range defined by comp "
                      "displayStartTime (0,87) and end of comp duration (26,63). Render will "
                      "succeed, but may have blank frames.", True),
    "write-error": ("After Effects error: Rendering error while writing to file (output). "
                    "Unable to delete existing file. ( 33 :: 7 )", False),
}


class UsageError(Exception):
    """A command line (or knob) the real aerender would reject."""


def _env(name: str) -> str:
    return os.environ.get(f"STMPO_FAKE_{name}", "").strip()


def _frames(name: str) -> set[int]:
    raw = _env(name)
    try:
        return {int(x) for x in raw.split(",") if x.strip()}
    except ValueError:
        raise UsageError(f"STMPO_FAKE_{name}={raw!r}: expected frame numbers") from None


_RANGE = re.compile(r"^(-?\d+)(?:\s*-\s*(-?\d+))?\s*[xX]\s*(\d+(?:\.\d*)?)$")


def _ranges(name: str) -> list[tuple[int, int, float]]:
    """``"100-149x10,7x2"`` -> [(100, 149, 10.0), (7, 7, 2.0)]; frames may be negative."""
    out: list[tuple[int, int, float]] = []
    for item in filter(None, (x.strip() for x in _env(name).split(","))):
        match = _RANGE.match(item)
        if not match:
            raise UsageError(f"STMPO_FAKE_{name}: bad item {item!r} (want A-BxM or AxM)")
        lo, hi = int(match[1]), int(match[2] or match[1])
        out.append((min(lo, hi), max(lo, hi), float(match[3])))
    return out


@dataclass
class Knobs:
    startup: float = 2.0
    frame_cost: float = 0.05
    heavy: list[tuple[int, int, float]] = field(default_factory=list)
    ramp: list[tuple[int, int, float]] = field(default_factory=list)
    fail: set[int] = field(default_factory=set)
    crash: set[int] = field(default_factory=set)
    crash_exit: int | None = None
    hang: set[int] = field(default_factory=set)
    busy: dict[int, float] = field(default_factory=dict)
    no_write: set[int] = field(default_factory=set)
    empty: set[int] = field(default_factory=set)
    truncate: set[int] = field(default_factory=set)
    orphan: set[int] = field(default_factory=set)
    write_time: float = 0.0
    quit_time: float = 0.0
    once_dir: str = ""
    ignore_sigterm: bool = False
    missing_fonts: bool = False
    shuffle: bool = False
    relative: bool = False
    count: bool = False  #: (N) counts frames done (MFR on some versions)
    failure: str = ""
    fields: str = ""  #: "U" or "L": field rendering, the frame number carries the field
    omp_conflict: bool = False
    journal: str = ""

    @classmethod
    def from_env(cls) -> Knobs:
        k = cls(heavy=_ranges("HEAVY"), ramp=_ranges("RAMP"), fail=_frames("FAIL_FRAME"),
                crash=_frames("CRASH_FRAME"), hang=_frames("HANG_FRAME"),
                no_write=_frames("NO_WRITE_FRAME"), empty=_frames("EMPTY_FRAME"),
                truncate=_frames("TRUNCATE_FRAME"), orphan=_frames("ORPHAN_FRAME"),
                once_dir=_env("ONCE_DIR"), journal=_env("JOURNAL"),
                ignore_sigterm=_env("IGNORE_SIGTERM").lower() in _TRUE,
                missing_fonts=_env("MISSING_FONTS").lower() in _TRUE,
                shuffle=_env("MFR_SHUFFLE").lower() in _TRUE,
                relative=_env("NUMBERING").lower() == "relative",
                count=_env("NUMBERING").lower() == "count",
                failure=_env("FAILURE").lower(), fields=_env("FIELDS").upper(),
                omp_conflict=_env("OMP_CONFLICT").lower() in _TRUE)  # fmt: skip
        try:
            k.startup = float(_env("STARTUP") or 2.0)
            k.frame_cost = float(_env("FRAME_COST") or 0.05)
            k.write_time = float(_env("WRITE_TIME") or 0.0)
            k.quit_time = float(_env("QUIT_TIME") or 0.0)
            if _env("CRASH_EXIT"):
                k.crash_exit = int(_env("CRASH_EXIT"))
            for item in filter(None, _env("BUSY_FRAME").split(",")):
                frame, _, seconds = item.partition(":")
                k.busy[int(frame)] = float(seconds)
        except ValueError as exc:
            raise UsageError(f"bad STMPO_FAKE_* value: {exc}") from None
        if k.failure and k.failure not in FAILURES:
            raise UsageError(f"STMPO_FAKE_FAILURE={k.failure!r}: use one of "
                             + ", ".join(FAILURES))
        if k.fields not in ("", "U", "L"):
            raise UsageError(f"STMPO_FAKE_FIELDS={k.fields!r}: use U (upper first) or L")
        if k.crash_exit == 0:
            raise UsageError("STMPO_FAKE_CRASH_EXIT must be non-zero")
        return k


def frame_cost(frame: int, knobs: Knobs) -> float:
    """Seconds frame ``frame`` takes: depends only on the absolute frame number."""
    cost = knobs.frame_cost
    for lo, hi, factor in knobs.heavy:
        if lo <= frame <= hi:
            cost *= factor
    for lo, hi, top in knobs.ramp:
        if lo <= frame <= hi:
            cost *= 1.0 if hi == lo else 1.0 + (top - 1.0) * (frame - lo) / (hi - lo)
    return cost


