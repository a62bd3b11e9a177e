"""One chunk inside a slot: run aerender's tree, read its log, verify frames on disk.

The outcome never trusts aerender's exit code alone: a strong error line fails the
chunk even on exit 0, and so does any expected frame that is not a whole file (present,
non-empty, and structurally complete where the format says so: :mod:`..plan._formats`).
A frame counts as rendered only when it is whole on disk and was reported done by an
aerender; a file an aerender touched without reporting it done, before it was stopped,
is *suspect* (it may be partial): it is deleted and rendered again on retry. Every
launch keeps an in-flight ledger beside the output (:mod:`._ledger`), so even a SIGKILL
of everything leaves no partial frame that a later run could trust. One launch (its
tree, log and watch) is :mod:`._launch`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from ..aerender import known_not_whole, missing_frames
from ..broker import events, keys
from ..config import defaults
from ..plan import OutputPattern, format_frames, runs
from ._launch import Attempt, launch
from ._ledger import delete_frame
from ._spec import RunSpec


class ChunkError(Exception):
    """A chunk did not produce its frames; ``str()`` is one line for a human."""

    def __init__(self, message: str, *, retryable: bool = False,
                 redo: list[int] | None = None, outcome: events.ChunkOutcome | None = None,
                 ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.redo = redo or []  #: frames to render again (missing or suspect)
        self.outcome = outcome  #: what the render did (None: it never launched)


@dataclass
class SlotContext:
    spec: RunSpec
    slot: int
    client: redis.Redis
    out_fd: int = 1
    chunks_run: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    slowest_frame: float = 0.0  #: seconds; feeds the derived stall timeout
    #: called as frames finish: (index, done-in-order, {frame: cost}, first latency) ->
    #: the chunk's current end (the adaptive schedule lowers it when a slot steals the tail)
    frame_hook: Callable[[int, int, Mapping[int, float], float | None], int | None] | None = (
        None)
    #: sees every event before it is published (the slot's live state for Flower and status)
    observer: Callable[[events.Event], None] | None = None
    #: chunk index -> the last frame it owns, fixed from now on (steals may have lowered it;
    #: None: the schedule never lowers ends)
    close_range: Callable[[int], int | None] | None = None
    #: the task id of the chunk this slot runs now (None: idle), for the death watch
    current_task: Callable[[], str | None] | None = None

    def emit(self, label: str, line: str) -> None:
        """One whole line into the merged stream (the orchestrator's log funnel)."""
        data = f"[slot {self.slot} {label}] {line}\n".encode(errors="replace")
        with self.lock, contextlib.suppress(OSError):
            os.write(self.out_fd, data)

    def publish(self, event: events.Event) -> None:
        """Stamp ``event`` with this slot, show it to the observer, send it (best effort)."""
        self.publish_all([event])

    def publish_all(self, evs: Sequence[events.Event]) -> None:
        """:meth:`publish` for several events, in order, in one round trip."""
        for event in evs:
            event.slot = self.slot
            if self.observer is not None:
                self.observer(event)
        with contextlib.suppress(redis.RedisError):
            events.publish_all(self.client, self.spec.run_id, evs)

    def aborted(self) -> str | None:
        try:
            value = self.client.get(keys.abort_key(self.spec.run_id))
        except redis.RedisError:
            return None
        return str(value) if value else None

    def stall_timeout(self) -> float:
        if self.spec.stall_timeout > 0:
            return self.spec.stall_timeout
        return max(self.spec.stall_floor, defaults.STALL_FACTOR * self.slowest_frame)


#: Windows' exit codes of a crash (NTSTATUS), as a wrangler searches for them
_NTSTATUS = {0xC0000005: "access violation", 0xC0000409: "stack buffer overrun",
             0xC0000017: "out of memory", 0xC000012D: "commitment limit: out of memory"}


def exit_words(code: int | None) -> str:
    """aerender's exit code with what it says: killed by a signal (SIGKILL is most often
    the out-of-memory killer, After Effects' usual death), or a Windows crash code."""
    if code is None:
        return "?"
    sig = -code if code < 0 else code - 128 if 128 < code < 160 else None
    if sig is not None:
        with contextlib.suppress(ValueError):
            name = signal.Signals(sig).name
            oom = ", often the out-of-memory killer" if name == "SIGKILL" else ""
            return f"{code} (killed by {name}{oom})"
    if (code & 0xFFFFFFFF) in _NTSTATUS:
        return f"{code} (0x{code & 0xFFFFFFFF:08X}: {_NTSTATUS[code & 0xFFFFFFFF]})"
    return str(code)


def frames_label(start: int, end: int) -> str:
    return f"f{start}" if start == end else f"f{start}-{end}"


def _settle(pattern: OutputPattern, att: Attempt, owned: list[int], failed: bool,
            good: list[int], suspect: list[int]) -> None:
    """Decide which of the launch's frames (those the chunk still owns) are rendered.

    A frame is rendered when this launch wrote it whole (its file changed since the
    launch began); a failed launch keeps only those it also reported done, and a frame
    it touched without reporting it was in flight when the launch stopped and is deleted.
    Frames no longer owned (a stolen tail) belong to the thief and are never touched."""
    on_disk = set(owned) - set(missing_frames(pattern, owned))
    if not pattern.is_sequence:
        # one file for every frame: it counts only if this launch wrote it and reported
        # every frame (a movie left by an earlier render, or one AE ended early, does not)
        if not failed and movie_written(att, owned):
            good += [f for f in owned if f in on_disk]
        elif att.touched:  # rewritten by AE but not to the end: a cut-short movie
            suspect += owned
            with contextlib.suppress(OSError):
                os.unlink(pattern.raw)
        if att.ledger is not None:
            att.ledger.close()
        return
    # a frame counts only if this launch wrote it: a file from before the run that
    # aerender reported but never rewrote (--no-skip-existing) is not this render
    written = on_disk & set(att.touched)
    undeleted: list[int] = []  # half-written, and another process has it open (Windows)
    if failed and att.resolvable:
        good += [f for f in owned if f in written and f in att.reported]
        for f in owned:
            # touched but never reported, or reported but not whole: in flight at the stop
            if f in att.touched and (f not in att.reported or f not in on_disk):
                path = pattern.path_for(f)
                if f in att.reported and os.path.exists(path) and not known_not_whole(path):
                    continue  # reported, there, but unreadable now: unknown, rendered again
                suspect.append(f)
                if not delete_frame(path):
                    undeleted.append(f)
    else:
        good += [f for f in owned if f in written]
    if att.ledger is not None:
        att.ledger.keep_only(undeleted)  # listed until someone can delete them


def movie_written(att: Attempt, frames: list[int]) -> bool:
    """Did this launch write its movie: the file changed, and every frame was reported
    done (by number, or by count when the log's numbering is unknown)?"""
    reported = (set(frames) <= att.reported if att.resolvable
                else len(att.reported) >= len(frames))
    return bool(att.touched) and reported


def _launch_wait(ctx: SlotContext) -> float:
    """Seconds this slot's first launch waits so first launches stand ``spawn_delay`` apart.

    Slots take their place in the order they arrive: spawned slots come up in any order, so
    a delay by slot number would let two launches collide. Without Redis, slot K waits K
    delays (the best guess without the others' times)."""
    try:
        at = float(ctx.client.register_script(keys.LAUNCH_GATE)(
            keys=[keys.launch_gate_key(ctx.spec.run_id)],
            args=[f"{time.time():.6f}", ctx.spec.spawn_delay, defaults.RUN_KEY_TTL_S]))
    except (redis.RedisError, TypeError, ValueError):
        return ctx.spec.spawn_delay * ctx.slot
    return max(0.0, at - time.time())


def run_chunk(ctx: SlotContext, index: int, frames: list[int], attempt: int = 0,
              task_id: str | None = None) -> events.ChunkOutcome:
    """Render ``frames`` (one aerender launch per contiguous run); raise :class:`ChunkError`."""
    spec = ctx.spec
    pattern = OutputPattern(spec.target.output)
    label = frames_label(frames[0], frames[-1]) if len(runs(frames)) == 1 else (
        "f" + format_frames(frames))
    if attempt:
        label += f" r{attempt}"
    first_launch = ctx.chunks_run == 0
    ctx.chunks_run += 1

    def log_path_of(s: int, e: int) -> Path:
        return Path(spec.log_dir) / (
            f"chunk{index:04d}-{frames_label(s, e)}-slot{ctx.slot}"
            + (f"-r{attempt}" if attempt else "") + ".log")

    # Said before any wait: from here on the chunk is this slot's, so a slot that dies
    # even before its launch has its chunk re-enqueued.
    ctx.publish(events.ChunkStart(index=index, start=frames[0], end=frames[-1],
                                  frames=format_frames(frames), attempt=attempt,
                                  task_id=task_id, log=str(log_path_of(*runs(frames)[0]))))
    if first_launch and spec.spawn_delay > 0:
        # Stagger only each slot's first launch: AE start-ups in the same instant collide.
        deadline = time.monotonic() + _launch_wait(ctx)
        while (left := deadline - time.monotonic()) > 0:
            if ctx.aborted():
                raise ChunkError("run aborted before launch")
            time.sleep(min(0.05, left))
    t0 = time.time()
    planned_end = frames[-1]
    good: list[int] = []
    suspect: list[int] = []
    warnings: list[str] = []
    launch_s: float | None = None
    failure: tuple[str, bool, Attempt] | None = None
    launched: list[Attempt] = []
    overwrote: list[int] = []
    for n, (s, e) in enumerate(runs(frames)):
        att = launch(ctx, index, s, e, label, log_path_of(s, e), pattern)
        launched.append(att)
        warnings += att.warnings
        if n == 0:
            launch_s = att.launch_s
        # From here on no slot can take frames from this chunk: what it owns is final.
        owned_end = ctx.close_range(index) if ctx.close_range is not None else None
        if owned_end is None:
            owned_end = att.cut_end if att.cut_end is not None else e
        if owned_end < e:
            frames = [f for f in frames if f <= owned_end]
            overwrote += [f for f in att.touched if f > owned_end]  # the thief's frames
        failed = bool(att.strong) or att.problem is not None or att.stalled is not None or (
            att.exit_code != 0 and att.cut_end is None) or ctx.aborted() is not None
        _settle(pattern, att, list(range(s, min(e, owned_end) + 1)), failed, good, suspect)
        if att.problem:
            failure = (att.problem, False, att)
        elif att.strong:
            failure = (f"aerender reported: {att.strong[0].strip()}", False, att)
        elif ctx.aborted():
            failure = (f"stopped: {ctx.aborted()}", False, att)
        elif att.stalled:
            failure = (att.stalled, True, att)
        elif att.exit_code != 0 and att.cut_end is None:
            failure = (f"aerender exited with code {exit_words(att.exit_code)}", True, att)
        if failure or owned_end < e:
            break
    t1 = time.time()
    good_set = set(good)
    missing = [f for f in frames if f not in good_set]
    if failure is None and missing:  # blame the launch that should have written them
        att = next((a for a in launched if a.start <= missing[0] <= a.end), launched[-1])
        if not pattern.is_sequence:
            failure = (f"aerender exited 0 but reported {len(att.reported)} of {len(frames)} "
                       f"frame(s) and {'rewrote' if att.touched else 'did not write'} the "
                       f"movie {pattern.raw}", True, att)
        else:
            stale = sorted(set(missing) - set(missing_frames(pattern, missing)))
            failure = (f"{len(missing)} frame(s) missing on disk (or incomplete) after "
                       f"aerender exited 0 (first: {pattern.path_for(missing[0])})"
                       + (f"; {len(stale)} of them ({format_frames(stale)}) are files from "
                          "before the launch it did not write" if stale else ""), True, att)
    result = events.ChunkOutcome(
        slot=ctx.slot, index=index, start=frames[0], end=frames[-1],
        frames=format_frames(frames), t0=t0, t1=t1, attempt=attempt,
        exit_code=failure[2].exit_code if failure else 0, launch_s=launch_s,
        cut=frames[-1] if frames[-1] < planned_end else None,
        frames_rendered=len(good), missing=missing, suspect=suspect,
        warnings=warnings, log=failure[2].log if failure else "", overwrote=overwrote,
    )
    if failure is None:
        return result
    reason, retryable, att = failure
    result.reason, result.tail, result.retryable = reason, att.tail, retryable
    raise ChunkError(f"chunk {index} frames {format_frames(frames)} on slot {ctx.slot}: "
                      f"{reason}", retryable=retryable, redo=missing, outcome=result)
