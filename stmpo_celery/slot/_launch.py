"""One aerender launch inside a slot: its process tree, its log, the watch that stops a
stalled or over-long render, and what it reported (:class:`Attempt`).

When the launcher exits, whatever it left below the slot (its renderer) is killed at
once: the chunk never waits on an orphan holding the output pipe, and a retry never
overlaps a living renderer. Runs in the slot process; :mod:`._chunk` decides from the
attempts what the chunk rendered.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..aerender import AerenderLog, AeWarning, FrameDone, StrongError, build_argv
from ..broker import events
from ..config import defaults
from ..host import RunJob, decode_output, descendants, kill_procs, tree_cpu_seconds
from ..plan import OutputPattern
from ._fence import stop_if_orphaned
from ._ledger import Ledger

if TYPE_CHECKING:
    from ._chunk import SlotContext


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)



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


#: a finished frame as the reader queues it: (done in order, frame, cost, first latency)
_Done = tuple[int, int, float | None, float | None]


class _Reporter(threading.Thread):
    """Sends what the log says to the broker, in order, so the log's reader never waits
    on it: a broker that is slow or stopped (a host under pressure, a network that
    stalls) must not hold the reader back, or the in-flight ledger falls behind the
    frames After Effects has written and a stopped run deletes them as in flight (whole
    frames, written and reported in the pipe while nobody read it) — and frame costs are
    measured late. What came while the broker answered the last batch goes as one batch
    (the events in one round trip, one frame-hook call for every frame), so a slow broker
    never lets the reporter fall behind After Effects. The adaptive schedule's answer (a
    thief lowered our end) comes back through :meth:`_Cut.lower`."""

    def __init__(self, ctx: SlotContext, index: int, cut: _Cut) -> None:
        super().__init__(name="stmpo-reporter", daemon=True)
        self.ctx = ctx
        self.index = index
        self.cut = cut
        self.items: queue.SimpleQueue[events.Event | _Done | None] = queue.SimpleQueue()
        self.error: BaseException | None = None  #: the frame hook failed (the broker)

    def send(self, event: events.Event) -> None:
        self.items.put(event)

    def frame(self, done: int, frame: int, cost: float | None, first: float | None) -> None:
        self.items.put((done, frame, cost, first))

    def close(self) -> None:
        """Everything queued is sent (the chunk's outcome must not overtake its frames),
        unless the broker takes nothing for as long as a run's keys live: by then the run
        is over (the orchestrator found its broker lost), and what the reporter would
        still do is dropped — above all, it kills no renderer (the slot's next one)."""
        self.items.put(None)
        self.join(timeout=defaults.RUN_KEY_TTL_S)
        self.cut.close()

    def run(self) -> None:
        while True:
            batch = [self.items.get()]
            with contextlib.suppress(queue.Empty):
                while batch[-1] is not None:
                    batch.append(self.items.get_nowait())
            if not self.cut.closed:
                self._send([b for b in batch if b is not None])
            if batch[-1] is None:
                return

    def _send(self, batch: list[events.Event | _Done]) -> None:
        evs = [b for b in batch if isinstance(b, events.Event)]
        if evs:
            self.ctx.publish_all(evs)
        frames = [b for b in batch if isinstance(b, tuple)]
        if (not frames or self.error is not None or self.ctx.frame_hook is None
                or self.cut.att.cut_end is not None):
            return
        costs = {f: c for _done, f, c, _first in frames if c is not None}
        first = next((x for *_, x in frames if x is not None), None)
        try:
            new_end = self.ctx.frame_hook(self.index, frames[-1][0], costs, first)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the reader
            self.error = exc
            self.cut.stop()
            return
        if new_end is not None:
            self.cut.lower(new_end)


class _Cut:
    """Where this launch must stop when a thief takes its tail, shared by the log's reader
    (how far the renderer got) and the reporter (the end the schedule says): whichever
    learns last stops the renderer, right after our last frame. Once the launch is over
    (:meth:`close`), nothing here kills anything."""

    def __init__(self, att: Attempt) -> None:
        self.att = att
        self.lock = threading.Lock()
        self.known_end = att.end  #: lowered when a thief takes our tail
        self.reached = att.start - 1  #: every frame up to this one is reported done
        self.closed = False

    def lower(self, end: int) -> None:
        with self.lock:
            self.known_end = min(self.known_end, end)
        self.check()

    def advance(self, reached: int) -> None:
        with self.lock:
            self.reached = reached
        self.check()

    def check(self) -> None:
        with self.lock:
            stop = (not self.closed and self.att.cut_end is None
                    and self.known_end < self.att.end and self.reached >= self.known_end)
            if stop:
                self.att.cut_end = self.known_end
        if stop:  # before AE gets far into a frame the thief renders
            kill_renderer()

    def error(self, text: str) -> str | None:
        """A strong error from the renderer fails the launch — unless the launch had
        been stopped at its cut already (every frame it owns reported done): the renderer
        was then past its end, in a frame a thief owns (MFR renders ahead), and what it
        said is a warning, returned to be said. The frames it owns are still checked."""
        with self.lock:
            cut_at = self.att.cut_end
        if cut_at is None:
            self.att.strong.append(text)
            return None
        self.att.warnings.append(f"after frame {cut_at}, where it was stopped for a thief, "
                                 f"the renderer said: {text}")
        return self.att.warnings[-1]

    def stop(self) -> None:
        """Stop the renderer now (the broker failed under the frame hook)."""
        with self.lock:
            live = not self.closed
        if live:
            kill_renderer()

    def close(self) -> None:
        with self.lock:
            self.closed = True


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


def launch(ctx: SlotContext, index: int, start: int, end: int, label: str,
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
    cut = _Cut(att)
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
    reporter = _Reporter(ctx, index, cut)
    reporter.start()
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
            for ev in parser.feed(line):  # first: the ledger, then the merged log
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
                    # a stolen tail stays in our ledger while our renderer lives: with MFR
                    # it renders ahead, into the thief's frames, until it is killed
                    cut.advance(next_needed - 1)
                    reporter.send(events.Frame(index=index, frame=ev.frame, number=ev.number,
                                               done=parser.done_count))
                    reporter.frame(next_needed - 1, frame, cost,
                                   att.launch_s if first else None)
                elif isinstance(ev, StrongError):
                    if said := cut.error(f"{ev.text} ({ev.hint})" if ev.hint else ev.text):
                        reporter.send(events.SlotWarning(index=index, text=said))
                    kill_renderer()  # deterministic failure: do not let AE go on
                elif isinstance(ev, AeWarning):
                    att.warnings.append(ev.text)
                    reporter.send(events.SlotWarning(index=index, text=ev.text))
            ctx.emit(label, line)  # may wait on the orchestrator reading the slots' output
            if reporter.error is not None:
                raise reporter.error
        for ev in parser.close():  # a failure that waited for a line that never came
            if isinstance(ev, StrongError):
                if said := cut.error(f"{ev.text} ({ev.hint})" if ev.hint else ev.text):
                    reporter.send(events.SlotWarning(index=index, text=said))
            elif isinstance(ev, AeWarning):
                att.warnings.append(ev.text)
    except BaseException:
        kill_renderer()  # never leave a renderer behind us (its frames stay in the ledger)
        raise
    finally:
        att.exit_code = proc.wait()
        stop_if_orphaned()  # killed by the death watch: nothing goes back to Celery
        reporter.close()
        reaper.join(timeout=defaults.KILL_WAIT_S + 1)
        watch.done.set()
        watch.join(timeout=1)
        os.close(log_fd)
        proc.stdout.close()
    if reporter.error is not None:  # the broker failed under the frame hook
        raise reporter.error
    if watch.reason and watch.reason != "aborted":
        att.stalled = watch.reason
    att.resolvable = parser.numbering != "unknown"
    att.tail = parser.tail()[-defaults.LOG_TAIL_LINES:]
    att.touched = [f for f in span if _stat(pattern.path_for(f)) != before[f]]
    att.ledger = ledger
    return att
