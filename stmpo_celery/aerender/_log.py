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

That heuristic is only the fallback. The timecode printed on a frame line is the
absolute comp time of that frame, on every version and with MFR too; once the
settings block has named the render's ``Start:`` timecode and the ``Frame Rate:``,
each frame is ``start + (timecode - Start)`` in frames (drop-frame ``;`` timecodes
included). Out-of-order MFR frames are then attributed exactly, whatever the
parenthesised number means (absolute, relative, or a count of frames done).

Fatal and benign lines
----------------------
Besides the strong markers (``aerender ERROR``, ``After Effects error:``), these fail
the chunk (patterns as Thinkbox Deadline's AfterEffects plugin and other aerender
wrappers match them): licence failures (``Unable to obtain a license``), start-up
failures (``unexpected failure during application startup``), a plug-in licence
clash (``... is using the same serial number``, ``Invalid Serial Number``),
``logged one error``, ``Rendering error while writing to file``, an OpenMP runtime
clash (``OMP: Error #15``; aerender is started with ``KMP_DUPLICATE_LIB_OK=TRUE``)
and ``internal verification failure``. Missing effects and missing layer
dependencies fail too (the frames would exist but render wrong) unless the run
ignores them (``--ignore-missing-effects``); then they are loud warnings. An
``After Effects error: Auto-save ...`` line is a warning: the render goes on.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass, field

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
    """A fatal line (``aerender ERROR``, a licence failure ...): fails the chunk even on
    exit 0. ``hint`` says what to do about it, when there is something to say."""

    text: str
    hint: str = field(default="", compare=False)


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
# project displaying frames or feet+frames prints ``118`` or ``7+06``: accept any. With
# field rendering on, the number carries the field order: ``(12U)``, ``(12L)``.
_FRAME = re.compile(
    r"PROGRESS:\s*(?P<tc>-?\d[\d:;.+]*)\s*\(\s*(?P<n>-?\d+)\s*[ULul]?\s*\)\s*:?\s*"
    r"(?P<sec>\d+(?:[.,]\d+)?)?"
)
_STRONG = re.compile(r"aerender\s+error|after\s+effects\s+error\s*:", re.IGNORECASE)
#: (pattern, hint) of fatal lines that carry no strong marker
_FATAL: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), hint) for p, hint in (
        (r"unable\s+to\s+obtain\s+a\s+licen[cs]e",
         "After Effects has no licence on this host: sign in, or create the empty "
         "ae_render_only_node.txt in the user's Documents for render-only mode"),
        (r"unexpected\s+failure\s+during\s+application\s+startup",
         "After Effects could not start on this host"),
        (r"is\s+using\s+the\s+same\s+serial\s+number|invalid\s+serial\s+number",
         "a plug-in licence is in use elsewhere or invalid: frames would be watermarked"),
        (r"logged\s+one\s+error", ""),
        (r"rendering\s+error\s+while\s+writing\s+to\s+file", ""),
        (r"OMP:\s*Error\s*#\s*15\b",
         "two OpenMP runtimes were loaded: set KMP_DUPLICATE_LIB_OK=TRUE"),
        (r"internal\s+verification\s+failure", ""),
        # printed bare (no error marker), and the render goes on with black frames; at
        # the start of the line: a comp, footage or folder may carry these words too
        (r"^(?:[A-Za-z ]+:\s*)?could\s+not\s+read\s+from\s+source",
         "a footage file could not be decoded on this host: check that its path resolves "
         "here and that the host can decode its codec (HEVC/H.264 need hardware decoding "
         "or a codec pack on Windows)"),
        # "Render will succeed, but may have blank frames": they are not rendered frames
        (r"^(?:[A-Za-z ]+:\s*)*timeSpanStart\s+of\s+\S+\s+seconds\s+will\s+cause\s+render"
         r"\s+to\s+have\s+frames\s+outside",
         "the frames asked for lie outside the comp's time span and would be blank: "
         "render only frames inside the comp (stmpo inspect shows its range)"),
    )
)
_MISSING_EFFECTS = re.compile(
    r"reference\s+to\s+a\s+missing\s+effect|layer\s+dependencies\s+are\s+missing"
    r"|a\s+layer\s+has\s+missing\s+dependencies",
    re.IGNORECASE,
)
#: a dependency list made of font entries only (``Text Layer: Font family: Roboto, Font
#: style: Black``, one or more): the font policy's warning, not a failure. Anything else
#: in the list (an effect, whatever its name) keeps it a missing dependency.
_FONT_ENTRY = r"(?:[^:;|{}]*:\s*)?font\s+family\s*:\s*[^,;|]+,\s*font\s+style\s*:\s*[^;|]+"
_FONTS_ONLY = re.compile(rf"^\s*{_FONT_ENTRY}(?:[;|]\s*{_FONT_ENTRY})*[;|]?\s*$", re.IGNORECASE)
#: where the list starts: after the grouped message's ``}``, or after the header's colon
_LIST_START = re.compile(r".*(?:\}|dependencies\s+are\s+missing\s*:?)", re.IGNORECASE | re.DOTALL)
_MISSING_EFFECTS_HINT = (
    "frames would render without the effect: install it on the render host, or pass "
    "--ignore-missing-effects (IgnoreMissingEffects=true) to render anyway"
)
#: The line that only announces a list ("... are missing") names them on the next line.
_DEPS_HEADER = re.compile(r"layer\s+dependencies\s+are\s+missing\s*:?\s*$", re.IGNORECASE)
_AUTOSAVE = re.compile(r"auto-?\s*save", re.IGNORECASE)
_HDR_START = re.compile(r"PROGRESS:\s*Start\s*:\s*(?P<tc>-?\d[\d:;]*)\s*$", re.IGNORECASE)
_HDR_FPS = re.compile(r"PROGRESS:\s*Frame\s+Rate\s*:\s*(?P<fps>\d+(?:[.,]\d+)?)",
                      re.IGNORECASE)
# A translated build words these labels in its own language: before the first frame,
# the first labelled lone H:MM:SS:FF value is the start (English: Start, End, Duration
# follow in that order) and a labelled "25,00 (...)" is the frame rate.
_HDR_START_ANY = re.compile(
    r"PROGRESS:\s*[^\d\s:][^:]*:\s*(?P<tc>-?\d+[:;]\d+[:;]\d+[:;]\d+)\s*$")
_HDR_FPS_ANY = re.compile(
    r"PROGRESS:\s*[^\d\s:][^:]*:\s*(?P<fps>\d+[.,]\d+)\s*\([^()\d]*\)\s*$")
TRANSLATED_WARNING = (
    "After Effects logs in another language here: stmpo reads its frame lines and its "
    "ERROR markers, but not translated failure lines that carry no marker (missing "
    "effects, licence, unreadable footage); check the chunk logs, or install After "
    "Effects in English on render hosts")
_WARNING = re.compile(r"(?i:after\s+effects\s+warning\s*:)|WARNING\s*:")
_FONTS = re.compile(r"missing\s+fonts?", re.IGNORECASE)
_LAUNCHING = re.compile(r"Launching\s+After\s+Effects", re.IGNORECASE)
_STARTING = re.compile(r"Starting\s+composition\s*(?P<name>.*)$", re.IGNORECASE)
_FINISHED = re.compile(r"Finished\s+composition", re.IGNORECASE)
#: progress lines that carry a name the user chose (a comp, an output path): matched
#: before any failure pattern, so a comp called "Could not read from source" renders
_NAMING = re.compile(r"PROGRESS:\s*(?:\S[^:]*?\d:\d\d\S*(?:\s+[AP]M)?:\s*)?"
                     r"(?:Starting|Finished)\s+composition"
                     r"|PROGRESS:\s*Output\s+To\s*:", re.IGNORECASE)
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_OPENING = '"\u201c\u201e\u00ab'
_CLOSING = '"\u201d\u00bb'


def timecode_frames(tc: str, fps: float) -> int | None:
    """Frames from time 0 of a printed timecode (``H:MM:SS:FF``, drop-frame ``;``, or a
    plain frame count); ``None`` when it cannot be read (feet+frames, odd shapes)."""
    text = tc.strip()
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("-")
    if text.isdigit():
        return sign * int(text)
    parts = re.split(r"[:;]", text)
    if len(parts) != 4 or not all(p.isdigit() for p in parts) or fps <= 0:
        return None
    h, m, s, ff = (int(p) for p in parts)
    nominal = round(fps)
    frames = ((h * 60 + m) * 60 + s) * nominal + ff
    if ";" in text and abs(fps - nominal) > 1e-3 and nominal % 30 == 0:
        drop = 2 * nominal // 30  # drop-frame: 2 (4 at 59.94) numbers a minute, not each 10th
        minutes = 60 * h + m
        frames -= drop * (minutes - minutes // 10)
    return sign * frames


class _Mode(enum.Enum):
    UNDECIDED = "undecided"
    ABSOLUTE = "absolute"
    RELATIVE = "relative"
    UNKNOWN = "unknown"


class AerenderLog:
    """The running state of one aerender process rendering frames ``start..end``."""

    def __init__(self, start: int, end: int, tail_lines: int = 20,
                 ignore_missing_effects: bool = False) -> None:
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
        self.ignore_missing_effects = ignore_missing_effects
        self._numbers: set[tuple[str, int]] = set()
        self._mode = _Mode.UNDECIDED
        self._start_tc: str | None = None
        self._fps: float | None = None
        self._by_timecode = 0  #: frame lines attributed from their timecode
        self._pending: str | None = None  #: "dependencies are missing", waiting for the list
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
        if self._mode is _Mode.UNDECIDED and self._by_timecode:
            return "timecode"
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
                if self._pending is not None:  # the list of what is missing, if it is one
                    header, self._pending = self._pending, None
                    listed = not text.upper().startswith("PROGRESS:")
                    events.append(self._missing_effects(f"{header} {text}" if listed else header))
                    if listed:
                        continue
                events.extend(self._parse(text))
        return events

    def close(self) -> list[Event]:
        """The output ended: a failure still waiting for its next line is reported now."""
        if self._pending is None:
            return []
        header, self._pending = self._pending, None
        return [self._missing_effects(header)]

    def _missing_effects(self, text: str) -> Event:
        start = _LIST_START.match(text)
        listed = text[start.end():] if start else ""
        if self.ignore_missing_effects or _FONTS_ONLY.match(listed):
            self.warnings.append(text)
            return AeWarning(text)
        self.errors.append(text)
        return StrongError(text, _MISSING_EFFECTS_HINT)

    def _parse(self, text: str) -> list[Event]:
        if _NAMING.match(text):  # a comp's or an output's name: its words are not events
            return self._named(text)
        strong = _STRONG.search(text)
        if strong and _AUTOSAVE.search(text, strong.end()):
            self.warnings.append(text)  # After Effects could not auto-save: render goes on
            return [AeWarning(text)]
        if _DEPS_HEADER.search(text):
            self._pending = text  # reported with the next line, which names them
            return []
        if _MISSING_EFFECTS.search(text):
            return [self._missing_effects(text)]
        for pattern, hint in _FATAL:
            if pattern.search(text):
                self.errors.append(text)
                return [StrongError(text, hint)]
        if strong:
            self.errors.append(text)
            return [StrongError(text)]
        if _WARNING.search(text) or _FONTS.search(text):
            self.warnings.append(text)
            return [AeWarning(text)]
        match = _FRAME.search(text)
        if match:
            return [self._frame(match)]
        header = _HDR_START.search(text)
        if header is None and self._start_tc is None and not self._numbers:
            header = _HDR_START_ANY.search(text)
            if header:  # the settings block is translated: say what that costs, once
                self._start_tc = header.group("tc")
                self.warnings.append(TRANSLATED_WARNING)
                return [AeWarning(TRANSLATED_WARNING)]
        if header:
            self._start_tc = header.group("tc")
            return []
        fps = _HDR_FPS.search(text)
        if fps is None and self._fps is None and not self._numbers:
            fps = _HDR_FPS_ANY.search(text)
        if fps:
            self._fps = float(fps.group("fps").replace(",", "."))
            return []
        if _LAUNCHING.search(text):
            self.launched = True
            return [Launched()]
        return self._named(text)

    def _named(self, text: str) -> list[Event]:
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

    def _from_timecode(self, tc: str) -> int | None:
        if self._start_tc is None or self._fps is None:
            return None
        at, origin = timecode_frames(tc, self._fps), timecode_frames(self._start_tc, self._fps)
        if at is None or origin is None:
            return None
        return self.start + at - origin

    def _frame(self, match: re.Match[str]) -> FrameDone:
        number = int(match.group("n"))
        frame: int | None
        by_tc = self._from_timecode(match.group("tc"))
        if by_tc is not None:
            self._by_timecode += 1
            frame = by_tc if self.start <= by_tc <= self.end else None
            self._numbers.add(("f", by_tc))
            if frame is not None:
                self.frames_done.add(frame)
            return FrameDone(number, frame, match.group("tc"), _seconds(match))
        if self._mode is _Mode.UNDECIDED:
            if self.start <= number <= self.end:
                self._mode = _Mode.ABSOLUTE
            elif number in (0, 1):
                self._mode, self._base = _Mode.RELATIVE, number
            else:
                self._mode = _Mode.UNKNOWN
        if self._mode is _Mode.ABSOLUTE:
            frame = number
        elif self._mode is _Mode.RELATIVE:
            frame = self.start + number - self._base
        else:
            frame = None
        if frame is not None and not self.start <= frame <= self.end:
            frame = None
        self._numbers.add(("n", number))
        if frame is not None:
            self.frames_done.add(frame)
        return FrameDone(number, frame, match.group("tc"), _seconds(match))


def _seconds(match: re.Match[str]) -> float | None:
    sec = match.group("sec")
    return float(sec.replace(",", ".")) if sec is not None else None
