"""One log funnel: every line of every process passes here, whole, in one order.

Slots write ``[slot K f120-139] <aerender line>`` to their stdout pipe; one reader
thread per slot hands complete lines to :meth:`LogFunnel.line`, which writes them
under a lock to the run log and, unless a progress bar owns the terminal, to stdout.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import IO, TextIO

from ..text import directive, one_line

__all__ = ["LogFunnel", "one_line"]


class LogFunnel:
    def __init__(self, run_log: IO[str] | None, echo: TextIO | None) -> None:
        self._run_log = run_log
        self._echo = echo
        self._lock = threading.Lock()
        self.on_clear: Callable[[], None] | None = None  #: a progress bar clears its line
        #: why the run log lost lines (a full disk), said once at the run's end
        self.log_error: OSError | None = None

    def line(self, text: str, *, echo: bool = True) -> None:
        """Write one line; any line break inside ``text`` is collapsed (:func:`one_line`),
        so no message, path or comp name can start a line of its own on OpenJD's stdout."""
        text = one_line(text)
        with self._lock:
            if self._run_log is not None:
                try:
                    self._run_log.write(text + "\n")
                    self._run_log.flush()
                except OSError as exc:
                    self.log_error = self.log_error or exc
                except ValueError:  # closed at the end
                    pass
            if echo and self._echo is not None:
                if self.on_clear is not None:
                    self.on_clear()
                with contextlib.suppress(OSError, ValueError):
                    self._echo.write(text + "\n")
                    self._echo.flush()

    def directive(self, name: str, value: str) -> None:
        """An OpenJD stdout directive (``openjd_progress``...): see :func:`directive`."""
        self.line(directive(name, value))

    def raw(self, text: str) -> None:
        """Terminal-only output (the progress bar); not written to the run log."""
        if self._echo is None:
            return
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._echo.write(text)
            self._echo.flush()

    def pump(self, stream: IO[bytes], quiet: Callable[[], bool]) -> threading.Thread:
        """Read whole lines from ``stream`` in a thread and funnel them."""

        def run() -> None:
            for raw in iter(stream.readline, b""):
                self.line(raw.decode("utf-8", errors="replace"), echo=not quiet())
            with contextlib.suppress(OSError):
                stream.close()

        t = threading.Thread(target=run, name="stmpo-funnel", daemon=True)
        t.start()
        return t
