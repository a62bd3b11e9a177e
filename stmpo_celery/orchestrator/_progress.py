"""Progress for the Deadline monitor (OpenJD directives) and for a person at a terminal."""

from __future__ import annotations

import shutil
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from ..text import duration
from ._funnel import LogFunnel

RATE_WINDOW_S = 15.0  #: the bar's frames/s and ETA come from this much recent history


def percent(done: int, total: int) -> str:
    """``openjd_progress``'s value: rounded down, so 1999 of 2000 frames is 99.9, never
    100.0; 100.0 is said only by :meth:`Progress.confirm`, once every frame has been
    checked whole on disk at the end of the run."""
    if total <= 0:
        return "100.0"
    return f"{min(999, 1000 * max(0, done) // total) / 10:.1f}"


class Progress:
    """Counts rendered frames; prints ``openjd_progress``/``openjd_status`` per frame, or
    redraws one bar line when stdout is a terminal: frames, elapsed time, the recent
    frames/s, an ETA from that recent rate (not from the start, which includes the
    launch of After Effects) and each slot's frames (``s0 3/10``).

    The count can go down: a frame counted whole that is found deleted, or written again
    by a stopped renderer, is rendered again and no longer counted. The status says what
    the run is doing besides rendering (:meth:`note`: retries, failed chunks, a stop)."""

    def __init__(self, funnel: LogFunnel, total: int, tty: bool, width: int = 30,
                 skipped: int = 0) -> None:
        self.funnel = funnel
        self.total = max(0, total)
        self.skipped = skipped  #: frames already whole before the run (not to render)
        self.done = 0
        self.tty = tty
        self.width = width
        self.t0 = time.monotonic()
        self._shown = False
        self._last_draw = 0.0
        self._samples: deque[tuple[float, int]] = deque()
        self.slots: dict[int, str] = {}
        self.ended: str | None = None  #: how the run ended, shown instead of the ETA
        self._notes: dict[str, str] = {}  #: what else is going on, by who said it
        if tty:
            funnel.on_clear = self._clear

    def rate(self, now: float | None = None) -> float:
        """Frames/s over the last :data:`RATE_WINDOW_S` (from the first frame on)."""
        now = time.monotonic() if now is None else now
        if len(self._samples) < 2:
            return 0.0
        t_a, d_a = self._samples[0]
        t_b, d_b = self._samples[-1]
        span = max(now, t_b) - t_a
        if span <= 0 or d_b <= d_a:
            return 0.0
        return (d_b - d_a) / span

    def eta(self, now: float | None = None) -> float | None:
        r = self.rate(now)
        return (self.total - self.done) / r if r > 0 else None

    def _sample(self, now: float) -> None:
        if not self._samples:
            # the first frame starts the clock: launch time is not a rate
            self._samples.append((now, self.done))
            return
        self._samples.append((now, self.done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()

    def track(self, chunks: Iterable[Any]) -> None:
        """Per-slot frames from the run's chunk records (``slot``, ``status``,
        ``frames_done``, ``start``, ``end``, ``frames``)."""
        slots: dict[int, str] = {}
        for c in chunks:
            if c.slot is None or c.status != "running":
                continue
            # its own frames up to its end now (a thief may have taken its tail)
            total = _count(c.frames, c.end) or max(0, c.end - c.start + 1)
            slots[int(c.slot)] = (f"{c.frames_done}/{total}" if c.frames_done
                                  else "launch")
        if slots != self.slots:
            self.slots = slots
            if self.tty:
                self.draw()

    def set_done(self, done: int) -> None:
        done = min(done, self.total)
        if done == self.done:
            return
        self.done = done
        self._sample(time.monotonic())
        if self.tty:
            self.draw()
        else:
            self.funnel.directive("openjd_progress", percent(done, self.total))
            self._status()

    def _status(self) -> None:
        text = f"Rendered {self.done} of {self.total} frames"
        if self.skipped:
            text += f" ({self.skipped} already on disk)"
        if self.done >= self.total:
            text += ", checking them on disk"
        self.status("; ".join([text, *self._notes.values()]))

    def note(self, key: str, text: str | None) -> None:
        """Say ``text`` in the status from now on, after the frame count, until it is
        replaced or taken back (None) under the same ``key``."""
        if text is None:
            if self._notes.pop(key, None) is None:
                return
        elif self._notes.get(key) == text:
            return
        else:
            self._notes[key] = text
        self._status()

    def confirm(self, text: str) -> None:
        """The end of a run that succeeded: every frame checked whole on disk."""
        if not self.tty:
            self.funnel.directive("openjd_progress", "100.0")
            self.status(text)

    def status(self, text: str) -> None:
        if not self.tty:
            self.funnel.directive("openjd_status", text)

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1 and self.done < self.total:
            return
        self._last_draw = now
        self.funnel.raw("\r" + self.text(now) + "\x1b[K")
        self._shown = True

    def text(self, now: float | None = None, columns: int | None = None) -> str:
        now = time.monotonic() if now is None else now
        frac = self.done / self.total if self.total else 1.0
        filled = int(self.width * frac)
        eta = self.eta(now)
        rate = self.rate(now)
        bar = "#" * filled + "." * (self.width - filled)
        text = (f"[{bar}] {self.done}/{self.total}  {duration(now - self.t0)} elapsed  "
                f"{f'{rate:.2f} f/s' if rate else '-- f/s'}  "
                + (self.ended if self.ended is not None
                   else f"ETA {duration(eta) if eta is not None else '--'}"))
        if self.slots and self.ended is None:
            text += "  |" + "".join(f" s{k} {v}" for k, v in sorted(self.slots.items()))
        cols = columns or shutil.get_terminal_size((120, 24)).columns
        return text if len(text) < cols else text[:max(10, cols - 2)] + "~"

    def _clear(self) -> None:
        # called with the funnel lock held: write directly
        if self._shown and self.funnel._echo is not None:
            self.funnel._echo.write("\r\x1b[K")
            self._shown = False

    def close(self, ended: str = "done") -> None:
        """The last draw: ``ended`` (done, failed, cancelled) instead of an ETA, which
        a stopped run no longer has, and no slots, which are gone."""
        self.ended = ended
        if self.tty and self._shown:
            self.draw(force=True)
            self.funnel.raw("\n")
            self._shown = False


def _count(spec: str, end: int) -> int:
    """How many of the frames ``spec`` names are at most ``end``."""
    if not spec:
        return 0
    from ..plan import parse_frames

    try:
        return sum(1 for f in parse_frames(spec) if f <= end)
    except Exception:  # noqa: BLE001 - a label only
        return 0
