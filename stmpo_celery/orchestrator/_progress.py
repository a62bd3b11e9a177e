"""Progress for the Deadline monitor (OpenJD directives) and for a person at a terminal."""

from __future__ import annotations

import time

from ..text import duration
from ._funnel import LogFunnel


class Progress:
    """Counts rendered frames; prints ``openjd_progress``/``openjd_status`` per frame, or
    redraws one bar line with frames/s and ETA when stdout is a terminal."""

    def __init__(self, funnel: LogFunnel, total: int, tty: bool, width: int = 30) -> None:
        self.funnel = funnel
        self.total = max(0, total)
        self.done = 0
        self.tty = tty
        self.width = width
        self.t0 = time.monotonic()
        self._shown = False
        self._last_draw = 0.0
        if tty:
            funnel.on_clear = self._clear

    def rate(self) -> float:
        elapsed = time.monotonic() - self.t0
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        r = self.rate()
        return (self.total - self.done) / r if r > 0 else None

    def set_done(self, done: int) -> None:
        done = min(done, self.total)
        if done == self.done:
            return
        self.done = done
        pct = 100.0 * done / self.total if self.total else 100.0
        if self.tty:
            self.draw()
        else:
            self.funnel.directive("openjd_progress", f"{pct:.1f}")
            self.funnel.directive("openjd_status", f"Rendered {done} of {self.total} frames")

    def status(self, text: str) -> None:
        if not self.tty:
            self.funnel.directive("openjd_status", text)

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1 and self.done < self.total:
            return
        self._last_draw = now
        frac = self.done / self.total if self.total else 1.0
        filled = int(self.width * frac)
        eta = self.eta()
        bar = "#" * filled + "." * (self.width - filled)
        text = (f"\r[{bar}] {self.done}/{self.total} frames  {self.rate():.2f} fps  "
                f"ETA {duration(eta) if eta is not None else '--'}")
        self.funnel.raw(text)
        self._shown = True

    def _clear(self) -> None:
        # called with the funnel lock held: write directly
        if self._shown and self.funnel._echo is not None:
            self.funnel._echo.write("\r\x1b[K")
            self._shown = False

    def close(self) -> None:
        if self.tty and self._shown:
            self.draw(force=True)
            self.funnel.raw("\n")
            self._shown = False
