"""Text every part of stmpo prints the same way: one-line messages, durations. Pure;
shared by the orchestrator, the slots, the monitors and the CLI."""

from __future__ import annotations

__all__ = ["duration", "one_line"]


def one_line(text: str) -> str:
    """Collapse a message to one line so a path or comp name cannot forge a directive."""
    return " ".join(str(text).splitlines()).strip()  # \n, \r, \v, \f, \x85, \u2028...


DIRECTIVE_MAX = 1000  #: characters of an OpenJD directive's value; the lines before say all


def directive(name: str, value: str) -> str:
    """An OpenJD stdout directive (``openjd_progress``, ``openjd_fail``...): one line, and
    at most :data:`DIRECTIVE_MAX` characters of value (a status or a failure is read at a
    glance in the Deadline monitor; the command's own lines before it say the whole)."""
    text = one_line(value)
    if len(text) > DIRECTIVE_MAX:
        text = text[:DIRECTIVE_MAX - 1] + "…"
    return f"{name}: {text}"


def duration(seconds: float | None) -> str:
    """``75.3`` -> ``1:15``; ``12.4`` -> ``12 s``; ``4.23`` -> ``4.2 s``; None -> ``-``."""
    if seconds is None:
        return "-"
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"

