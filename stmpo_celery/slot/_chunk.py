"""One chunk inside a slot: run aerender's tree, read its log, verify frames on disk.

The outcome never trusts aerender's exit code alone: a strong error line fails the
chunk even on exit 0, and so does any expected frame that is not a whole file (present,
non-empty, and structurally complete where the format says so: :mod:`..plan._formats`).
A frame counts as rendered only when it is whole on disk and was reported done by an
aerender; a file an aerender touched without reporting it done, before it was stopped,
is *suspect* (it may be partial): it is deleted and rendered again on retry. Every
launch keeps an in-flight ledger beside the output (:mod:`._ledger`), so even a SIGKILL
of everything leaves no partial frame that a later run could trust.

When the launcher exits, whatever it left below the slot (its renderer) is killed at
once: the chunk never waits on an orphan holding the output pipe, and a retry never
overlaps a living renderer.
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

import redis

from ..aerender import AerenderLog, AeWarning, FrameDone, StrongError, build_argv, missing_frames
from ..broker import events, keys
from ..config import defaults
from ..host import RunJob, decode_output, descendants, kill_procs, tree_cpu_seconds
from ..plan import OutputPattern, format_frames, runs
from ._ledger import Ledger
from ._spec import RunSpec


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


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
    #: called per finished frame: (index, done-in-order, frame, cost, first latency) ->
    #: the chunk's current end (the adaptive schedule lowers it when a slot steals the tail)
    frame_hook: Callable[[int, int, int | None, float | None, float | None], int | None] | None = (
        None)
    #: sees every event before it is published (the slot's live state for Flower and status)
    observer: Callable[[events.Event], None] | None = None
    #: chunk index -> the last frame it owns, fixed from now on (steals may have lowered it;
    #: None: the schedule never lowers ends)
    close_range: Callable[[int], int | None] | None = None

    def emit(self, label: str, line: str) -> None:
        """One whole line into the merged stream (the orchestrator's log funnel)."""
        data = f"[slot {self.slot} {label}] {line}\n".encode(errors="replace")
        with self.lock, contextlib.suppress(OSError):
            os.write(self.out_fd, data)

    def publish(self, event: events.Event) -> None:
        """Stamp ``event`` with this slot, show it to the observer, send it (best effort)."""
        event.slot = self.slot
        if self.observer is not None:
            self.observer(event)
        with contextlib.suppress(redis.RedisError):
            events.publish(self.client, self.spec.run_id, event)

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
    touched: list[int] = field(default_factory=list)  #: frame files this launch changed
    problem: str | None = None  #: the slot itself could not go on (log or ledger unwritable)
    ledger: Ledger | None = None


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


@dataclass
class _Renderers:
    """Windows: a Job Object of this slot's aerender runs, so an AfterFX whose launcher
    died (no tree walk finds it there) is killed too; elsewhere a no-op."""

    job: RunJob | None = None
    warned: bool = False

    def get(self) -> RunJob:
        if self.job is None:
            self.job = RunJob()
        return self.job


RENDERERS = _Renderers()


def kill_renderer() -> None:
    """Kill every descendant of this slot: aerender and its (maybe reparented) AfterFX."""
    if RENDERERS.job is not None:
        RENDERERS.job.kill_all()
    kill_procs(descendants(os.getpid()), timeout=defaults.KILL_WAIT_S)


class _LogFailed(Exception):
    """The chunk's own log file cannot be written (a full or read-only log folder)."""


def _open_log(path: Path) -> int:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(fd, b"")
    except OSError as exc:
        raise _LogFailed(f"cannot write the chunk log {path}: {exc.strerror or exc}: "
                         "free space in the log folder or pass another --log-dir") from None
    return fd


def _write_log(fd: int, path: Path, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError as exc:
        raise _LogFailed(f"cannot write the chunk log {path}: {exc.strerror or exc}: "
                         "free space in the log folder or pass another --log-dir") from None
#: After Effects loads Intel's OpenMP runtime, and so may a plug-in: without this a second
#: copy aborts the renderer with "OMP: Error #15" (both official integrations set it).
AERENDER_ENV = {"KMP_DUPLICATE_LIB_OK": "TRUE"}


def _launch(ctx: SlotContext, index: int, start: int, end: int, label: str,
            log_path: Path, pattern: OutputPattern) -> Attempt:
    spec = ctx.spec
    att = Attempt(start, end, log=str(log_path))
    argv = build_argv(spec.aerender, spec.target, start, end)
    parser = AerenderLog(start, end,
                         ignore_missing_effects=spec.target.ignore_missing_effects)
    span = list(range(start, end + 1))
    before = {f: _stat(pattern.path_for(f)) for f in span}
    try:
        log_fd = _open_log(log_path)
    except _LogFailed as exc:
        att.problem = str(exc)
        return att
    ledger = Ledger(pattern, spec.run_id, ctx.slot, span)
    try:
        ledger.open()
    except OSError as exc:
        os.close(log_fd)
        att.problem = (f"cannot write the in-flight ledger {ledger.path}: "
                       f"{exc.strerror or exc}: check space and permissions of the output")
        return att
    t0 = time.monotonic()
    last_frame_at = t0
    next_needed = start
    known_end = end  #: lowered when a thief takes our tail (learned from the frame hook)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, close_fds=True,
                                env={**os.environ, **AERENDER_ENV})
    except OSError as exc:
        os.close(log_fd)
        ledger.close()
        att.strong.append(f"aerender could not start: {exc.strerror or exc}")
        return att

    def end_of_launcher() -> None:
        # The launcher is gone (any code, any signal): whatever it left below this slot —
        # its renderer, maybe holding our pipe — dies now, so we never wait on an orphan.
        proc.wait()
        kill_renderer()

    reaper = threading.Thread(target=end_of_launcher, name="stmpo-launcher-end", daemon=True)
    reaper.start()
    job = RENDERERS.get()
    job.assign(proc)
    if job.problem and not RENDERERS.warned:  # said once (the orchestrator dedupes too)
        RENDERERS.warned = True
        ctx.publish(events.SlotWarning(index=index, text=job.problem))
    watch = _Watch(ctx, t0)
    watch.start()
    assert proc.stdout is not None
    try:
        for raw in iter(proc.stdout.readline, b""):
            if att.problem:
                continue  # draining: the renderer is being killed
            try:
                _write_log(log_fd, log_path, raw)
            except _LogFailed as exc:
                att.problem = str(exc)
                kill_renderer()
                continue
            watch.last_output = time.monotonic()
            line = decode_output(raw).rstrip("\r\n")  # the OS code page on Windows
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
                    ledger.done(frame)
                    while next_needed in att.reported:
                        next_needed += 1
                    if known_end < att.end and next_needed - 1 >= known_end and (
                            att.cut_end is None):
                        # the end learned at an earlier frame is reached: stop at once,
                        # before AE gets far into a frame the thief renders
                        att.cut_end = known_end
                        kill_renderer()
                    ctx.publish(events.Frame(index=index, frame=ev.frame, number=ev.number,
                                             done=parser.done_count))
                    if ctx.frame_hook is not None and att.cut_end is None:
                        new_end = ctx.frame_hook(index, next_needed - 1, frame, cost,
                                                 att.launch_s if first else None)
                        if new_end is not None:
                            known_end = min(known_end, new_end)
                        if new_end is not None and new_end < att.end:
                            ledger.keep_until(new_end)  # the tail is another slot's now
                            if next_needed - 1 >= new_end:
                                att.cut_end = new_end  # stop right after our last frame
                                kill_renderer()
                elif isinstance(ev, StrongError):
                    att.strong.append(f"{ev.text} ({ev.hint})" if ev.hint else ev.text)
                    kill_renderer()  # deterministic failure: do not let AE go on
                elif isinstance(ev, AeWarning):
                    att.warnings.append(ev.text)
                    ctx.publish(events.SlotWarning(index=index, text=ev.text))
        for ev in parser.close():  # a failure that waited for a line that never came
            if isinstance(ev, StrongError):
                att.strong.append(f"{ev.text} ({ev.hint})" if ev.hint else ev.text)
            elif isinstance(ev, AeWarning):
                att.warnings.append(ev.text)
    except BaseException:
        kill_renderer()  # never leave a renderer behind us (its frames stay in the ledger)
        raise
    finally:
        att.exit_code = proc.wait()
        reaper.join(timeout=defaults.KILL_WAIT_S + 1)
        watch.done.set()
        watch.join(timeout=1)
        os.close(log_fd)
        proc.stdout.close()
    if watch.reason and watch.reason != "aborted":
        att.stalled = watch.reason
    att.resolvable = parser.numbering != "unknown"
    att.tail = parser.tail()[-defaults.LOG_TAIL_LINES:]
    att.touched = [f for f in span if _stat(pattern.path_for(f)) != before[f]]
    att.ledger = ledger
    return att


def _settle(pattern: OutputPattern, att: Attempt, owned: list[int], failed: bool,
            good: list[int], suspect: list[int]) -> None:
    """Decide which of the launch's frames (those the chunk still owns) are rendered.

    A failed launch keeps only whole frames it reported done; a frame it touched without
    reporting it was in flight when the launch stopped and is deleted. Frames no longer
    owned (a stolen tail) belong to the thief and are never touched."""
    on_disk = set(owned) - set(missing_frames(pattern, owned))
    if failed and att.resolvable:
        good += [f for f in owned if f in on_disk and f in att.reported]
        for f in owned:
            # touched but never reported, or reported but not whole: in flight at the stop
            if f in att.touched and (f not in att.reported or f not in on_disk):
                suspect.append(f)
                with contextlib.suppress(OSError):
                    os.unlink(pattern.path_for(f))
    else:
        good += [f for f in owned if f in on_disk]
    if att.ledger is not None:
        att.ledger.close()


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
    for n, (s, e) in enumerate(runs(frames)):
        att = _launch(ctx, index, s, e, label, log_path_of(s, e), pattern)
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
            failure = (f"aerender exited with code {att.exit_code}", True, att)
        if failure or owned_end < e:
            break
    t1 = time.time()
    good_set = set(good)
    missing = [f for f in frames if f not in good_set]
    if failure is None and missing:  # blame the launch that should have written them
        att = next((a for a in launched if a.start <= missing[0] <= a.end), launched[-1])
        failure = (f"{len(missing)} frame(s) missing on disk (or incomplete) after aerender "
                   f"exited 0 (first: {pattern.path_for(missing[0])})", True, att)
    result = events.ChunkOutcome(
        slot=ctx.slot, index=index, start=frames[0], end=frames[-1],
        frames=format_frames(frames), t0=t0, t1=t1, attempt=attempt,
        exit_code=failure[2].exit_code if failure else 0, launch_s=launch_s,
        cut=frames[-1] if frames[-1] < planned_end else None,
        frames_rendered=len(good), missing=missing, suspect=suspect,
        warnings=warnings, log=failure[2].log if failure else "",
    )
    if failure is None:
        return result
    reason, retryable, att = failure
    result.reason, result.tail, result.retryable = reason, att.tail, retryable
    raise ChunkError(f"chunk {index} frames {format_frames(frames)} on slot {ctx.slot}: "
                      f"{reason}", retryable=retryable, redo=missing, outcome=result)
