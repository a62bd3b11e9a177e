"""Which frames a chunk task renders, decided when a slot picks the task up.

A retry (a crash, a stall, a dead slot) renders only the frames recorded for it in
``stmpo:<run>:x:sched:retry`` — the chunk's missing and suspect frames.
"""

from __future__ import annotations

import json

from . import keys
from .chunk import SlotContext


def claim(ctx: SlotContext, index: int) -> tuple[list[int], int] | None:
    """The frames for chunk task ``index`` and its attempt number (0 = first)."""
    run = ctx.spec.run_id
    redo = ctx.client.hget(keys.sched_key(run, "retry"), str(index))
    if redo:
        attempts = int(ctx.client.hget(keys.sched_key(run, "attempts"), str(index)) or 0)
        return [int(f) for f in json.loads(redo)], attempts
    chunks = ctx.spec.chunks
    if 0 <= index < len(chunks):
        start, end = chunks[index]
        frames = [f for f in ctx.spec.frames if start <= f <= end] or list(
            range(int(start), int(end) + 1))
        return frames, 0
    return None


def next_attempt(ctx: SlotContext, index: int) -> int:
    """Count one more retry of chunk ``index``; returns the retries used so far."""
    return int(ctx.client.hincrby(keys.sched_key(ctx.spec.run_id, "attempts"), str(index), 1))


def set_retry(ctx: SlotContext, index: int, frames: list[int]) -> None:
    ctx.client.hset(keys.sched_key(ctx.spec.run_id, "retry"), str(index), json.dumps(frames))
