"""One chunk inside a slot: run aerender's tree, read its log, verify frames on disk.

The outcome never trusts aerender's exit code alone: a strong error line fails the
chunk even on exit 0, and so does any expected frame that is not a non-empty file.
A frame counts as rendered only when it is on disk, non-empty, and was reported done
by an aerender that did not fail afterwards; a file written by an aerender that then
crashed is *suspect* (it may be partial) and is rendered again on retry.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from ..aerender._argv import build_argv
from ..aerender._log import AerenderLog, AeWarning, FrameDone, StrongError
from ..broker import events, keys
from ..config import defaults
from ..host._proc import descendants, kill_procs, tree_cpu_seconds
from ..plan._frames import format_frames, runs
from ..plan._pattern import OutputPattern
from ._spec import RunSpec


def missing_frames(pattern: OutputPattern, frames: list[int]) -> list[int]:
    """Frames whose file is absent or empty (an empty file is not a frame)."""
    out = []
    for f in frames:
        try:
            if os.path.getsize(pattern.path_for(f)) <= 0:
                out.append(f)
        except OSError:
            out.append(f)
    return out


class ChunkFailed(Exception):
    """A chunk did not produce its frames; ``str()`` is one line for a human."""

    def __init__(self, message: str, *, retryable: bool = False,
                 redo: list[int] | None = None, info: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.redo = redo or []  #: frames to render again (missing or suspect)
        self.info = info or {}


@dataclass
class SlotContext:
    spec: RunSpec
    slot: int
    client: redis.Redis
    out_fd: int = 1
    chunks_run: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    slowest_frame: float = 0.0  #: seconds; feeds the derived stall timeout
    #: called per finished frame: (index, done-in-order, frame, cost, first latency) ->
    #: the chunk's current end (the adaptive schedule lowers it when a slot steals the tail)
    frame_hook: Callable[[int, int, int | None, float | None, float | None], int | None] | None = (
        None)
    #: sees every event before it is published (the slot's live state for Flower and status)
    observer: Callable[[str, dict[str, Any]], None] | None = None

    def emit(self, label: str, line: str) -> None:
        """One whole line into the merged stream (the orchestrator's log funnel)."""
        data = f"[slot {self.slot} {label}] {line}\n".encode(errors="replace")
        with self.lock, contextlib.suppress(OSError):
            os.write(self.out_fd, data)

    def publish(self, kind: str, **fields: Any) -> None:
        if self.observer is not None:
            self.observer(kind, fields)
        with contextlib.suppress(redis.RedisError):
            events.publish(self.client, self.spec.run_id, kind, **{"slot": self.slot, **fields})

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


def frames_label(start: int, end: int) -> str:
    return f"f{start}" if start == end else f"f{start}-{end}"


@dataclass
class Attempt:
    """What one aerender launch did."""

    start: int
    end: int
    exit_code: int | None = None
    strong: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    reported: set[int] = field(default_factory=set)  #: frames the log said were done
    resolvable: bool = True
    stalled: str | None = None
    cut_end: int | None = None  #: stopped on purpose after this frame (tail stolen)
    launch_s: float | None = None
    tail: list[str] = field(default_factory=list)
    log: str = ""


class _Watch(threading.Thread):
    """Kills the renderer tree on abort, stall (no output and no CPU) or chunk timeout."""

    def __init__(self, ctx: SlotContext, t0: float) -> None:
        super().__init__(name="stmpo-chunkwatch", daemon=True)
        self.ctx = ctx
        self.t0 = t0
        self.done = threading.Event()
        self.last_output = time.monotonic()
        self.reason: str | None = None

    def run(self) -> None:
        me = os.getpid()
        cpu = tree_cpu_seconds(me)
        idle_since = time.monotonic()
        ticks = 0
        while not self.done.wait(0.1):
            ticks += 1
            if self.ctx.aborted():
                self.reason = "aborted"
                kill_renderer()
                return
            if ticks % 5:
                continue
            now = time.monotonic()
            used = tree_cpu_seconds(me)
            if used - cpu > 0.05 or self.last_output > idle_since:
                idle_since = max(now if used - cpu > 0.05 else idle_since, self.last_output)
            cpu = used
            limit = self.ctx.stall_timeout()
            if now - idle_since > limit:
                self.reason = f"stalled: no output and no CPU for {limit:g} s"
                kill_renderer()
                return
            cap = self.ctx.spec.chunk_timeout
            if cap > 0 and now - self.t0 > cap:
                self.reason = f"timed out: chunk ran longer than --chunk-timeout {cap:g} s"
                kill_renderer()
                return


def kill_renderer() -> None:
    """Kill every descendant of this slot: aerender and its (maybe reparented) AfterFX."""
    kill_procs(descendants(os.getpid()), timeout=defaults.KILL_WAIT_S)


def _launch(ctx: SlotContext, index: int, start: int, end: int, label: str,
            log_path: Path) -> Attempt:
    spec = ctx.spec
    att = Attempt(start, end, log=str(log_path))
    argv = build_argv(spec.aerender, spec.target, start, end)
    parser = AerenderLog(start, end)
    t0 = time.monotonic()
    last_frame_at = t0
    next_needed = start
    known_end = end  #: lowered when a thief takes our tail (learned from the frame hook)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, close_fds=True)
    except OSError as exc:
        att.strong.append(f"aerender could not start: {exc.strerror or exc}")
        return att
    watch = _Watch(ctx, t0)
    watch.start()
    assert proc.stdout is not None
    with open(log_path, "ab") as log:
        for raw in iter(proc.stdout.readline, b""):
            log.write(raw)
            watch.last_output = time.monotonic()
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            ctx.emit(label, line)
            for ev in parser.feed(line):
                if isinstance(ev, FrameDone):
                    now = time.monotonic()
                    first = att.launch_s is None
                    cost = None if first else now - last_frame_at
                    if first:
                        att.launch_s = now - t0
                    else:
                        ctx.slowest_frame = max(ctx.slowest_frame, now - last_frame_at)
                    last_frame_at = now
                    frame = ev.frame if ev.frame is not None else start + parser.done_count - 1
                    att.reported.add(frame)
                    while next_needed in att.reported:
                        next_needed += 1
                    if known_end < att.end and next_needed - 1 >= known_end and (
                            att.cut_end is None):
                        # the end learned at an earlier frame is reached: stop at once,
                        # before AE gets far into a frame the thief renders
                        att.cut_end = known_end
                        kill_renderer()
                    ctx.publish("frame", index=index, frame=ev.frame, number=ev.number,
                                done=parser.done_count)
                    if ctx.frame_hook is not None and att.cut_end is None:
                        new_end = ctx.frame_hook(index, next_needed - 1, frame, cost,
                                                 att.launch_s if first else None)
                        if new_end is not None:
                            known_end = min(known_end, new_end)
                        if new_end is not None and new_end < att.end and (
                                next_needed - 1 >= new_end):
                            att.cut_end = new_end  # our tail went to another slot: stop here
                            kill_renderer()
                elif isinstance(ev, StrongError):
                    att.strong.append(ev.text)
                    kill_renderer()  # deterministic failure: do not let AE go on
                elif isinstance(ev, AeWarning):
                    att.warnings.append(ev.text)
                    ctx.publish("warning", index=index, text=ev.text)
    att.exit_code = proc.wait()
    watch.done.set()
    watch.join(timeout=1)
    if watch.reason and watch.reason != "aborted":
        att.stalled = watch.reason
    att.resolvable = parser.numbering != "unknown"
    att.tail = parser.tail()[-defaults.LOG_TAIL_LINES:]
    return att


def run_chunk(ctx: SlotContext, index: int, frames: list[int], attempt: int = 0,
              task_id: str | None = None) -> dict[str, Any]:
    """Render ``frames`` (one aerender launch per contiguous run); raise :class:`ChunkFailed`."""
    spec = ctx.spec
    pattern = OutputPattern(spec.target.output)
    label = frames_label(frames[0], frames[-1]) if len(runs(frames)) == 1 else (
        "f" + format_frames(frames))
    if attempt:
        label += f" r{attempt}"
    first_launch = ctx.chunks_run == 0
    ctx.chunks_run += 1
    if first_launch and spec.spawn_delay > 0 and ctx.slot > 0:
        # Stagger only each slot's first launch: AE start-ups in the same instant collide.
        deadline = time.monotonic() + spec.spawn_delay * ctx.slot
        while time.monotonic() < deadline:
            if ctx.aborted():
                raise ChunkFailed("run aborted before launch")
            time.sleep(0.05)
    t0 = time.time()
    planned_end = frames[-1]
    ctx.publish("chunk-start", index=index, start=frames[0], end=frames[-1],
                frames=format_frames(frames), attempt=attempt, task_id=task_id)
    good: list[int] = []
    suspect: list[int] = []
    warnings: list[str] = []
    launch_s: float | None = None
    failure: tuple[str, bool, Attempt] | None = None
    for n, (s, e) in enumerate(runs(frames)):
        log_path = Path(spec.log_dir) / (
            f"chunk{index:04d}-{frames_label(s, e)}-slot{ctx.slot}"
            + (f"-r{attempt}" if attempt else "") + ".log")
        att = _launch(ctx, index, s, e, label, log_path)
        warnings += att.warnings
        if n == 0:
            launch_s = att.launch_s
        span = list(range(s, e + 1))
        on_disk = [f for f in span if f not in set(missing_frames(pattern, span))]
        if att.cut_end is not None:
            span = list(range(s, att.cut_end + 1))
            frames = [f for f in frames if f <= att.cut_end]
            on_disk = [f for f in span if f not in set(missing_frames(pattern, span))]
        failed = bool(att.strong) or att.stalled is not None or (
            att.exit_code != 0 and att.cut_end is None)
        if failed and att.resolvable:
            good += [f for f in on_disk if f in att.reported]
            suspect += [f for f in on_disk if f not in att.reported]
        else:
            good += on_disk
        if att.strong:
            failure = (f"aerender reported: {att.strong[0].strip()}", False, att)
        elif ctx.aborted():
            failure = (f"stopped: {ctx.aborted()}", False, att)
        elif att.stalled:
            failure = (att.stalled, True, att)
        elif att.exit_code != 0 and att.cut_end is None:
            failure = (f"aerender exited with code {att.exit_code}", True, att)
        if failure or att.cut_end is not None:
            break
    t1 = time.time()
    good_set = set(good)
    missing = [f for f in frames if f not in good_set]
    result: dict[str, Any] = {
        "index": index, "slot": ctx.slot, "start": frames[0], "end": frames[-1],
        "frames": format_frames(frames), "t0": t0, "t1": t1, "attempt": attempt,
        "exit_code": failure[2].exit_code if failure else 0, "launch_s": launch_s,
        "cut": frames[-1] if frames[-1] < planned_end else None,
        "frames_rendered": len(good), "missing": missing, "suspect": suspect,
        "warnings": warnings, "log": failure[2].log if failure else "",
    }
    if failure is None and missing:
        failure = (f"{len(missing)} frame(s) missing on disk after aerender exited 0 "
                   f"(first: {pattern.path_for(missing[0])})", True, Attempt(0, 0))
    if failure is None:
        return result
    reason, retryable, att = failure
    for f in suspect:  # a file from a failed aerender may be partial: never keep it
        with contextlib.suppress(OSError):
            os.unlink(pattern.path_for(f))
    result.update(reason=reason, tail=att.tail, retryable=retryable)
    raise ChunkFailed(f"chunk {index} frames {format_frames(frames)} on slot {ctx.slot}: "
                      f"{reason}", retryable=retryable, redo=missing, info=result)
