"""A slot's live state for Flower and ``stmpo status``, sent while a chunk renders.

A solo-pool slot cannot send Celery's own task events while a chunk runs: the worker
buffers them until the task returns, so Flower would show a chunk that renders for
minutes as PENDING, and a slot killed by a fail-fast stop would never report at all.
``render_chunk`` therefore runs with ``send_events=False`` and :class:`SlotMonitor`
sends its lifecycle itself, live, from one thread of the slot, driven by the same
events the slot publishes to the orchestrator (``SlotContext.observer``):

=================  ==============================================================
task-received      the slot took the chunk's message (claim and stagger follow)
task-started       aerender launches for the chunk's frames
task-progress      one per rendered frame; a custom event, so Flower shows the state
                   ``PROGRESS`` and ``flower_events_total{type="task-progress"}``
                   counts frames (frames/s in Prometheus)
task-succeeded     frames rendered and runtime
task-failed        exception = the one-line reason; traceback and result = the reason
                   and the aerender log tail. Sent *before* the orchestrator hears of
                   the failure, so it reaches Flower even if the stop kills this slot.
task-retried       the chunk's missing frames went back to the queue
worker-heartbeat   every 2 s while the slot is busy (the worker's own heart is blocked
                   by the running chunk too, and Flower calls a worker offline after
                   two missed beats)
=================  ==============================================================

Every task event carries a readable ``result`` line (``f41-60 (chunk 2): 12/20 frames,
2.10 f/s, ETA 4.0 s``) because ``result`` is what Flower shows for a task, in its tasks
table and on the task page, for any Flower pointed at the broker. Extra fields
(``chunk``, ``frames``, ``done``, ``total``, ``fps``, ``eta_s``) ride along for other
event consumers.

The same thread writes the slot's JSON record into the run's state hash
(:func:`keys.state_key`, field ``slot<K>``) and counts rendered frames in its
``frames_done`` field; ``stmpo status`` reads both.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, Task
from celery.signals import task_postrun, task_prerun
from celery.utils.saferepr import saferepr

from ..broker import RENDER_CHUNK, events, keys, revoke_events
from ..config import defaults
from ..host import os_label
from ..plan import parse_runs
from ..text import duration
from ._chunk import SlotContext
from ._fence import stop_if_orphaned


def task_args(project: str, comp: str | None, rqindex: int | None, frames: str) -> str:
    """What Flower shows as a task's arguments: the render, not ids."""
    what = comp if comp is not None else f"render queue item {rqindex}"
    return saferepr((os.path.basename(project), what, frames))


@dataclass
class _Chunk:
    task_id: str
    t0: float
    index: int | None = None
    label: str = ""
    total: int = 0
    done: int = 0
    t_launch: float | None = None
    t_first: float | None = None
    t_last: float | None = None
    started: bool = False
    terminal: bool = False
    retries: int = 0
    root_id: str | None = None
    frames: str = ""
    warnings: list[str] = field(default_factory=list)

    def fps(self) -> float | None:
        if self.done >= 2 and self.t_first is not None and self.t_last is not None and (
                self.t_last > self.t_first):
            return (self.done - 1) / (self.t_last - self.t_first)
        return None

    def eta(self) -> float | None:
        rate = self.fps()
        return (self.total - self.done) / rate if rate else None

    def line(self) -> str:
        if self.t_launch is None:
            return f"chunk {self.index}: taken, waiting to launch"
        if self.done == 0:
            return f"{self.label}: 0/{self.total} frames, launching After Effects"
        rate = self.fps()
        speed = f", {rate:.2f} f/s, ETA {duration(self.eta())}" if rate else ""
        return f"{self.label}: {self.done}/{self.total} frames{speed}"


class SlotMonitor:
    """Sends a slot's task events and state record; see the module docstring."""

    def __init__(self, app: Celery, ctx: SlotContext) -> None:
        self.app = app
        self.ctx = ctx
        self.node = keys.node_name(ctx.slot, ctx.spec.run_id, ctx.spec.host)
        self.state_key = keys.state_key(ctx.spec.run_id)
        self.field = keys.SLOT_STATE_FIELD.format(ctx.slot)
        self.cur: _Chunk | None = None
        self.processed = 0
        self.last_state = "idle"
        self.last_extra: dict[str, Any] = {}
        self.lock = threading.RLock()
        self.q: queue.Queue[tuple[str, dict[str, Any], threading.Event | None]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="stmpo-slotmon", daemon=True)
        self.task_name = RENDER_CHUNK

    # -- wiring ---------------------------------------------------------------------
    def install(self, task_name: str = RENDER_CHUNK) -> None:
        """Follow the task ``task_name`` and every event the slot publishes."""
        self.task_name = task_name
        self.ctx.observer = self.observe
        self.ctx.current_task = self.current_task
        task_prerun.connect(self._prerun, weak=False)
        task_postrun.connect(self._postrun, weak=False)
        self._record(state="idle")
        self.thread.start()

    def current_task(self) -> str | None:
        with self.lock:
            return self.cur.task_id if self.cur is not None else None

    def _prerun(self, task_id: str | None = None, task: Task | None = None,
                **_kw: Any) -> None:
        if task is None or task.name != self.task_name:
            return
        with contextlib.suppress(Exception):
            req = task.request
            with self.lock:
                self.cur = _Chunk(task_id=str(task_id), t0=time.time())
                args = list(getattr(req, "args", None) or [])
                if len(args) > 1 and isinstance(args[1], int):
                    self.cur.index = args[1]
                self.cur.retries = int(getattr(req, "retries", 0) or 0)
                self.cur.root_id = getattr(req, "root_id", None)
            # Nothing goes to Flower yet: a spare task that finds no frames to claim
            # never appears there (task-received is sent with task-started).
            self._record(state="waiting")

    def _postrun(self, task_id: str | None = None, task: Task | None = None, retval: Any = None,
                 state: str | None = None, **_kw: Any) -> None:
        """Safety net: a task that ended without a chunk event still ends in Flower."""
        if task is None or task.name != self.task_name:
            return
        with contextlib.suppress(Exception):
            with self.lock:
                cur = self.cur
                self.cur = None
            # a task that never launched is shown only if it failed (never as SUCCESS)
            if cur is not None and not cur.terminal and (
                    cur.started or state not in ("SUCCESS", "RETRY")):
                runtime = time.time() - cur.t0
                if state == "SUCCESS":
                    self._ensure_started(cur)
                    self._send("task-succeeded", uuid=cur.task_id, result=saferepr(retval),
                               runtime=runtime)
                elif state == "RETRY":
                    self._send("task-retried", uuid=cur.task_id, exception=saferepr(retval),
                               traceback="")
                else:
                    self._ensure_started(cur)
                    self._send("task-failed", uuid=cur.task_id, exception=saferepr(retval),
                               traceback=str(retval), result=f"FAILED: {retval}")
            if self.last_state not in ("failed",):
                self._record(state="idle")

    # -- the slot's own events ----------------------------------------------------------
    def observe(self, event: events.Event) -> None:
        """Called by ``SlotContext.publish`` before each event goes to the orchestrator."""
        try:
            self._observe(event)
        except Exception:  # noqa: BLE001 - monitoring must never break a render
            pass

    def _observe(self, event: events.Event) -> None:
        with self.lock:
            cur = self.cur
        if cur is None:
            return
        if isinstance(event, events.SlotWarning):
            cur.warnings.append(event.text)
            return
        index = getattr(event, "index", None)
        if index is not None and cur.index is not None and index != cur.index:
            return  # e.g. chunk-shrink published by a thief about another slot's chunk
        handler = self._handlers.get(event.kind)
        if handler is not None:
            handler(cur, event)

    def _on_chunk_start(self, cur: _Chunk, ev: events.Event) -> None:
        assert isinstance(ev, events.ChunkStart)
        cur.index = ev.index
        frames = ev.frames or f"{ev.start}-{ev.end}"
        try:
            cur.total = len(parse_runs(frames))
        except Exception:  # noqa: BLE001
            cur.total = ev.end - ev.start + 1
        cur.frames = frames
        cur.label = f"f{frames} (chunk {cur.index}" + (
            f", retry {ev.attempt})" if ev.attempt else ")")
        cur.t_launch = time.time()
        self._ensure_started(cur)
        self._record(state="launching", cur=cur)

    def _on_frame(self, cur: _Chunk, ev: events.Event) -> None:
        assert isinstance(ev, events.Frame)
        now = time.time()
        cur.done = min(cur.done + 1, cur.total) if cur.total else cur.done + 1
        cur.t_first = cur.t_first or now
        cur.t_last = now
        self._send("task-progress", uuid=cur.task_id, result=cur.line(), chunk=cur.index,
                   frame=ev.frame, done=cur.done, total=cur.total,
                   fps=cur.fps(), eta_s=cur.eta())
        self._record(state="rendering", cur=cur, count_frame=True)

    def _on_chunk_done(self, cur: _Chunk, ev: events.Event) -> None:
        assert isinstance(ev, events.ChunkDone)
        cur.terminal = True
        n = ev.frames_rendered
        runtime = time.time() - cur.t0
        speed = f", {cur.fps():.2f} f/s" if cur.fps() else ""
        text = (f"{cur.label or 'chunk ' + str(cur.index)}: {n} frames in "
                f"{duration(runtime)}" + speed
                + (f" (launch {duration(ev.launch_s)})" if ev.launch_s else ""))
        if cur.warnings:
            text += f"; {len(cur.warnings)} warning(s): {cur.warnings[0]}"
        self._send("task-succeeded", uuid=cur.task_id, result=text, runtime=runtime,
                   chunk=cur.index, frames=ev.frames, frames_rendered=n)
        self.processed += 1
        self._record(state="idle", last=text)

    def _on_chunk_idle(self, cur: _Chunk, ev: events.Event) -> None:
        # a spare with no frames left, or a chunk skipped after a stop: it never ran,
        # so Flower never hears of it (no SUCCESS row for work that was not done)
        cur.terminal = True
        self._record(state="idle")

    def _on_chunk_ended_badly(self, cur: _Chunk, ev: events.Event) -> None:
        assert isinstance(ev, events.ChunkOutcome)
        cur.terminal = True
        self._failed(cur, ev)

    @property
    def _handlers(self) -> dict[events.Kind, Callable[[_Chunk, events.Event], None]]:
        return {
            events.Kind.CHUNK_START: self._on_chunk_start,
            events.Kind.FRAME: self._on_frame,
            events.Kind.CHUNK_DONE: self._on_chunk_done,
            events.Kind.CHUNK_IDLE: self._on_chunk_idle,
            events.Kind.CHUNK_RETRY: self._on_chunk_ended_badly,
            events.Kind.CHUNK_FAILED: self._on_chunk_ended_badly,
        }

    def _failed(self, cur: _Chunk, ev: events.ChunkOutcome) -> None:
        reason = ev.reason or "failed"
        where = f"{cur.label or 'chunk ' + str(cur.index)} on slot {self.ctx.slot}"
        tail = [str(line) for line in ev.tail]
        log = ev.log
        detail = reason + ("\n\naerender log tail" + (f" ({log})" if log else "") + ":\n"
                           + "\n".join("  " + line for line in tail) if tail else "")
        if ev.stopped:  # stopped by the run's stop: REVOKED with the reason, here
            if cur.started:  # (one that never launched was never shown)
                for kind_, fields in revoke_events(cur.task_id, f"STOPPED {where}: {reason}"):
                    self._send(kind_, **fields)
            self._record(state="idle", last=f"stopped: {reason}")
            return
        if isinstance(ev, events.ChunkRetry):
            redo = ev.redo
            self._send("task-retried", uuid=cur.task_id, exception=f"{where}: {reason}",
                       traceback=detail,
                       result=f"RETRY {where}: {len(redo)} frame(s) re-queued: {reason}")
            self._record(state="idle", last=f"retrying: {reason}")
            return
        self._ensure_started(cur)
        done = threading.Event()
        self._send("task-failed", uuid=cur.task_id, exception=f"{where}: {reason}",
                   traceback=detail, result=f"FAILED {where}: {detail}", _done=done)
        self._record(state="failed", cur=cur, reason=reason, tail=tail[-3:])
        # on the wire before the orchestrator stops everything
        done.wait(defaults.FAILURE_FLUSH_WAIT_S)

    def _ensure_started(self, cur: _Chunk) -> None:
        if cur.started:
            return
        cur.started = True
        target = self.ctx.spec.target
        self._send("task-received", uuid=cur.task_id, name=RENDER_CHUNK,
                   args=task_args(target.project, target.comp, target.rqindex,
                                  cur.frames or "?"),
                   kwargs=saferepr({"run": self.ctx.spec.run_id, "chunk": cur.index}),
                   retries=cur.retries, root_id=cur.root_id, result=cur.line())
        self._send("task-started", uuid=cur.task_id, result=cur.line(), chunk=cur.index,
                   total=cur.total)

    # -- the sender thread ---------------------------------------------------------------
    def _send(self, kind: str, _done: threading.Event | None = None, **fields: Any) -> None:
        with self.lock:
            if "uuid" not in fields and self.cur is not None:
                fields["uuid"] = self.cur.task_id
        self.q.put((kind, fields, _done))

    def _record(self, state: str, cur: _Chunk | None = None, count_frame: bool = False,
                **extra: Any) -> None:
        self.last_state = state
        self.last_extra = extra
        self.q.put(("stmpo-state", {"rec": self._rec(state, cur, extra),
                                    "count": count_frame}, None))

    def _rec(self, state: str, cur: _Chunk | None, extra: dict[str, Any]) -> dict[str, Any]:
        rec: dict[str, Any] = {"slot": self.ctx.slot, "node": self.node, "pid": os.getpid(),
                               "state": state, "chunks_done": self.processed,
                               "updated": time.time(), **extra}
        with self.lock:
            cur = cur or self.cur
        if cur is not None and state != "idle":
            rec.update(chunk=cur.index, label=cur.label or f"chunk {cur.index}",
                       done=cur.done, total=cur.total,
                       fps=cur.fps(), eta_s=cur.eta(), t0=cur.t0, task_id=cur.task_id)
        return rec

    def _run(self) -> None:
        conn: Any = None
        disp: Any = None
        next_beat = time.monotonic()
        while True:
            timeout = max(0.0, next_beat - time.monotonic())
            try:
                kind, fields, done = self.q.get(timeout=timeout)
            except queue.Empty:
                kind, fields, done = "", {}, None
            stop_if_orphaned()  # no event or state after the run's keys are deleted
            try:
                if kind == "stmpo-state":
                    self._write_state(fields["rec"], bool(fields["count"]))
                elif kind or (time.monotonic() >= next_beat and self.cur is not None):
                    if disp is None:
                        conn = self.app.connection_for_write()
                        disp = self.app.events.Dispatcher(conn, hostname=self.node,
                                                          enabled=True)
                    if not kind:  # a beat: also tells `stmpo status` the slot lives
                        kind, fields = "worker-heartbeat", self._heartbeat()
                        self._write_state(self._rec(self.last_state, None, self.last_extra),
                                          False)
                    disp.send(kind, retry=False, **fields)
            except Exception:  # noqa: BLE001 - drop the event, reconnect on the next one
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = disp = None
            finally:
                if done is not None:
                    done.set()
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + defaults.SLOT_HEARTBEAT_S

    def _heartbeat(self) -> dict[str, Any]:
        import celery

        load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
        return {"freq": defaults.SLOT_HEARTBEAT_S, "active": 1, "processed": self.processed,
                "loadavg": [round(x, 2) for x in load], "sw_ident": "py-celery",
                "sw_ver": celery.__version__, "sw_sys": os_label()}

    def _write_state(self, rec: dict[str, Any], count_frame: bool) -> None:
        pipe = self.ctx.client.pipeline(transaction=False)
        pipe.hset(self.state_key, self.field, json.dumps(rec))
        if count_frame:
            pipe.hincrby(self.state_key, keys.FRAMES_DONE_FIELD, 1)
        pipe.execute()
