"""Parse aerender's output, one line at a time (pure: no I/O).

aerender reports progress on stdout with lines such as::

    aerender version 24.6x1
    PROGRESS: Launching After Effects...
    PROGRESS:  4/17/2024 11:52:38 AM: Starting composition Comp 1.
    PROGRESS:      Start: 0:00:00:00
    PROGRESS:  0:00:04:18 (118): 1 Seconds
    PROGRESS:  4/17/2024 11:53:10 AM: Finished composition Comp 1.
    PROGRESS:  Total Time Elapsed: 32 Seconds

:class:`AerenderLog` turns those lines into :data:`Event` values and keeps the
running state a chunk needs: which frames are done, the strong errors that fail
the chunk even when aerender exits 0, the loud warnings, and a tail for reports.

Frame numbering
---------------
The number in parentheses on a frame line is the absolute comp frame on some
After Effects versions and chunk-relative (1-based, sometimes 0-based) on others,
depending on the version and on Multi-Frame Rendering. The mode is decided once,
from the first frame line of the chunk ``[start, end]``:

* the number lies inside ``[start, end]``: every number is absolute;
* otherwise, it is ``0`` or ``1``: every number is relative with that base,
  ``frame = start + number - base``;
* otherwise the frame cannot be known: ``FrameDone.frame`` is ``None``, but the
  frame still counts in :attr:`AerenderLog.done_count`.

The heuristic is ambiguous when ``start`` is 0 or 1: a chunk starting at frame 1
reads the same either way (harmless), but a chunk starting at 0 whose log numbers
frames from 1 is taken as absolute and would resolve one frame late. With MFR the
first line printed need not be the first frame, so a relative log whose first
printed number is neither 0 nor 1 cannot be resolved. A resolved frame that falls
outside ``[start, end]`` is reported as ``None`` (the mode guess was wrong for it).
Callers must therefore confirm frames on disk; the log is evidence, not proof.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass

__all__ = [
    "AeWarning",
    "AerenderLog",
    "CompFinished",
    "CompStarted",
    "Event",
    "FrameDone",
    "Launched",
    "StrongError",
]


@dataclass(frozen=True)
class FrameDone:
    """One frame line, e.g. ``PROGRESS:  0:00:04:18 (118): 1 Seconds``."""

    number: int  #: the number in parentheses, as printed
    frame: int | None  #: the absolute comp frame, ``None`` when it cannot be known
    timecode: str  #: the timecode as printed (``:`` or drop-frame ``;``)
    seconds: float | None  #: the render time printed after the number, if any


@dataclass(frozen=True)
class StrongError:
    """``aerender ERROR`` or ``After Effects error:``: fails the chunk even on exit 0."""

    text: str


@dataclass(frozen=True)
class AeWarning:
    """A loud warning that does not fail the chunk (e.g. missing fonts)."""

    text: str


@dataclass(frozen=True)
class Launched:
    """``PROGRESS: Launching After Effects...``"""


@dataclass(frozen=True)
class CompStarted:
    """``Starting composition <name>.``"""

    name: str


@dataclass(frozen=True)
class CompFinished:
    """``Finished composition <name>.``"""


Event = FrameDone | StrongError | AeWarning | Launched | CompStarted | CompFinished

# The timecode is usually ``H:MM:SS:FF`` (``;`` separators for drop-frame), but a
# project displaying frames or feet+frames prints ``118`` or ``7+06``: accept any.
_FRAME = re.compile(
    r"PROGRESS:\s*(?P<tc>-?\d[\d:;.+]*)\s*\(\s*(?P<n>-?\d+)\s*\)\s*:?\s*"
    r"(?P<sec>\d+(?:[.,]\d+)?)?"
)
_STRONG = re.compile(r"aerender\s+error|after\s+effects\s+error\s*:", re.IGNORECASE)
_WARNING = re.compile(r"(?i:after\s+effects\s+warning\s*:)|WARNING\s*:")
_FONTS = re.compile(r"missing\s+fonts?", re.IGNORECASE)
_LAUNCHING = re.compile(r"Launching\s+After\s+Effects", re.IGNORECASE)
_STARTING = re.compile(r"Starting\s+composition\s*(?P<name>.*)$", re.IGNORECASE)
_FINISHED = re.compile(r"Finished\s+composition", re.IGNORECASE)
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_OPENING = '"\u201c\u201e\u00ab'
_CLOSING = '"\u201d\u00bb'


class _Mode(enum.Enum):
    UNDECIDED = "undecided"
    ABSOLUTE = "absolute"
    RELATIVE = "relative"
    UNKNOWN = "unknown"


class AerenderLog:
    """The running state of one aerender process rendering frames ``start..end``."""

    def __init__(self, start: int, end: int, tail_lines: int = 20) -> None:
        if end < start:
            raise ValueError(f"chunk end {end} is before its start {start}")
        if tail_lines < 0:
            raise ValueError("tail_lines must be >= 0")
        self.start = start
        self.end = end
        self.frames_done: set[int] = set()
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.launched = False
        self.finished = False
        self.comp_name: str | None = None
        self._numbers: set[int] = set()
        self._mode = _Mode.UNDECIDED
        self._base = 0
        self._tail: deque[str] = deque(maxlen=tail_lines)

    @property
    def done_count(self) -> int:
        """How many distinct frame numbers were reported done (what progress counts)."""
        return len(self._numbers)

    @property
    def numbering(self) -> str:
        """The numbering mode decided from the first frame line (for diagnostics)."""
        if self._mode is _Mode.RELATIVE:
            return f"relative-{self._base}"
        return self._mode.value

    def tail(self) -> list[str]:
        """The last non-empty lines seen, oldest first, for failure reports."""
        return list(self._tail)

    def feed(self, line: str) -> list[Event]:
        """Parse one line of output (any line ending) and return its events.

        A stray ``\\r`` inside the line separates lines, as a terminal would show it.
        """
        events: list[Event] = []
        for part in _LINE_BREAKS.split(line):
            text = part.strip()
            if text:
                self._tail.append(text)
                events.extend(self._parse(text))
        return events

    def _parse(self, text: str) -> list[Event]:
        if _STRONG.search(text):
            self.errors.append(text)
            return [StrongError(text)]
        if _WARNING.search(text) or _FONTS.search(text):
            self.warnings.append(text)
            return [AeWarning(text)]
        match = _FRAME.search(text)
        if match:
            return [self._frame(match)]
        if _LAUNCHING.search(text):
            self.launched = True
            return [Launched()]
        started = _STARTING.search(text)
        if started:
            name = started.group("name").strip()
            if name.endswith("."):
                name = name[:-1].rstrip()
            if len(name) >= 2 and name[0] in _OPENING and name[-1] in _CLOSING:
                name = name[1:-1]
            self.comp_name = name
            return [CompStarted(name)]
        if _FINISHED.search(text):
            self.finished = True
            return [CompFinished()]
        return []

    def _frame(self, match: re.Match[str]) -> FrameDone:
        number = int(match.group("n"))
        if self._mode is _Mode.UNDECIDED:
            if self.start <= number <= self.end:
                self._mode = _Mode.ABSOLUTE
            elif number in (0, 1):
                self._mode, self._base = _Mode.RELATIVE, number
            else:
                self._mode = _Mode.UNKNOWN
        frame: int | None
        if self._mode is _Mode.ABSOLUTE:
            frame = number
        elif self._mode is _Mode.RELATIVE:
            frame = self.start + number - self._base
        else:
            frame = None
        if frame is not None and not self.start <= frame <= self.end:
            frame = None
        self._numbers.add(number)
        if frame is not None:
            self.frames_done.add(frame)
        sec = match.group("sec")
        seconds = float(sec.replace(",", ".")) if sec is not None else None
        return FrameDone(number, frame, match.group("tc"), seconds)
