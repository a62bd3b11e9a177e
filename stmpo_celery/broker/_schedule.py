"""Which frames a chunk task renders, decided when a slot picks the task up.

Planned schedules (static, fixed, guided) read chunk ``index`` from the run spec.
The adaptive schedule adds spare tasks to the chord: a slot that picks one steals
the tail of a running chunk (see :mod:`stmpo_celery.plan._steal`) through one atomic
compare-and-set in Redis, or waits while work is running and returns idle at the end.
A retry (a crash, a stall, a dead slot) renders only the frames recorded for it.

Keys (all under ``stmpo:<run>:x:sched:``): ``end`` and ``done`` (chunk -> frame),
``info`` (chunk -> JSON start, launch time, frame start, state), ``cost`` (frame ->
seconds), ``launch`` (chunk -> seconds to first frame), ``wait`` (slot -> when it last
looked for a steal: the thieves idle at once), ``prior`` (frame -> seconds from a
previous render of the comp, see :mod:`stmpo_celery.broker._history`), ``retry``,
``attempts``.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from ..plan._steal import CostModel, Running, Steal, learn_launch, learn_margin, plan_steal
from ..slot._chunk import SlotContext
from . import keys

_CAS = """
local e = redis.call('HGET', KEYS[1], ARGV[1])
local d = redis.call('HGET', KEYS[2], ARGV[1])
if (not e) or tonumber(e) ~= tonumber(ARGV[2]) then return 0 end
if d and tonumber(d) >= tonumber(ARGV[3]) - 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[4], ARGV[5])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[6])
return 1
"""

WAIT_STEP_S = 0.1
WAIT_FRESH_S = 1.0  #: a thief that has not looked for this long no longer counts as idle


def _k(ctx_or_run: SlotContext | str, name: str) -> str:
    run = ctx_or_run if isinstance(ctx_or_run, str) else ctx_or_run.spec.run_id
    return keys.sched_key(run, name)


def register_plan(client: redis.Redis, run_id: str, chunks: Sequence[tuple[int, int]]) -> None:
    """Adaptive runs: every initial chunk is known (pending) before any slot starts."""
    pipe = client.pipeline()
    for i, (s, e) in enumerate(chunks):
        pipe.hset(_k(run_id, "end"), str(i), e)
        pipe.hset(_k(run_id, "done"), str(i), s - 1)
        pipe.hset(_k(run_id, "info"), str(i), json.dumps({"s": s, "state": "pending"}))
    pipe.execute()


def set_prior(client: redis.Redis, run_id: str, costs: dict[int, float]) -> None:
    """A previous render's frame costs, for the thieves' cost model."""
    if costs:
        client.hset(_k(run_id, "prior"), mapping={str(f): c for f, c in costs.items()})


def observed(client: redis.Redis, run_id: str) -> tuple[dict[int, float], list[tuple[int, float]]]:
    """What this run measured: frame costs, and (first frame, latency) per launch."""
    pipe = client.pipeline()
    for name in ("cost", "launch", "info"):
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
    redo = ctx.client.hget(_k(ctx, "retry"), str(index))
    if redo:
        attempts = int(ctx.client.hget(_k(ctx, "attempts"), str(index)) or 0)
        if ctx.spec.schedule == "adaptive":  # active, but a retry is never split
            ctx.client.hset(_k(ctx, "info"), str(index), json.dumps({"s": 0, "state": "retry"}))
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
    info = {"s": start, "state": "running", "t0": time.time(), "tf": None, "slot": ctx.slot}
    ctx.client.hset(_k(ctx, "info"), str(index), json.dumps(info))


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
    pipe.hset(_k(ctx, "wait"), str(ctx.slot), now)
    for name in ("end", "done", "info", "cost", "launch", "wait", "prior"):
        pipe.hgetall(_k(ctx, name))
    _, ends, dones, infos, costs, launches, waits, prior = pipe.execute()
    running: list[Running] = []
    active = False
    starts: dict[str, int] = {}
    for idx, raw in infos.items():
        info = json.loads(raw)
        starts[idx] = int(info.get("s", 0))
        if info.get("state") in ("pending", "running", "retry"):
            active = True
        if info.get("state") != "running" or idx not in ends:
            continue
        running.append(Running(index=int(idx), start=int(info["s"]), end=int(ends[idx]),
                               done=int(dones.get(idx, int(info["s"]) - 1)),
                               started_at=float(info["t0"]),
                               frame_started_at=info.get("tf")))
    idle = sum(1 for t in waits.values() if now - float(t) < WAIT_FRESH_S)
    return _Snapshot(running, active, {int(f): float(c) for f, c in costs.items()},
                     [(starts[i], float(v)) for i, v in launches.items() if i in starts],
                     max(1, idle), {int(f): float(c) for f, c in prior.items()})


def _steal_or_wait(ctx: SlotContext, index: int) -> Steal | None:
    try:
        return _look_for_steal(ctx, index)
    finally:
        with contextlib.suppress(redis.RedisError):
            ctx.client.hdel(_k(ctx, "wait"), str(ctx.slot))


def _look_for_steal(ctx: SlotContext, index: int) -> Steal | None:
    cas = ctx.client.register_script(_CAS)
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
            info = {"s": plan.start, "state": "running", "t0": now, "tf": None,
                    "slot": ctx.slot, "from": plan.victim}
            ok = cas(keys=[_k(ctx, "end"), _k(ctx, "done"), _k(ctx, "info")],
                     args=[plan.victim, victim.end, plan.new_end, index, plan.end,
                           json.dumps(info)])
            if ok:
                ctx.client.hset(_k(ctx, "done"), str(index), plan.start - 1)
                ctx.publish("chunk-shrink", index=plan.victim, end=plan.new_end,
                            thief=index, gain=round(plan.gain, 3))
                return plan
            continue  # the victim moved on: look again at once
        time.sleep(WAIT_STEP_S)
    return None


def on_frame(ctx: SlotContext, index: int, done: int, frame: int | None, cost: float | None,
             first_latency: float | None) -> int | None:
    """Record progress of chunk ``index``; return its current end (None: not stealable)."""
    if ctx.spec.schedule != "adaptive":
        return None
    pipe = ctx.client.pipeline()
    pipe.hset(_k(ctx, "done"), str(index), done)
    if frame is not None and cost is not None:
        pipe.hset(_k(ctx, "cost"), str(frame), round(cost, 4))
    if first_latency is not None:
        pipe.hset(_k(ctx, "launch"), str(index), round(first_latency, 4))
    pipe.hget(_k(ctx, "end"), str(index))
    pipe.hget(_k(ctx, "info"), str(index))
    *_, end, raw = pipe.execute()
    if raw:
        info: dict[str, Any] = json.loads(raw)
        info["tf"] = time.time()
        ctx.client.hset(_k(ctx, "info"), str(index), json.dumps(info))
    return int(end) if end is not None else None


def finish(ctx: SlotContext, index: int) -> None:
    if ctx.spec.schedule != "adaptive":
        return
    raw = ctx.client.hget(_k(ctx, "info"), str(index))
    if raw:
        info = json.loads(raw)
        info["state"] = "finished"
        ctx.client.hset(_k(ctx, "info"), str(index), json.dumps(info))


def next_attempt(ctx: SlotContext, index: int) -> int:
    """Count one more retry of chunk ``index``; returns the retries used so far."""
    return int(ctx.client.hincrby(_k(ctx, "attempts"), str(index), 1))


def set_retry(ctx: SlotContext, index: int, frames: list[int]) -> None:
    ctx.client.hset(_k(ctx, "retry"), str(index), json.dumps(frames))
