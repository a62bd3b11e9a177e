"""The ``--summary`` of a render cancelled before its run started (pure: builds the
document only). Imported while stmpo is still loading, by the loading-time cancel handler
in :mod:`stmpo_celery.cli`, so it imports nothing but the standard library's ``time``
and the package's errors."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..errors import outcome


def cancelled_early(code: int, signal_name: str, started: float, *, run: str | None = None,
                    host: str | None = None, frames: Sequence[int] | None = None,
                    spec: str = "", output: str | None = None) -> dict[str, Any]:
    """The keys of a run's summary, empty where there was no run: nothing rendered, the
    ``frames`` requested (``spec``: as a frame spec) all missing. ``None``: the cancel
    came before the frames were read, and the counts of requested and missing frames
    are ``null`` (not known), never 0 (which would say nothing is missing)."""
    known = frames is not None
    count = len(frames) if frames is not None else None
    return {
        "run": run,
        "host": host,
        "exit_code": int(code),
        "status": outcome(code),
        "reason": f"cancelled by {signal_name} before the render started",
        "frames": {"requested": count, "requested_spec": spec if known else None,
                   "rendered": 0, "rendered_spec": "", "skipped": 0, "skipped_spec": "",
                   "missing": count, "missing_spec": spec if known else None,
                   "suspect_spec": ""},
        "output": output,
        "chunks": [], "idle_tasks": 0, "failures": [], "warnings": [],
        "timing": {"started": started, "ended": time.time(), "first_launch": None,
                   "last_frame": None},
    }
