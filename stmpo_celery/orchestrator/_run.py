"""The orchestrator: owns every process and every Redis key of one render.

``Run.execute()`` starts the broker and the slots together, enqueues the chord,
follows the slots' events, stops everything on the first failure or a cancel
signal, verifies every frame on disk, writes the summary and cleans up — in a
``finally`` that runs whatever happened.
"""

from __future__ import annotations

import contextlib
import signal
import time
from types import FrameType
from typing import Any, TextIO

import redis
from kombu.exceptions import KombuError
from kombu.utils.uuid import uuid

from ..broker import (
    BrokerUrl,
    EmbeddedRedis,
    Waited,
    bounded,
    events,
    heartbeat,
    keys,
    mask_url,
    server_id,
    still_there,
    until_done,
)
from ..config import defaults
from ..errors import CANCEL_CODES as _CANCEL_CODES
from ..errors import ExitCode, StmpoError
from ..host import (
    HostPlan,
    Warden,
    become_subreaper,
    cancel_signals,
    forget_env,
    kill_tree,
    make_run_dir,
    release_folder,
    start_warden,
)
from ..monitor import FlowerProcess, start_flower_for_run
from ..plan import format_frames
from ..slot import (
    RunSpec,
    ledger_dir,
    set_retry,
    spare_tasks,
)
from . import _report as report
from ._dispatch import RunQueue
from ._ending import finish, forced_last_words, teardown
from ._flowerrun import RunRow
from ._funnel import LogFunnel, one_line
from ._handlers import EventHandlers
from ._history import History
from ._logdir import open_private, run_log_dir
from ._pool import SlotPool
from ._progress import Progress
from ._startup import open_broker
from ._stopping import BrokerWatch, force_exit
from ._summary import ChunkRecord
from ._validate import Prepared


class Run(EventHandlers):
    def __init__(self, prep: Prepared, plan: HostPlan, *, stdout: TextIO, tty: bool,
                 embedded: EmbeddedRedis | None = None) -> None:
        self.prep = prep
        self.plan = plan
        self.o = prep.options
        self.run_id = prep.run_id or keys.new_run_id()
        self.host = keys.host_name()
        self.queue = keys.queue(self.run_id, self.host)
        self.tty, self.stdout = tty, stdout
        self.log_dir = run_log_dir(self.o.log_dir, self.run_id)
        # an embedded Redis may have been started already (see cli.render): its dir is ours
        self.run_dir = (embedded.run_dir if embedded is not None
                        else make_run_dir(f"stmpo-{self.run_id}-"))
        self.embedded: EmbeddedRedis | None = embedded
        self.broker: BrokerUrl | None = embedded.url if embedded is not None else prep.broker
        self.pool: SlotPool | None = None
        self.run_queue: RunQueue | None = None
        self.client: redis.Redis | None = None
        self.watch_client: Any = None  #: the watchdog's short-timeout client (from the start)
        self.pubsub: Any = None  #: the run's event subscription (from the start)
        self.server: str | None = None  #: the broker's run id (INFO server) when the run began
        self.events_broke = False  #: the event subscription's connection was made again
        self.chunks: dict[int, ChunkRecord] = {}
        self.failures: list[ChunkRecord] = []
        self.cancel_signal: int | None = None
        self.stop_reason: str | None = None
        self.exit_code = ExitCode.OK
        self.finalized = False
        self.paused_s = 0.0  #: the longest time this process was stopped mid-run
        self.warnings: list[str] = []
        self.done_frames: set[int] = set()  #: reported by aerender
        self.reporters: dict[int, set[int]] = {}  #: frame -> the chunks that reported it
        self.verified: dict[int, tuple[int, int, int] | None] = {}  #: counted (file then)
        self.verified_at: dict[int, float] = {}  #: frame -> when it was counted (monotonic)
        self.launch_end: dict[int, int] = {}  #: chunk -> the end its latest launch had
        self.unverified: set[int] = set()  #: reported, not (yet) whole on disk
        #: deleted after a renderer stopped at a cut wrote over them: rendered again late
        self.late: set[int] = set()
        self.late_sent: set[int] = set()  #: ... once: these went to a late re-render
        self.held: set[int] = set()  #: half-written, held open by another process: not whole
        self.unresolved: dict[tuple[int, int], int] = {}
        self.slot_deaths = 0
        self.start_deaths: dict[int, int] = {}  #: slot -> deaths in a row before any work
        self.spoke: set[int] = set()  #: slots whose current process has sent an event
        self.t_start = time.time()
        self.t_first_launch: float | None = None
        self.t_last_frame: float | None = None
        self._run_log: Any = None
        self.funnel = LogFunnel(None, stdout)
        self.progress: Progress | None = None
        self._old_handlers: dict[int, Any] = {}
        self.flower: FlowerProcess | None = None
        self.watch = BrokerWatch()
        self.entry = ""
        self.row: RunRow | None = None  #: the run's row in Flower
        self.row_task = uuid()  #: the task id of that row
        self.history: History | None = None  #: a previous render's costs (set by the CLI)
        self.warden: Warden | None = None

    # -- lifecycle ----------------------------------------------------------------
    def execute(self) -> ExitCode:
        self._install_signals()
        become_subreaper()  # a dead slot's orphaned renderer is ours to kill and reap
        # if this process and its slots are killed together, nobody else stops the
        # renderers: the warden does
        self.warden = start_warden(defaults.WARDEN_GRACE_S, f"{__package__}._warden",
                                   str(self.run_dir), str(ledger_dir(self.prep.pattern)),
                                   self.run_id)
        try:
            self._run_log = open_private(self.log_dir / "run.log")
            self.funnel = LogFunnel(self._run_log, self.stdout)
            self.progress = Progress(self.funnel, len(self.prep.to_render),
                                     tty=self._bar_mode(), skipped=len(self.prep.skipped))
            self._say(f"run {self.run_id} on {self.host}: "
                      f"{len(self.prep.frames)} frame(s) requested, "
                      f"{len(self.prep.to_render)} to render; logs in {self.log_dir}")
            for note in self.prep.notes:
                self._say(note)
            # nothing to render: no plan to tell (it would size slots for no frames)
            shown, logged = (report.plan_lines(self.plan, self.o.verbose)
                             if self.prep.to_render else ([], []))
            for line in shown:
                self._say(line)
            for line in logged:
                self.funnel.line(f"stmpo: {one_line(line)}", echo=False)
            if self.prep.to_render:
                self._start()
                self._follow()
        except BaseException as exc:  # noqa: BLE001 - cleanup must run, then report
            if self.stop_reason is None and self.cancel_signal is not None:
                name = signal.Signals(self.cancel_signal).name  # the cancel came first
                self.stop_reason = f"cancelled by {name}"
                self.exit_code = _CANCEL_CODES.get(self.cancel_signal, ExitCode.TERMINATED)
            elif self.stop_reason is None and isinstance(exc, StmpoError):  # said already
                self.stop_reason, self.exit_code = exc.message, exc.code  # in its own words
            elif self.stop_reason is None and (problem := report.host_problem(exc)):
                if isinstance(exc, (redis.RedisError, KombuError)) and self._all_whole():
                    self.warnings.append(f"after the last frame, {problem}")
                    self._say(f"WARNING: {self.warnings[-1]}")  # done: bookkeeping lost
                else:
                    self.stop_reason = problem
                    self.exit_code = ExitCode.ENVIRONMENT
            elif self.stop_reason is None:
                self.stop_reason = (f"orchestrator error: {type(exc).__name__}: "
                                    f"{one_line(str(exc)) or repr(exc)}")
                self.exit_code = ExitCode.RENDER_FAILED
            if not isinstance(exc, Exception):
                raise
        finally:
            teardown(self)
        try:
            return finish(self)
        finally:
            release_folder(self.log_dir)  # the logs are written: a later run may prune them

    def _bar_mode(self) -> bool:
        if self.o.progress == "bar":
            return True
        if self.o.progress == "openjd":
            return False
        return self.tty

    def _say(self, text: str) -> None:
        self.funnel.line(f"stmpo: {one_line(text)}")

    def _install_signals(self) -> None:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            if self.cancel_signal is None:
                self.cancel_signal = signum
            else:  # a second cancel: the first one is taking too long
                self._force_exit(signum)

        for sig in cancel_signals():  # CTRL_BREAK (SIGBREAK): OpenJD's cancel on Windows
            self._old_handlers[sig] = signal.signal(sig, on_signal)

    def _force_exit(self, signum: int) -> None:  # kill what we own, exit, wait on nothing
        code = _CANCEL_CODES.get(self.cancel_signal or signum, ExitCode.TERMINATED)
        name = signal.Signals(signum).name
        slots = [s.pid for s in self.pool.slots] if self.pool is not None else []
        force_exit(slots, [self.embedded.proc if self.embedded else None,
                           self.flower.proc if self.flower else None],
                   code, name, private=[str(self.run_dir)],
                   last_words=lambda: forced_last_words(self, ExitCode(code), name, slots))

    def _restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)

    # -- start --------------------------------------------------------------------
    def _start(self) -> None:
        if self.broker is None:
            self.embedded = EmbeddedRedis(self.run_dir)
            self.embedded.start()
            self.broker = self.embedded.url
        if self.embedded is not None:  # started here, or early by the CLI
            self._say(self.embedded.describe())
        spec = RunSpec(
            run_id=self.run_id, host=self.host, queue=self.queue, broker_url=self.broker.url,
            aerender=self.prep.aerender, target=self.prep.render_target(),
            log_dir=str(self.log_dir),
            fail_fast=self.o.fail_fast, spawn_delay=self.o.spawn_delay, retries=self.o.retries,
            stall_timeout=self.o.stall_timeout, chunk_timeout=self.o.chunk_timeout,
            schedule=self.plan.schedule, launch_cost=self.o.launch_cost,
            min_steal=self.prep.chunk_size or 1,
            chunks=list(self.plan.chunks), frames=list(self.prep.to_render),
        )
        spec_path = self.run_dir / "spec.json"  # the broker URL reaches slots only here (0700)
        spec.write(spec_path)
        forget_env(defaults.SECRET_ENVS)  # never inherited by slots, aerender or AE
        # Slots start their workers while Redis comes up (~10 ms): start both now.
        self.pool = SlotPool(spec_path, list(self.plan.blocks), self.log_dir, self.funnel,
                             quiet=self._bar_mode() and not self.o.verbose)
        self.pool.start()
        if self.pool.job.problem:  # Windows: the run's Job Object could not be used
            self._say(f"WARNING: {self.pool.job.problem}")
        if self.embedded is not None:
            self.embedded.wait_ready()
        self.flower = start_flower_for_run(self.o, self.broker, self.run_id, self.queue,
                                           self.log_dir, self._say,
                                           lambda: self.cancel_signal is not None)
        if self.cancel_signal is not None:  # cancelled while starting: _follow stops now
            return
        n_tasks = len(self.plan.chunks)
        if self.plan.schedule == "adaptive":
            n_tasks += spare_tasks(self.plan.n_slots, len(self.prep.to_render))
        for i in range(n_tasks):
            s, e = self.plan.chunks[i] if i < len(self.plan.chunks) else (0, -1)
            self.chunks[i] = ChunkRecord(index=i, start=s, end=e)
        try:
            waited = until_done(lambda: open_broker(self, n_tasks),
                                lambda: self.cancel_signal is not None,
                                defaults.START_BROKER_WAIT_S)
        except (redis.RedisError, OSError, KombuError) as exc:
            if problem := report.host_problem(exc):  # it answers: a full disk, not lost
                self.stop_reason = problem
                self.exit_code = ExitCode.ENVIRONMENT
                return
            self._broker_lost(f" ({type(exc).__name__}: {one_line(str(exc)) or 'no answer'})",
                              when="while the run started")
            return
        if waited is Waited.TIMED_OUT:
            self._broker_lost(f" (no answer for {defaults.START_BROKER_WAIT_S:g} s)",
                              when="while the run started")
        if waited is not Waited.DONE:  # cancelled, or lost: _follow stops now
            return
        self.row = RunRow(self)
        self.row.start()
        if self.progress is not None:
            self.progress.status("Rendering")

    def _rerender_late(self) -> bool:
        """Every chunk has ended, but frames a renderer stopped at a cut wrote over after
        they were done (and that no retry rendered since) are missing: they are rendered
        in one more chunk, on the same slots, in a chord of its own — once. Returns
        whether that chunk was sent."""
        frames = sorted(self.late - self.late_sent - set(self.verified))
        if not frames or self.run_queue is None or self.client is None:
            return False
        self.late_sent.update(frames)
        index = max(self.chunks) + 1
        try:
            set_retry(self.client, self.run_id, index, frames)
            task_id = self.run_queue.send_chord([index])[0]
        except (redis.RedisError, OSError, KombuError):
            self._broker_lost(" (sending the late re-render)")
            return False
        self.chunks[index] = ChunkRecord(index=index, start=frames[0], end=frames[-1],
                                         task_id=task_id)
        self.finalized = False
        self._say(f"rendering again {len(frames)} frame(s) a renderer stopped at a cut "
                  f"wrote over after their chunk had ended: {format_frames(frames)}")
        return True

    # -- follow -------------------------------------------------------------------
    def _follow(self) -> None:
        assert self.pool is not None  # the client may be None: cancelled while starting
        last_ping = last_beat = tick = time.monotonic()
        all_done_at: float | None = None
        while self.stop_reason is None:
            if self.cancel_signal is not None:
                name = signal.Signals(self.cancel_signal).name
                self._stop(f"cancelled by {name}", _CANCEL_CODES.get(
                    self.cancel_signal, ExitCode.TERMINATED))
                break
            try:
                msg = self.pubsub.get_message(timeout=0.05)
                while msg is not None:
                    if msg.get("type") == "message":
                        ev = events.decode(msg.get("data"))
                        if ev is not None:
                            self._on_event(ev)
                            self._observe(ev)
                    msg = self.pubsub.get_message(timeout=0)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                if self.watch.gone(time.monotonic(), self.embedded):
                    self._broker_lost()
                    break
                time.sleep(0.2)  # a blip: the next call reconnects and resubscribes
                continue
            if self.events_broke:
                self._broker_lost(" (the connection carrying the slots' events broke: what "
                                  "they sent meanwhile is lost)")
                break
            if self.stop_reason is not None:
                break
            if self.embedded is not None and not self.embedded.alive():
                self._broker_lost()
                break
            for dead in self.pool.dead():
                self._slot_died(dead)
            if self.stop_reason is not None:
                break
            now = time.monotonic()
            if now - tick > defaults.RUN_KEY_TTL_S - defaults.HEARTBEAT_INTERVAL_S:  # stopped:
                self.paused_s = max(self.paused_s, now - tick)  # its keys may have expired
            tick = now
            if self.prep.lock is not None:
                stale = self.prep.lock.refresh()
                if stale is not None and stale not in self.warnings:
                    self.warnings.append(stale)
                    self._say(f"WARNING: {stale}")
            if now - last_ping > defaults.WATCHDOG_INTERVAL_S:
                last_ping = now
                if self.unverified:
                    self._verify_frames()
                try:
                    if not still_there(self.watch_client, self.run_id):
                        self._broker_lost(f" (this run was stopped for {self.paused_s:.0f} s:"
                                          " SIGSTOP, a paused machine — longer than its keys "
                                          "live there)" if self.paused_s else
                                          " (restarted empty: queue and results gone)")
                        break
                    if self.server is not None and server_id(self.watch_client) != self.server:
                        self._broker_lost(" (it restarted: the events sent while it was down "
                                          "are lost, and what it reloaded may be out of date)")
                        break
                    if now - last_beat > defaults.HEARTBEAT_INTERVAL_S:
                        self.entry = heartbeat(self.watch_client, self.run_id, self.entry)
                        last_beat = now
                    if (gone := self.watch.ok(time.monotonic())) is not None:
                        self._say(f"the broker did not answer for {gone:.1f} s; it is back")
                    self._kill_hung_slots()
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    if self.watch.gone(now, self.embedded):
                        self._broker_lost()
                        break
            if all(c.terminal for c in self.chunks.values()):
                if not self.failures and self.finalized and self._rerender_late():
                    all_done_at = None
                    continue
                if self.failures or self.finalized:
                    break
                all_done_at = all_done_at or now
                if now - all_done_at > defaults.FINALIZE_WAIT_S:
                    break

    def _all_whole(self) -> bool:
        """Every frame is whole on disk already (checked again at the end): the render is."""
        return bool(self.prep.pattern.is_sequence and self.prep.to_render and not self.failures
                    and self.cancel_signal is None
                    and set(self.prep.to_render) <= self.verified.keys())

    def _events_reconnected(self, _connection: object) -> None:
        self.events_broke = True

    def _stop(self, reason: str, code: ExitCode) -> None:
        """First failure or cancel: abort flag, purge, kill every slot tree."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self.exit_code = code
        if self.pool is not None:
            self.pool.kill_all()
        self._note("stop", f"stopping: {reason}")
        why = (reason if self.cancel_signal is not None or not self.failures
               else f"fail-fast: chunk {self.failures[0].index} failed")

        def tell_broker() -> None:  # abort flag, purge, Flower: never wait on a dead broker
            if self.client is not None:
                self.client.set(keys.abort_key(self.run_id), reason, nx=True)
            if self.run_queue is not None:
                self.run_queue.purge()
            if self.row is not None:
                self.row.stopped_chunks(why)

        if self.embedded is None or self.embedded.alive():
            bounded(tell_broker, defaults.STOP_BROKER_WAIT_S)

    def _broker_lost(self, why: str = "", when: str = "mid-run") -> None:
        which = "embedded Redis" if self.embedded is not None else (
            f"broker {mask_url(self.broker.url)}" if self.broker else "broker")
        if self._all_whole():
            # every frame is already whole on disk (and checked again at the end): the
            # render is done, only its bookkeeping is lost — not a failed task to retry
            text = f"{which} was lost after the last frame{why}; every frame is whole"
            self.warnings.append(text)
            self._say(f"WARNING: {text}")
            return
        self.stop_reason = f"{which} was lost {when}{why}"
        self.exit_code = ExitCode.ENVIRONMENT
        if self.pool is not None:
            self.pool.kill_all()

    def _kill_hung_slots(self) -> None:
        """A slot with a chunk refreshes its state every ``SLOT_HEARTBEAT_S`` from a thread
        of its own; one that stops (SIGSTOP, a file system hung under it) cannot say so,
        and its chunk would hold the run forever. Silent past the limit, it is killed:
        the dead-slot path replaces it and re-enqueues its frames."""
        assert self.pool is not None
        limit = (max(self.o.stall_timeout, defaults.SLOT_HUNG_BEATS * defaults.SLOT_HEARTBEAT_S)
                 if self.o.stall_timeout > 0 else defaults.SLOT_HUNG_S)
        states = self.watch_client.hgetall(keys.state_key(self.run_id)).values()
        for slot, silent, chunk in self.pool.silent(states, limit, time.time()):
            self._say(f"slot {slot.index} (pid {slot.pid}) has said nothing for {silent:.0f} s "
                      f"while rendering chunk {chunk} (stopped, or stuck in the system): "
                      "killed, to be replaced")
            kill_tree(slot.pid, pgid=slot.pid, timeout=defaults.KILL_WAIT_S)
