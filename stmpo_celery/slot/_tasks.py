"""The three Celery tasks of a run, registered inside each slot.

``render_chunk`` claims its frames and renders them; ``on_chunk_error`` is the
chord's error callback (it runs inline in the failing slot within milliseconds and
raises the run's abort flag); ``finalize`` is the chord body.

A crashed or stalled chunk is retried through Celery's own retry (same task id, so
the chord still counts it once), on any slot, with only its missing frames.
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery, Task

from ..broker import _schedule as schedule
from ..broker import events, keys
from ..broker._app import FINALIZE, ON_CHUNK_ERROR, RENDER_CHUNK
from ._chunk import ChunkFailed, SlotContext, run_chunk
from ._monitor import SlotMonitor


def register(app: Celery, ctx: SlotContext) -> None:
    spec = ctx.spec
    ctx.frame_hook = lambda index, done, frame, cost, first: schedule.on_frame(
        ctx, index, done, frame, cost, first)

    # Celery's own task events wait in a busy solo slot until the chunk ends: the slot
    # monitor sends this task's events live instead (see slotmon).
    @app.task(name=RENDER_CHUNK, bind=True, send_events=False)
    def render_chunk(self: Task, run_id: str, index: int) -> dict[str, Any]:
        if run_id != spec.run_id:  # never render another run's message
            raise ChunkFailed(f"task for run {run_id} reached a slot of run {spec.run_id}")
        if ctx.aborted():
            ctx.publish("chunk-idle", index=index, status="skipped")
            return {"index": index, "status": "skipped"}
        claim = schedule.claim(ctx, index)
        if claim is None:
            ctx.publish("chunk-idle", index=index, status="idle")
            return {"index": index, "status": "idle"}
        frames, attempt = claim
        try:
            result = run_chunk(ctx, index, frames, attempt, task_id=self.request.id)
        except ChunkFailed as exc:
            schedule.finish(ctx, index)
            info = exc.info
            if exc.retryable and not ctx.aborted() and exc.redo:
                used = schedule.next_attempt(ctx, index)
                if used <= spec.retries:
                    schedule.set_retry(ctx, index, exc.redo)
                    ctx.publish("chunk-retry", **info, attempts=used, redo=exc.redo)
                    raise self.retry(countdown=0, max_retries=None) from None
                info["reason"] = f"{info.get('reason')} (after {spec.retries} retr" + (
                    "y)" if spec.retries == 1 else "ies)")
            if not info:  # stopped before its launch
                info = {"index": index, "slot": ctx.slot, "reason": str(exc)}
            if ctx.aborted() and (not info.get("log") or str(info.get("reason", "")).startswith(
                    "stopped:")):  # stopped by the run's stop (fail-fast, cancel): not a cause
                info["stopped"] = True
            ctx.publish("chunk-failed", **info)
            raise
        schedule.finish(ctx, index)
        result["status"] = "done"
        ctx.publish("chunk-done", **result)
        return result

    SlotMonitor(app, ctx).install(RENDER_CHUNK)

    # Celery's own events for these two would wait in the busy slot and reach Flower
    # late or never (a PENDING finalize row forever): they are not shown at all.
    @app.task(name=ON_CHUNK_ERROR, send_events=False)
    def on_chunk_error(request: Any, exc: Any, traceback: Any) -> None:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if spec.fail_fast:
            try:
                first = ctx.client.set(keys.abort_key(spec.run_id), reason, nx=True)
            except redis.RedisError:
                first = False
            if first:  # idempotent: fires for the failing header task and again at chord end
                events.publish(ctx.client, spec.run_id, "abort", slot=ctx.slot, reason=reason)

    @app.task(name=FINALIZE, send_events=False)
    def finalize(results: list[dict[str, Any]]) -> dict[str, Any]:
        done = [r for r in results if isinstance(r, dict) and r.get("status") == "done"]
        summary = {"chunks": len(done),
                   "frames": sum(int(r.get("frames_rendered", 0)) for r in done)}
        ctx.publish("finalized", **summary)
        return summary
