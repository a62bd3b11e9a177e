"""The three Celery tasks of a run, registered inside each slot.

``render_chunk`` claims its frames and renders them; ``on_chunk_error`` is the
chord's error callback (it runs inline in the failing slot within milliseconds and
raises the run's abort flag); ``finalize`` is the chord body.

A crashed or stalled chunk is retried through Celery's own retry (same task id, so
the chord still counts it once), on any slot, with only its missing frames.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import redis
from celery import Celery, Task
from celery.signals import worker_ready

from ..broker import FINALIZE, ON_CHUNK_ERROR, RENDER_CHUNK, events, keys
from . import _schedule as schedule
from ._chunk import ChunkError, SlotContext, run_chunk
from ._monitor import SlotMonitor


def register(app: Celery, ctx: SlotContext) -> None:
    spec = ctx.spec
    ctx.frame_hook = lambda index, done, costs, first: schedule.on_frame(
        ctx, index, done, costs, first)
    if spec.schedule == "adaptive":
        ctx.close_range = lambda index: schedule.close_range(ctx.client, spec.run_id, index)

    # Celery's own task events wait in a busy solo slot until the chunk ends: the slot
    # monitor sends this task's events live instead (see slotmon).
    @app.task(name=RENDER_CHUNK, bind=True, send_events=False)
    def render_chunk(self: Task, run_id: str, index: int) -> dict[str, Any]:
        if run_id != spec.run_id:  # never render another run's message
            raise ChunkError(f"task for run {run_id} reached a slot of run {spec.run_id}")
        if ctx.aborted():
            ctx.publish(events.ChunkIdle(index=index, status="skipped"))
            return {"index": index, "status": "skipped"}
        claim = schedule.claim(ctx, index)
        if claim is None:
            ctx.publish(events.ChunkIdle(index=index, status="idle"))
            return {"index": index, "status": "idle"}
        frames, attempt = claim
        try:
            try:
                result = run_chunk(ctx, index, frames, attempt, task_id=self.request.id)
            except (OSError, redis.RedisError) as exc:  # never leave the run waiting on us
                what = (events.BROKER_FAILED if isinstance(exc, redis.RedisError)
                        else "slot error")
                reason = f"{what}: {type(exc).__name__}: {exc}".splitlines()[0]
                raise ChunkError(f"chunk {index} frames {frames[0]}-{frames[-1]} on slot "
                                 f"{ctx.slot}: {reason}", outcome=events.ChunkOutcome(
                                     index=index, slot=ctx.slot, start=frames[0],
                                     end=frames[-1], reason=reason, missing=frames,
                                     attempt=attempt)) from None
        except ChunkError as exc:
            outcome = exc.outcome or events.ChunkOutcome(index=index, reason=str(exc))
            schedule.mark_overwritten(ctx, index, outcome.overwrote)  # first: a thief may
            schedule.finish(ctx, index)  # be checking its frames right now
            if exc.retryable and not ctx.aborted() and exc.redo:
                # frames a stopped renderer wrote over after this one finished them are no
                # fault of this chunk: rendered again, not counted against --retries
                free = schedule.take_overwritten(ctx, exc.redo)
                used = (attempt if free else
                        schedule.next_attempt(ctx.client, spec.run_id, index))
                if free or used <= spec.retries:
                    schedule.set_retry(ctx.client, spec.run_id, index, exc.redo)
                    ctx.publish(outcome.becomes(events.ChunkRetry, attempts=used,
                                                redo=exc.redo, overwritten=free))
                    raise self.retry(countdown=0, max_retries=None) from None
                outcome.reason = f"{outcome.reason} (after {spec.retries} retr" + (
                    "y)" if spec.retries == 1 else "ies)")
            if ctx.aborted() and (not outcome.log or str(outcome.reason or "").startswith(
                    "stopped:")):  # stopped by the run's stop (fail-fast, cancel): not a cause
                outcome.stopped = True
            ctx.publish(outcome.becomes(events.ChunkFailed))
            raise
        schedule.mark_overwritten(ctx, index, result.overwrote)
        schedule.finish(ctx, index)
        ctx.publish(result.becomes(events.ChunkDone))
        return {**asdict(result), "status": "done"}

    SlotMonitor(app, ctx).install(RENDER_CHUNK)

    @worker_ready.connect(weak=False)
    def ready(**_kw: Any) -> None:  # a slot that dies before this could not start
        try:
            ctx.client.hset(keys.state_key(spec.run_id),
                            keys.SLOT_READY_FIELD.format(ctx.slot), os.getpid())
        except redis.RedisError:
            pass  # the event still says it, once the orchestrator listens
        ctx.publish(events.SlotReady(pid=os.getpid()))

    # Celery's own events for these two would wait in the busy slot and reach Flower
    # late or never (a PENDING finalize row forever): they are not shown at all.
    @app.task(name=ON_CHUNK_ERROR, send_events=False)
    def on_chunk_error(request: Any, exc: Any, traceback: Any) -> None:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if events.chord_end_failed(reason):
            # after every chunk has reported: told, but no abort flag (a late re-render
            # of frames overwritten after a cut may still follow, and must not be skipped)
            ctx.publish(events.Abort(slot=ctx.slot, reason=reason))
            return
        if spec.fail_fast:
            try:
                first = ctx.client.set(keys.abort_key(spec.run_id), reason, nx=True)
            except redis.RedisError:
                first = False
            if first:  # idempotent: fires for the failing header task and again at chord end
                events.publish(ctx.client, spec.run_id, events.Abort(slot=ctx.slot, reason=reason))

    @app.task(name=FINALIZE, send_events=False)
    def finalize(results: list[dict[str, Any]]) -> dict[str, Any]:
        done = [r for r in results if isinstance(r, dict) and r.get("status") == "done"]
        summary = {"chunks": len(done),
                   "frames": sum(int(r.get("frames_rendered", 0)) for r in done)}
        ctx.publish(events.Finalized(chunks=summary["chunks"], frames=summary["frames"]))
        return summary
