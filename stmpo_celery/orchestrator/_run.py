"""The orchestrator: owns every process and every Redis key of one render.

``Run.execute()`` starts the broker and the slots together, enqueues the chord,
follows the slots' events, stops everything on the first failure or a cancel
signal, verifies every frame on disk, writes the summary and cleans up — in a
``finally`` that runs whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import redis

from ..aerender._argv import RenderTarget
from ..broker import _schedule as schedule
from ..broker import events, keys
from ..broker._redelivery import missing_frames_suspect, requeue_unacked
from ..broker._redis import BrokerUrl, EmbeddedRedis, mask_url
from ..config import defaults
from ..errors import ExitCode
from ..host._hostplan import HostPlan
from ..host._proc import become_subreaper
from ..monitor import _flowerctl as flowerctl
from ..plan._frames import parse_frames
from ..slot._chunk import missing_frames
from ..slot._spec import RunSpec
from ._dispatch import RunQueue, delete_run_keys
from ._funnel import LogFunnel, one_line
from ._history import History, record_run
from ._pool import Slot, SlotPool
from ._progress import Progress
from ._summary import ChunkRecord, write_summary
from ._validate import Prepared

_CANCEL_CODES: dict[int, ExitCode] = {
    signal.SIGINT: ExitCode.INTERRUPTED,
    signal.SIGTERM: ExitCode.TERMINATED,
}


class Run:
    def __init__(self, prep: Prepared, plan: HostPlan, *, stdout: TextIO, tty: bool,
                 embedded: EmbeddedRedis | None = None) -> None:
        self.prep = prep
        self.plan = plan
        self.o = prep.options
        self.run_id = secrets.token_hex(4)
        self.host = keys.host_name()
        self.queue = keys.queue(self.run_id, self.host)
        self.tty = tty
        self.stdout = stdout
        # an embedded Redis may have been started already (see cli.render): its dir is ours
        self.run_dir = embedded.run_dir if embedded is not None else Path(
            tempfile.mkdtemp(prefix=f"stmpo-{self.run_id}-"))
        log_root = Path(self.o.log_dir) if self.o.log_dir else (
            Path(tempfile.gettempdir()) / "stmpo-logs" / self.run_id)
        self.log_dir = log_root
        self.embedded: EmbeddedRedis | None = embedded
        self.broker: BrokerUrl | None = embedded.url if embedded is not None else prep.broker
        self.pool: SlotPool | None = None
        self.run_queue: RunQueue | None = None
        self.client: redis.Redis | None = None
        self.chunks: dict[int, ChunkRecord] = {}
        self.failures: list[ChunkRecord] = []
        self.cancel_signal: int | None = None
        self.stop_reason: str | None = None
        self.exit_code = ExitCode.OK
        self.finalized = False
        self.warnings: list[str] = []
        self.done_frames: set[int] = set()
        self.unresolved: dict[tuple[int, int], int] = {}
        self.slot_deaths = 0
        self.t_start = time.time()
        self.t_first_launch: float | None = None
        self.t_last_frame: float | None = None
        self._run_log: Any = None
        self.funnel = LogFunnel(None, stdout)
        self.progress: Progress | None = None
        self._old_handlers: dict[int, Any] = {}
        self.flower: flowerctl.FlowerProcess | None = None
        self.history: History | None = None  #: a previous render's costs (set by the CLI)

    # -- lifecycle ----------------------------------------------------------------
    def execute(self) -> ExitCode:
        self._install_signals()
        become_subreaper()  # a dead slot's orphaned renderer is ours to kill and reap
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._run_log = open(self.log_dir / "run.log", "a", encoding="utf-8")  # noqa: SIM115
            self.funnel = LogFunnel(self._run_log, self.stdout)
            self.progress = Progress(self.funnel, len(self.prep.to_render),
                                     tty=self._bar_mode())
            self._say(f"stmpo run {self.run_id} on {self.host}: "
                      f"{len(self.prep.frames)} frame(s) requested, "
                      f"{len(self.prep.to_render)} to render; logs in {self.log_dir}")
            for note in self.prep.notes:
                self._say(note)
            for line in self.plan.lines():
                self._say(line)
            if self.prep.to_render:
                self._start()
                self._follow()
        except BaseException as exc:  # noqa: BLE001 - cleanup must run, then report
            if self.stop_reason is None:
                self.stop_reason = f"orchestrator error: {one_line(repr(exc))}"
                self.exit_code = ExitCode.RENDER_FAILED
            if not isinstance(exc, Exception):
                raise
        finally:
            self._teardown()
        return self._finish()

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

        sigs = [signal.SIGINT, signal.SIGTERM]
        if hasattr(signal, "SIGBREAK"):  # CTRL_BREAK: OpenJD's cancel notice on Windows
            sigs.append(signal.SIGBREAK)
        for sig in sigs:
            self._old_handlers[sig] = signal.signal(sig, on_signal)

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
        spec = RunSpec(
            run_id=self.run_id, host=self.host, queue=self.queue, broker_url=self.broker.url,
            aerender=self.prep.aerender, target=self._target(), log_dir=str(self.log_dir),
            fail_fast=self.o.fail_fast, spawn_delay=self.o.spawn_delay, retries=self.o.retries,
            stall_timeout=self.o.stall_timeout, chunk_timeout=self.o.chunk_timeout,
            schedule=self.plan.schedule, launch_cost=self.o.launch_cost,
            min_steal=self.prep.chunk_size or 1,
            chunks=list(self.plan.chunks), frames=list(self.prep.to_render),
        )
        spec_path = self.run_dir / "spec.json"
        spec.write(spec_path)
        # Slots import Celery (~0.4 s) while Redis comes up (~10 ms): start both now.
        self.pool = SlotPool(spec_path, list(self.plan.blocks), self.log_dir, self.funnel,
                             quiet=self._bar_mode() and not self.o.verbose)
        self.pool.start()
        if self.embedded is not None:
            self.embedded.wait_ready()
        self.flower = flowerctl.start_for_run(self.o, self.broker, self.run_id, self.queue,
                                              self.log_dir, self._say)
        self.client = self.broker.client(timeout=10)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(keys.events_channel(self.run_id))
        self.client.hset(keys.REGISTRY, self.run_id, events.registry_entry(
            self.run_id, self.host, self.queue, len(self.prep.to_render), len(self.plan.blocks),
            str(self.log_dir)))
        n_tasks = len(self.plan.chunks)
        if self.plan.schedule == "adaptive":
            schedule.register_plan(self.client, self.run_id, self.plan.chunks)
            if self.history is not None:
                schedule.set_prior(self.client, self.run_id, self.history.costs)
            n_tasks += schedule.spare_tasks(self.plan.n_slots, len(self.prep.to_render))
        for i in range(n_tasks):
            s, e = self.plan.chunks[i] if i < len(self.plan.chunks) else (0, -1)
            self.chunks[i] = ChunkRecord(index=i, start=s, end=e)
        self._enqueue(n_tasks)
        self.progress_status("Rendering")

    def _target(self) -> RenderTarget:
        o = self.o
        return RenderTarget(
            project=self.prep.project, output=self.prep.pattern.raw, comp=o.comp,
            rqindex=o.rqindex, mfr=o.mfr, mfr_max_cpu=o.mfr_max_cpu,
            rs_template=o.rs_template, om_template=o.om_template, mem_usage=o.mem_usage,
            continue_on_missing_footage=o.continue_on_missing_footage,
        )

    def _enqueue(self, n_tasks: int) -> None:
        assert self.broker is not None
        self.run_queue = RunQueue(self.broker, self.run_id, self.queue, self.host)
        for i, task_id in enumerate(self.run_queue.send_chord(n_tasks)):
            self.chunks[i].task_id = task_id

    def progress_status(self, text: str) -> None:
        if self.progress is not None:
            self.progress.status(text)

    # -- follow -------------------------------------------------------------------
    def _follow(self) -> None:
        assert self.pool is not None and self.client is not None
        last_ping = time.monotonic()
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
                    msg = self.pubsub.get_message(timeout=0)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                self._broker_lost()
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
            if now - last_ping > defaults.WATCHDOG_INTERVAL_S:
                last_ping = now
                try:
                    self.client.ping()
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    self._broker_lost()
                    break
            if all(c.terminal for c in self.chunks.values()):
                if self.failures or self.finalized:
                    break
                all_done_at = all_done_at or now
                if now - all_done_at > defaults.FINALIZE_WAIT_S:
                    break

    def _on_event(self, ev: dict[str, Any]) -> None:
        kind = ev["t"]
        idx = ev.get("index")
        rec = self.chunks.get(idx) if isinstance(idx, int) else None
        if kind == "chunk-start" and rec is not None:
            rec.slot, rec.start, rec.end = ev.get("slot"), ev["start"], ev["end"]
            rec.status, rec.t0 = "running", ev.get("ts")
            rec.task_id, rec.frames = ev.get("task_id"), str(ev.get("frames", ""))
            self.t_first_launch = self.t_first_launch or time.time()
        elif kind == "chunk-retry" and rec is not None:
            rec.finish(ev, "retrying")
            rec.reason = ev.get("reason")
            self._say(f"retrying {len(ev.get('redo') or [])} frame(s) of chunk {rec.index} "
                      f"(retry {ev.get('attempts')} of {self.o.retries}): {rec.reason}")
        elif kind == "frame" and rec is not None:
            rec.frames_done = max(rec.frames_done, int(ev.get("done", 0)))
            self.t_last_frame = time.time()
            frame = ev.get("frame")
            if isinstance(frame, int):
                self.done_frames.add(frame)
            else:
                key = (rec.index, rec.attempts)
                self.unresolved[key] = max(self.unresolved.get(key, 0), int(ev.get("done", 0)))
            if self.progress is not None:
                self.progress.set_done(len(self.done_frames) + sum(self.unresolved.values()))
            if os.environ.get("STMPO_INJECT_FAULT") == "orchestrator-crash":
                raise RuntimeError("injected orchestrator fault (STMPO_INJECT_FAULT)")
        elif kind == "chunk-done" and rec is not None:
            rec.finish(ev, "done")
        elif kind == "chunk-shrink" and rec is not None:
            rec.end = int(ev["end"])
            rec.stolen_by.append(int(ev["thief"]))
        elif kind == "chunk-idle" and rec is not None:
            rec.status = str(ev.get("status", "idle"))
        elif kind == "chunk-failed" and rec is not None:
            rec.finish(ev, "failed")
            rec.reason, rec.tail = ev.get("reason"), list(ev.get("tail") or [])
            self.failures.append(rec)
            self._say(f"FAILED {rec.describe()}")
            if self.o.fail_fast:
                self._stop(rec.describe(), ExitCode.RENDER_FAILED)
        elif kind == "abort" and self.o.fail_fast:
            self._stop(str(ev.get("reason") or "a chunk failed"), ExitCode.RENDER_FAILED)
        elif kind == "warning":
            text = one_line(str(ev.get("text", "")))
            if text not in self.warnings:
                self.warnings.append(text)
                self._say(f"WARNING (slot {ev.get('slot')}): {text}")
        elif kind == "finalized":
            self.finalized = True

    def _slot_died(self, slot: Slot) -> None:
        """A slot died: replace it on the same CPUs; re-enqueue its chunk's missing frames."""
        assert self.pool is not None and self.client is not None
        code = slot.proc.returncode
        self.slot_deaths += 1
        rec = next((c for c in self.chunks.values()
                    if c.status == "running" and c.slot == slot.index), None)
        what = f"slot {slot.index} (pid {slot.pid}) died (exit code {code})"
        self.pool.replace(slot.index)
        if rec is None:
            self._say(f"{what} while idle; replaced")
            return
        attempts = int(self.client.hincrby(keys.sched_key(self.run_id, "attempts"),
                                           str(rec.index), 1))
        rec.reason = f"{what} while rendering chunk {rec.index}"
        if attempts > self.o.retries:
            rec.status = "failed"
            self.failures.append(rec)
            self._stop(rec.describe() + f" (after {self.o.retries} retries)",
                       ExitCode.RENDER_FAILED)
            return
        frames = parse_frames(rec.frames) if rec.frames else list(range(rec.start, rec.end + 1))
        redo = [f for f in frames if f not in self.done_frames]
        redo += [f for f in frames if f in self.done_frames and f in set(
            missing_frames(self.prep.pattern, [f]))]
        suspect = missing_frames_suspect(self.prep.pattern, frames, self.done_frames)
        for f in suspect:  # written by a dying renderer: maybe partial
            with contextlib.suppress(OSError):
                os.unlink(self.prep.pattern.path_for(f))
        rec.suspect = sorted(set(rec.suspect) | set(suspect))
        redo = sorted(set(redo))
        self.client.hset(keys.sched_key(self.run_id, "retry"), str(rec.index), json.dumps(redo))
        if rec.task_id is None or not requeue_unacked(self.client, self.run_id, self.queue,
                                                      rec.task_id):
            self._stop(f"{rec.reason}: its message could not be re-enqueued",
                       ExitCode.RENDER_FAILED)
            return
        rec.status = "retrying"
        rec.attempts = attempts
        self._say(f"{rec.reason}; replaced it and re-enqueued {len(redo)} frame(s) "
                  f"(retry {attempts} of {self.o.retries})")

    def _stop(self, reason: str, code: ExitCode) -> None:
        """First failure or cancel: abort flag, purge, kill every slot tree."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self.exit_code = code
        if self.client is not None:
            with contextlib.suppress(redis.RedisError):
                self.client.set(keys.abort_key(self.run_id), reason, nx=True)
        if self.pool is not None:
            self.pool.kill_all()
        if self.run_queue is not None:
            self.run_queue.purge()
            self.run_queue.announce_revoked(
                c.task_id for c in self.chunks.values() if c.task_id and not c.terminal)

    def _broker_lost(self) -> None:
        which = "embedded Redis" if self.embedded is not None else (
            f"broker {mask_url(self.broker.url)}" if self.broker else "broker")
        self.stop_reason = f"{which} was lost mid-run"
        self.exit_code = ExitCode.ENVIRONMENT
        if self.pool is not None:
            self.pool.kill_all()

    # -- end ----------------------------------------------------------------------
    def _teardown(self) -> None:
        if self.flower is not None:  # first: it must not re-create keys of the run
            self.flower.stop()
        if self.pool is not None:
            self.pool.kill_all()
        if self.client is not None:
            if (self.o.history and self.plan.schedule == "adaptive" and not self.failures
                    and self.exit_code == ExitCode.OK and self.cancel_signal is None):
                record_run(self.client, self.run_id, self.prep.project, self.o,
                           farm=self.embedded is None)
            with contextlib.suppress(Exception):
                self.pubsub.close()
            if self.embedded is None:  # an embedded Redis is stopped with all it holds
                delete_run_keys(self.client, self.run_id)
            with contextlib.suppress(Exception):
                self.client.close()
        if self.embedded is not None:
            self.embedded.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._restore_signals()

    def _finish(self) -> ExitCode:
        pattern = self.prep.pattern
        missing = (missing_frames(pattern, self.prep.frames) if pattern.is_sequence
                   else ([] if os.path.exists(pattern.raw) and os.path.getsize(pattern.raw) > 0
                         else list(self.prep.frames)))
        if self.exit_code == ExitCode.OK and missing:
            self.exit_code = ExitCode.RENDER_FAILED
            self.stop_reason = (f"{len(missing)} requested frame(s) are not on disk "
                                f"(first: {pattern.path_for(missing[0])})")
        if self.exit_code == ExitCode.OK and self.failures:
            self.exit_code = ExitCode.RENDER_FAILED
        if self.progress is not None:
            self.progress.close()
        summary_line = self._summary_line(missing)
        self.funnel.line(f"stmpo: {summary_line}")
        if self.exit_code != ExitCode.OK and not self._bar_mode():
            self.funnel.directive("openjd_fail", summary_line)
        if self.o.summary:
            write_summary(self, missing)
        if self._run_log is not None:
            with contextlib.suppress(Exception):
                self._run_log.close()
        return self.exit_code

    def _summary_line(self, missing: list[int]) -> str:
        n = len(self.prep.frames)
        if self.exit_code == ExitCode.OK:
            return (f"OK: {n - len(missing)} of {n} frame(s) on disk "
                    f"({len(self.prep.skipped)} skipped) in {time.time() - self.t_start:.1f} s")
        if len(self.failures) > 1 and not self.o.fail_fast:
            parts = "; ".join(f.describe(tail=False) for f in self.failures)
            return f"FAILED: {len(self.failures)} chunk(s) failed: {parts}"
        return f"FAILED: {self.stop_reason or 'render failed'}"
