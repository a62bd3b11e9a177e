"""The run's record: per-chunk bookkeeping and the ``--summary`` JSON file."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from ..broker import mask_url
from ..broker.events import ChunkOutcome, ChunkRetry
from ..errors import ExitCode, outcome
from ..host import replace_file
from ..plan import format_frames

if TYPE_CHECKING:
    from ._run import Run


class ChunkStatus(str, Enum):
    """Where one chunk task stands, as the orchestrator knows it."""

    PENDING = "pending"
    """Queued; no slot has started it yet."""
    RUNNING = "running"
    """A slot took it and launched (or is launching) aerender."""
    RETRYING = "retrying"
    """It failed in a retryable way; its missing frames wait on the queue again."""
    DONE = "done"
    """Every frame it ended up owning is on disk."""
    FAILED = "failed"
    """It failed for good (a strong error, or retries used up)."""
    STOPPED = "stopped"
    """It was rendering when the run stopped (fail-fast or cancel): not a cause."""
    IDLE = "idle"
    """A spare task that found nothing worth taking."""
    SKIPPED = "skipped"
    """It reached a slot after the run was aborted and rendered nothing."""

    @property
    def terminal(self) -> bool:
        """No more events will change it."""
        return self in (ChunkStatus.DONE, ChunkStatus.FAILED, ChunkStatus.STOPPED,
                        ChunkStatus.IDLE, ChunkStatus.SKIPPED)


@dataclass
class ChunkRecord:
    index: int
    start: int
    end: int
    slot: int | None = None
    status: ChunkStatus = ChunkStatus.PENDING
    t0: float | None = None
    t1: float | None = None
    exit_code: int | None = None
    launch_s: float | None = None
    frames_done: int = 0
    missing: list[int] = field(default_factory=list)
    reason: str | None = None
    tail: list[str] = field(default_factory=list)
    log: str | None = None
    attempts: int = 0
    task_id: str | None = None
    frames: str = ""
    suspect: list[int] = field(default_factory=list)
    stolen_by: list[int] = field(default_factory=list)
    cut: int | None = None
    #: earlier attempts of a retried chunk (frames, slot, log, reason, times), oldest first
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    def remember_attempt(self, reason: str | None, log: str | None = None) -> None:
        """Keep what this attempt was before a retry overwrites it (for the summary)."""
        self.history.append({
            "attempt": self.attempts, "frames": self.frames or f"{self.start}-{self.end}",
            "slot": self.slot, "log": log if log is not None else self.log, "reason": reason,
            "t0": self.t0, "t1": self.t1, "frames_done": self.frames_done})

    def finish(self, ev: ChunkOutcome, status: ChunkStatus) -> None:
        """Take a slot's account of how the chunk's render ended."""
        if status is ChunkStatus.RETRYING:
            self.t1 = ev.t1 if ev.t1 is not None else self.t1
            self.remember_attempt(ev.reason, ev.log or self.log)
        self.status = status
        self.slot = ev.slot if ev.slot is not None else self.slot
        self.start, self.end = ev.start, ev.end
        self.t0 = ev.t0 if ev.t0 is not None else self.t0
        self.t1 = ev.t1 if ev.t1 is not None else self.t1
        self.exit_code = ev.exit_code
        self.launch_s = ev.launch_s
        self.missing = list(ev.missing)
        self.suspect = sorted(set(self.suspect) | set(ev.suspect))
        self.log = ev.log or self.log  #: the failing launch's log, else the chunk's own
        self.frames = ev.frames or self.frames  #: what it rendered (a steal cuts it short)
        self.cut = ev.cut
        if isinstance(ev, ChunkRetry):
            self.attempts = ev.attempts

    def describe(self, tail: bool = True) -> str:
        text = (f"chunk {self.index} frames {self.start}-{self.end} on slot {self.slot}: "
                f"{self.reason}")
        if tail and self.tail:
            text += " | last lines: " + " / ".join(t.strip() for t in self.tail[-4:] if t.strip())
        return text


def build(run: Run, missing: list[int]) -> dict[str, Any]:
    prep = run.prep
    missing_set = set(missing)
    rendered = [f for f in prep.to_render if f not in missing_set]
    suspect = sorted({f for c in run.chunks.values() for f in c.suspect})
    return {
        "run": run.run_id,
        "host": run.host,
        "queue": run.queue,
        "broker": mask_url(run.broker.url) if run.broker else None,
        "embedded_broker": run.embedded is not None,
        "exit_code": int(run.exit_code),
        "status": outcome(run.exit_code),
        "reason": run.stop_reason,
        "frames": {
            "requested": len(prep.frames),
            "requested_spec": format_frames(prep.frames),
            "rendered": len(rendered),
            "rendered_spec": format_frames(rendered),
            "skipped": len(prep.skipped),
            "skipped_spec": format_frames(prep.skipped),
            "missing": len(missing),
            "missing_spec": format_frames(missing),
            # written by an aerender that then failed: deleted as possibly partial and
            # rendered again (if a retry was left); still missing ones are in missing_spec
            "suspect_spec": format_frames(suspect),
        },
        "output": prep.pattern.raw,
        "plan": run.plan.to_dict(),
        "chunks": [asdict(c) for c in sorted(run.chunks.values(), key=lambda c: c.index)
                   if c.status not in ("idle", "pending") or c.t0 is not None],
        "idle_tasks": sum(1 for c in run.chunks.values() if c.status == "idle"),
        "failures": [c.describe() for c in run.failures],
        "warnings": run.warnings,
        "timing": {
            "started": run.t_start,
            "ended": time.time(),
            "first_launch": run.t_first_launch,
            "last_frame": run.t_last_frame,
        },
        "log_dir": str(run.log_dir),
    }


def write_summary(run: Run, missing: list[int]) -> str | None:
    """Write the ``--summary``; None, or what kept it from being written. A summary left
    there by an earlier run is removed then (it would pass for this run's record)."""
    assert run.o.summary is not None
    path = run.o.summary
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(build(run, missing), fh, indent=2, default=str)
        replace_file(tmp, path)
        return None
    except OSError as exc:  # checked up front; a disk that filled up since: say so, once
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        removed = False
        with contextlib.suppress(OSError):  # needs no space
            os.unlink(path)
            removed = True
        what = f"the summary could not be written to {path} ({exc.strerror or exc})"
        run.funnel.line(f"stmpo: WARNING: {what}"
                        + ("; the earlier run's summary there was removed" if removed else ""))
        return what


def final_line(run: Run, missing: list[int]) -> str:
    """The run's last line: OK with counts, or FAILED with the reason."""
    n = len(run.prep.frames)
    if run.exit_code == ExitCode.OK:
        return (f"OK: {n - len(missing)} of {n} frame(s) on disk "
                f"({len(run.prep.skipped)} skipped) in {time.time() - run.t_start:.1f} s")
    if len(run.failures) > 1 and not run.o.fail_fast:
        parts = "; ".join(f.describe(tail=False) for f in run.failures)
        return f"FAILED: {len(run.failures)} chunk(s) failed: {parts}"
    return f"FAILED: {run.stop_reason or 'render failed'}"
