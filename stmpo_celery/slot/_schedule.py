"""Which frames a chunk task renders, decided when a slot picks the task up.

Planned schedules (static, fixed, guided) read chunk ``index`` from the run spec.
The adaptive schedule adds spare tasks to the chord: a slot that picks one steals
the tail of a running chunk (see :mod:`stmpo_celery.plan._steal`) through one atomic
compare-and-set in Redis, or waits while work is running and returns idle at the end.
A retry (a crash, a stall, a dead slot) renders only the frames recorded for it.

The hashes are :class:`stmpo_celery.broker.keys.Sched`; the steal's compare-and-set is
:data:`stmpo_celery.broker.keys.STEAL_CAS`. Runs in the slots (claims, steals, progress)
and in the orchestrator (registering the plan, re-queueing a dead slot's chunk).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import redis

from ..broker import events, keys
from ..broker.keys import Sched
from ..config import defaults
from ..plan import (
    CostModel,
    OutputPattern,
    Running,
    Steal,
    learn_launch,
    learn_margin,
    plan_steal,
)
from ._chunk import SlotContext


class SchedState(str, Enum):
    """A chunk's state in the shared schedule (``info``'s ``state``)."""

    PENDING = "pending"
    """Planned; no slot has claimed it yet."""
    RUNNING = "running"
    """Claimed and rendering: its tail may be stolen."""
    RETRY = "retry"
    """Rendering a retry's exact frames: never split."""
    FINISHED = "finished"
    """Its task ended (done or failed)."""


ACTIVE = (SchedState.PENDING, SchedState.RUNNING, SchedState.RETRY)


def _k(ctx_or_run: SlotContext | str, name: Sched) -> str:
    run = ctx_or_run if isinstance(ctx_or_run, str) else ctx_or_run.spec.run_id
    return keys.sched_key(run, name)


def register_plan(client: redis.Redis, run_id: str, chunks: Sequence[tuple[int, int]]) -> None:
    """Adaptive runs: every initial chunk is known (pending) before any slot starts."""
    pipe = client.pipeline()
    for i, (s, e) in enumerate(chunks):
        pipe.hset(_k(run_id, Sched.END), str(i), e)
        pipe.hset(_k(run_id, Sched.DONE), str(i), s - 1)
        pipe.hset(_k(run_id, Sched.INFO), str(i), json.dumps({"s": s, "state": SchedState.PENDING}))
    pipe.execute()


def set_prior(client: redis.Redis, run_id: str, costs: dict[int, float]) -> None:
    """A previous render's frame costs, for the thieves' cost model."""
    if costs:
        client.hset(_k(run_id, Sched.PRIOR), mapping={str(f): c for f, c in costs.items()})


def observed(client: redis.Redis, run_id: str) -> tuple[dict[int, float], list[tuple[int, float]]]:
    """What this run measured: frame costs, and (first frame, latency) per launch."""
    pipe = client.pipeline()
    for name in (Sched.COST, Sched.LAUNCH, Sched.INFO):
        pipe.hgetall(_k(run_id, name))
    costs, launches, infos = pipe.execute()
    starts = {i: int(json.loads(raw).get("s", 0)) for i, raw in infos.items()}
    return ({int(f): float(c) for f, c in costs.items()},
            [(starts[i], float(v)) for i, v in launches.items() if i in starts])


def spare_tasks(n_slots: int, frames: int) -> int:
    """Spare chord tasks for steals: one waiting per idle slot plus a few steals each."""
    return max(0, min(4 * n_slots, frames - n_slots))


def claim(ctx: SlotContext, index: int) -> tuple[list[int], int] | None:
    """The frames for chunk task ``index`` and its attempt number (0 = first)."""
    redo = ctx.client.hget(_k(ctx, Sched.RETRY), str(index))
    if redo:
        attempts = int(ctx.client.hget(_k(ctx, Sched.ATTEMPTS), str(index)) or 0)
        if ctx.spec.schedule == "adaptive":  # active, but a retry is never split
            info = {"s": 0, "state": SchedState.RETRY}
            ctx.client.hset(_k(ctx, Sched.INFO), str(index), json.dumps(info))
        if not OutputPattern(ctx.spec.target.output).is_sequence:
            # a movie is one file, rewritten from its first frame: never just the rest
            return list(ctx.spec.frames), attempts
        return [int(f) for f in json.loads(redo)], attempts
    chunks = ctx.spec.chunks
    if 0 <= index < len(chunks):
        start, end = (int(x) for x in chunks[index])
        if ctx.spec.schedule == "adaptive":
            _mark_running(ctx, index, start)
        wanted = set(range(start, end + 1))
        frames = [f for f in ctx.spec.frames if f in wanted] or sorted(wanted)
        return frames, 0
    if ctx.spec.schedule != "adaptive":
        return None
    steal = _steal_or_wait(ctx, index)
    if steal is None:
        return None
    return list(range(steal.start, steal.end + 1)), 0


def _mark_running(ctx: SlotContext, index: int, start: int) -> None:
    info = {"s": start, "state": SchedState.RUNNING, "t0": time.time(), "tf": None,
            "slot": ctx.slot}
    ctx.client.hset(_k(ctx, Sched.INFO), str(index), json.dumps(info))


@dataclass
class _Snapshot:
    running: list[Running]
    active: bool
    costs: dict[int, float]
    launches: list[tuple[int, float]]  #: (first frame, seconds to it) per aerender launch
    idle: int  #: thieves looking for work now, this one included
    prior: dict[int, float]


def _snapshot(ctx: SlotContext, now: float) -> _Snapshot:
    pipe = ctx.client.pipeline()
    pipe.hset(_k(ctx, Sched.WAIT), str(ctx.slot), now)
    for name in (Sched.END, Sched.DONE, Sched.INFO, Sched.COST, Sched.LAUNCH, Sched.WAIT,
                 Sched.PRIOR):
        pipe.hgetall(_k(ctx, name))
    _, ends, dones, infos, costs, launches, waits, prior = pipe.execute()
    running: list[Running] = []
    active = False
    starts: dict[str, int] = {}
    for idx, raw in infos.items():
        info = json.loads(raw)
        starts[idx] = int(info.get("s", 0))
        if info.get("state") in ACTIVE:
            active = True
        if info.get("state") != SchedState.RUNNING or idx not in ends:
            continue
        running.append(Running(index=int(idx), start=int(info["s"]), end=int(ends[idx]),
                               done=int(dones.get(idx, int(info["s"]) - 1)),
                               started_at=float(info["t0"]),
                               frame_started_at=info.get("tf")))
    idle = sum(1 for t in waits.values() if now - float(t) < defaults.STEAL_WAIT_FRESH_S)
    return _Snapshot(running, active, {int(f): float(c) for f, c in costs.items()},
                     [(starts[i], float(v)) for i, v in launches.items() if i in starts],
                     max(1, idle), {int(f): float(c) for f, c in prior.items()})


def _steal_or_wait(ctx: SlotContext, index: int) -> Steal | None:
    try:
        return _look_for_steal(ctx, index)
    finally:
        with contextlib.suppress(redis.RedisError):
            ctx.client.hdel(_k(ctx, Sched.WAIT), str(ctx.slot))


def _look_for_steal(ctx: SlotContext, index: int) -> Steal | None:
    cas = ctx.client.register_script(keys.STEAL_CAS)
    while not ctx.aborted():
        now = time.time()
        snap = _snapshot(ctx, now)
        if not snap.active:
            return None
        default = statistics.median(snap.costs.values()) if snap.costs else 1.0
        model = CostModel(snap.costs, default, reach=ctx.spec.steal_reach, prior=snap.prior)
        launch = learn_launch(snap.launches, model, ctx.spec.launch_cost)
        plan = plan_steal(snap.running, model, launch, now,
                          margin=learn_margin(snap.launches, model, ctx.spec.steal_margin),
                          min_frames=ctx.spec.min_steal, idle=snap.idle)
        if plan is not None:
            victim = next(r for r in snap.running if r.index == plan.victim)
            info = {"s": plan.start, "state": SchedState.RUNNING, "t0": now, "tf": None,
                    "slot": ctx.slot, "from": plan.victim}
            ok = cas(keys=[_k(ctx, Sched.END), _k(ctx, Sched.DONE), _k(ctx, Sched.INFO)],
                     args=[plan.victim, victim.end, plan.new_end, index, plan.end,
                           json.dumps(info)])
            if ok:
                ctx.client.hset(_k(ctx, Sched.DONE), str(index), plan.start - 1)
                ctx.publish(events.ChunkShrink(index=plan.victim, end=plan.new_end,
                                               thief=index, gain=round(plan.gain, 3)))
                return plan
            continue  # the victim moved on: look again at once
        time.sleep(defaults.STEAL_WAIT_STEP_S)
    return None


def on_frame(ctx: SlotContext, index: int, done: int, costs: Mapping[int, float],
             first_latency: float | None) -> int | None:
    """Record progress of chunk ``index`` (every frame up to ``done`` rendered, the
    ``costs`` of frames that finished since the last call); return its current end (None:
    not stealable)."""
    if ctx.spec.schedule != "adaptive":
        return None
    pipe = ctx.client.pipeline()
    pipe.hset(_k(ctx, Sched.DONE), str(index), done)
    if costs:
        pipe.hset(_k(ctx, Sched.COST), mapping={str(f): round(c, 4) for f, c in costs.items()})
    if first_latency is not None:
        pipe.hset(_k(ctx, Sched.LAUNCH), str(index), round(first_latency, 4))
    pipe.hget(_k(ctx, Sched.END), str(index))
    pipe.hget(_k(ctx, Sched.INFO), str(index))
    *_, end, raw = pipe.execute()
    if raw:
        info: dict[str, Any] = json.loads(raw)
        if info.get("state") == SchedState.RETRY:  # a retry renders exactly its frames: never cut
            return None
        info["tf"] = time.time()
        ctx.client.hset(_k(ctx, Sched.INFO), str(index), json.dumps(info))
    return int(end) if end is not None else None


def close_range(client: redis.Redis, run_id: str, index: int) -> int | None:
    """Stop steals from chunk ``index`` and return the last frame it owns (None: no
    recorded end, i.e. not an adaptive chunk). Called when a chunk's aerender has
    stopped, by its slot, or by the orchestrator when the slot died: the frames that
    chunk must account for never change after this."""
    script = client.register_script(keys.CLOSE_RANGE)
    end = script(keys=[_k(run_id, Sched.END), _k(run_id, Sched.DONE)], args=[str(index)])
    return int(end) if end is not None else None


def finish(ctx: SlotContext, index: int) -> None:
    if ctx.spec.schedule == "adaptive":
        mark_finished(ctx.client, ctx.spec.run_id, index)


def mark_finished(client: redis.Redis, run_id: str, index: int) -> None:
    """Chunk ``index``'s task has ended (done or failed): thieves waiting for work no
    longer count it as running. Called by its slot, or by the orchestrator for a chunk
    whose slot died with its retries used up."""
    raw = client.hget(_k(run_id, Sched.INFO), str(index))
    if raw:
        info = json.loads(raw)
        info["state"] = SchedState.FINISHED
        client.hset(_k(run_id, Sched.INFO), str(index), json.dumps(info))


def mark_overwritten(ctx: SlotContext, index: int, frames: Sequence[int]) -> None:
    """Chunk ``index``'s renderer, stopped at a steal's cut, wrote ``frames`` past it."""
    if frames and ctx.spec.schedule == "adaptive":
        with contextlib.suppress(redis.RedisError):
            ctx.client.hset(_k(ctx, Sched.OVERWRITTEN), mapping={str(f): index for f in frames})


def take_overwritten(ctx: SlotContext, frames: Sequence[int]) -> bool:
    """Whether every one of ``frames`` (a chunk's frames to render again) was written over
    by another chunk's stopped renderer — then they are no longer marked, so the same
    frames are forgiven once."""
    if not frames or ctx.spec.schedule != "adaptive":
        return False
    key = _k(ctx, Sched.OVERWRITTEN)
    names = [str(f) for f in frames]
    try:
        if None in ctx.client.hmget(key, names):
            return False
        return bool(ctx.client.hdel(key, *names) == len(names))
    except redis.RedisError:
        return False


def next_attempt(client: redis.Redis, run_id: str, index: int) -> int:
    """Count one more retry of chunk ``index``; returns the retries used so far."""
    return int(client.hincrby(_k(run_id, Sched.ATTEMPTS), str(index), 1))


def set_retry(client: redis.Redis, run_id: str, index: int, frames: list[int]) -> None:
    """Chunk ``index``'s next attempt renders exactly ``frames``."""
    client.hset(_k(run_id, Sched.RETRY), str(index), json.dumps(frames))
