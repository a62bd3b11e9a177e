"""The core without slot processes: claims, the steal compare-and-set, retry bookkeeping,
requeue of a dead slot's message, the event protocol and the orchestrator's handling of
each event — against a real Redis (the embedded server the package ships), in-process.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from stmpo_celery.aerender import RenderTarget
from stmpo_celery.broker import EmbeddedRedis, events, keys, make_app, requeue_unacked
from stmpo_celery.broker.keys import Sched
from stmpo_celery.config import RenderOptions, defaults
from stmpo_celery.errors import ExitCode
from stmpo_celery.host import HostPlan
from stmpo_celery.orchestrator import Prepared, Run
from stmpo_celery.orchestrator._funnel import LogFunnel
from stmpo_celery.orchestrator._pool import Slot, SlotPool
from stmpo_celery.orchestrator._summary import ChunkStatus
from stmpo_celery.plan import OutputPattern
from stmpo_celery.slot import next_attempt, register_plan, set_retry
from stmpo_celery.slot._chunk import SlotContext
from stmpo_celery.slot._schedule import SchedState, claim, finish, on_frame
from stmpo_celery.slot._spec import RunSpec


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedRedis]:
    with tempfile.TemporaryDirectory(prefix="stmpo-test-") as d:
        srv = EmbeddedRedis(Path(d))
        srv.start()
        srv.wait_ready()
        yield srv
        srv.stop()


@pytest.fixture
def client(server: EmbeddedRedis) -> Iterator[redis.Redis]:
    c = server.url.client(timeout=5)
    c.flushall()
    yield c
    c.close()


def spec(run_id: str, chunks: list[tuple[int, int]], schedule: str = "adaptive",
         frames: list[int] | None = None) -> RunSpec:
    frames = frames if frames is not None else [
        f for s, e in chunks for f in range(s, e + 1)]
    return RunSpec(run_id=run_id, host="h", queue=keys.queue(run_id, "h"),
                   broker_url="redis://unused", aerender="aerender",
                   target=RenderTarget(project="p.aep", output="/o/f_[####].png", comp="C"),
                   log_dir="/tmp", schedule=schedule, launch_cost=1.0, chunks=chunks,
                   frames=frames)


def ctx_for(client: redis.Redis, s: RunSpec, slot: int = 0) -> SlotContext:
    return SlotContext(spec=s, slot=slot, client=client)


def sched(client: redis.Redis, run_id: str, name: Sched) -> dict[str, str]:
    return {str(k): str(v) for k, v in client.hgetall(keys.sched_key(run_id, name)).items()}


# -- claims ------------------------------------------------------------------------------
def test_a_planned_chunk_claims_its_block_and_is_marked_running(client: redis.Redis) -> None:
    run = secrets.token_hex(4)
    s = spec(run, [(1, 10), (11, 20)])
    register_plan(client, run, s.chunks)
    assert json.loads(sched(client, run, Sched.INFO)["1"])["state"] == SchedState.PENDING
    assert claim(ctx_for(client, s, slot=1), 1) == (list(range(11, 21)), 0)
    info = json.loads(sched(client, run, Sched.INFO)["1"])
    assert info["state"] == SchedState.RUNNING and info["slot"] == 1 and info["s"] == 11


def test_a_claim_keeps_only_the_frames_still_to_render(client: redis.Redis) -> None:
    """A resumed run's block skips frames already on disk (``spec.frames``)."""
    run = secrets.token_hex(4)
    s = spec(run, [(1, 10)], schedule="static", frames=[1, 2, 5, 9])
    assert claim(ctx_for(client, s), 0) == ([1, 2, 5, 9], 0)


def test_a_retry_renders_exactly_its_recorded_frames(client: redis.Redis) -> None:
    run = secrets.token_hex(4)
    s = spec(run, [(1, 10)])
    register_plan(client, run, s.chunks)
    assert next_attempt(client, run, 0) == 1
    set_retry(client, run, 0, [4, 7, 8])
    assert claim(ctx_for(client, s), 0) == ([4, 7, 8], 1)
    # a retry is never split: it is active but not a steal victim
    assert json.loads(sched(client, run, Sched.INFO)["0"])["state"] == SchedState.RETRY
    assert next_attempt(client, run, 0) == 2


def test_a_spare_task_of_a_planned_schedule_has_nothing_to_do(client: redis.Redis) -> None:
    run = secrets.token_hex(4)
    s = spec(run, [(1, 10)], schedule="fixed")
    assert claim(ctx_for(client, s), 5) is None


def test_a_spare_returns_idle_once_no_chunk_is_active(client: redis.Redis) -> None:
    run = secrets.token_hex(4)
    s = spec(run, [(1, 4)])
    register_plan(client, run, s.chunks)
    c = ctx_for(client, s)
    assert claim(c, 0) == ([1, 2, 3, 4], 0)
    finish(c, 0)
    t0 = time.monotonic()
    assert claim(ctx_for(client, s, slot=1), 1) is None
    assert time.monotonic() - t0 < 1.0


def test_a_spare_steals_the_tail_of_a_long_running_chunk(client: redis.Redis) -> None:
    run = secrets.token_hex(4)
    s = spec(run, [(1, 100)])
    register_plan(client, run, s.chunks)
    victim = ctx_for(client, s, slot=0)
    assert claim(victim, 0) == (list(range(1, 101)), 0)
    # five frames at 1 s each after a 1 s launch: 95 s left, worth a steal
    on_frame(victim, 0, 1, 1, None, 1.0)
    for f in range(2, 6):
        on_frame(victim, 0, f, f, 1.0, None)
    thief = ctx_for(client, s, slot=1)
    got = claim(thief, 1)
    assert got is not None
    frames, attempt = got
    new_end = int(sched(client, run, Sched.END)["0"])
    assert attempt == 0 and frames == list(range(new_end + 1, 101))
    assert 5 < new_end < 100 and int(sched(client, run, Sched.END)["1"]) == 100
    # the victim learns its new end at its next frame
    assert on_frame(victim, 0, 6, 6, 1.0, None) == new_end


# -- the steal compare-and-set -------------------------------------------------------------
def cas(client: redis.Redis, run: str, victim_end_seen: int, new_end: int) -> int:
    script = client.register_script(keys.STEAL_CAS)
    info = json.dumps({"s": new_end + 1, "state": SchedState.RUNNING})
    return int(script(keys=[keys.sched_key(run, Sched.END), keys.sched_key(run, Sched.DONE),
                            keys.sched_key(run, Sched.INFO)],
                      args=[0, victim_end_seen, new_end, 7, victim_end_seen, info]))


def test_the_steal_cas_moves_the_tail_atomically(client: redis.Redis) -> None:
    run = secrets.token_hex(4)
    register_plan(client, run, [(1, 100)])
    client.hset(keys.sched_key(run, Sched.DONE), "0", 20)
    assert cas(client, run, 100, 60) == 1
    assert sched(client, run, Sched.END) == {"0": "60", "7": "100"}
    assert json.loads(sched(client, run, Sched.INFO)["7"])["s"] == 61


def test_the_steal_cas_loses_to_an_earlier_thief(client: redis.Redis) -> None:
    run = secrets.token_hex(4)
    register_plan(client, run, [(1, 100)])
    assert cas(client, run, 100, 60) == 1
    assert cas(client, run, 100, 80) == 0  # planned from an end that has moved
    assert sched(client, run, Sched.END)["0"] == "60"


def test_the_steal_cas_never_takes_frames_the_victim_finished(client: redis.Redis) -> None:
    run = secrets.token_hex(4)
    register_plan(client, run, [(1, 100)])
    client.hset(keys.sched_key(run, Sched.DONE), "0", 70)
    assert cas(client, run, 100, 60) == 0
    assert sched(client, run, Sched.END) == {"0": "100"}


def test_first_launches_stand_a_spawn_delay_apart_in_arrival_order(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    from stmpo_celery.slot import _chunk

    run = secrets.token_hex(4)
    s = dataclasses.replace(spec(run, [(1, 10)]), spawn_delay=0.8)
    now = [1000.0]
    monkeypatch.setattr(_chunk.time, "time", lambda: now[0])
    # slot 3 comes up first: it goes at once, whatever its number
    waits = [_chunk._launch_wait(ctx_for(client, s, slot)) for slot in (3, 0, 1)]
    assert waits == pytest.approx([0.0, 0.8, 1.6])
    now[0] += 10.0  # a slot arriving long after the last one waits for nobody
    assert _chunk._launch_wait(ctx_for(client, s, 2)) == 0.0
    assert 0 < client.ttl(keys.launch_gate_key(run)) <= defaults.RUN_KEY_TTL_S  # expires


# -- requeue of a dead slot's message ---------------------------------------------------------
def test_requeue_moves_the_dead_slots_message_back_to_the_head_once(
        client: redis.Redis) -> None:
    run = secrets.token_hex(4)
    queue = keys.queue(run, "h")
    unacked, index = keys.unacked_keys(run)
    mine = {"headers": {"id": "task-a"}, "body": "x"}
    other = {"headers": {"id": "task-b"}, "body": "y"}
    client.hset(unacked, "tag-a", json.dumps([mine, "", queue]))
    client.hset(unacked, "tag-b", json.dumps([other, "", queue]))
    client.zadd(index, {"tag-a": 1.0, "tag-b": 2.0})
    client.lpush(keys.queue_key(run, queue), json.dumps({"headers": {"id": "queued"}}))
    assert requeue_unacked(client, run, queue, "task-a") is True
    assert json.loads(str(client.lindex(keys.queue_key(run, queue), -1)))["headers"]["id"] == (
        "task-a")
    assert client.hkeys(unacked) == ["tag-b"] and client.zrange(index, 0, -1) == ["tag-b"]
    assert requeue_unacked(client, run, queue, "task-a") is False  # never twice


# -- results ----------------------------------------------------------------------------------
def test_a_result_is_written_with_the_runs_ttl(server: EmbeddedRedis,
                                               client: redis.Redis) -> None:
    """A run killed with all its processes between two beats leaves no key without a TTL:
    a chunk's result (and the chord's join keys) expire like every key of the run."""
    run = secrets.token_hex(4)
    app = make_app(server.url, run, keys.queue(run, "h"))
    try:
        app.backend.store_result("task-1", {"frames": [1]}, "SUCCESS")
    finally:
        app.close()
    (key,) = client.keys(keys.prefix(run) + "*")
    assert str(key).endswith("celery-task-meta-task-1")
    assert 0 < client.ttl(key) <= defaults.RUN_KEY_TTL_S


# -- the protocol ----------------------------------------------------------------------------
def test_every_kind_round_trips_through_the_wire() -> None:
    for kind, cls in events.EVENT_TYPES.items():
        ev = cls(slot=3)
        back = events.decode(events.encode(ev))
        assert type(back) is cls and back.kind is kind and back == ev


def test_decode_refuses_what_is_not_an_event() -> None:
    for raw in (b"\xff\xfe", "not json", "[]", '{"t": "no-such-kind"}', '{"x": 1}',
                '{"t": "frame", "done": 1, "index": 0, "slot": 0, "unknown": 5}'):
        ev = events.decode(raw)
        assert ev is None or (isinstance(ev, events.Frame) and ev.done == 1)


def test_an_outcome_becomes_done_retry_or_failed_with_its_fields() -> None:
    out = events.ChunkOutcome(slot=1, index=2, start=5, end=9, missing=[8], reason="crash")
    retry = out.becomes(events.ChunkRetry, attempts=1, redo=[8])
    assert isinstance(retry, events.ChunkRetry) and retry.redo == [8] and retry.reason == "crash"
    assert events.decode(events.encode(retry)) == retry


# -- the orchestrator's handling of each event ----------------------------------------------------
@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    opts = RenderOptions(project=str(tmp_path / "p.aep"), frames="1-20",
                         output=str(tmp_path / "f_[##].png"), comp="C",
                         log_dir=str(tmp_path / "logs"))
    prep = Prepared(options=opts, project=opts.project, pattern=OutputPattern(opts.output),
                    frames=list(range(1, 21)), to_render=list(range(1, 21)),
                    aerender="aerender", broker=None, chunk_size=None)
    plan = HostPlan(n_slots=2, bound_by="test", blocks=[None, None],
                    chunks=[(1, 10), (11, 20)], schedule="static")
    r = Run(prep, plan, stdout=io.StringIO(), tty=False)
    for i, (s, e) in enumerate(plan.chunks):
        from stmpo_celery.orchestrator._summary import ChunkRecord

        r.chunks[i] = ChunkRecord(index=i, start=s, end=e)
    yield r
    import shutil

    shutil.rmtree(r.run_dir, ignore_errors=True)


def test_the_orchestrator_has_one_handler_per_kind() -> None:
    for kind in events.Kind:
        assert callable(getattr(Run, "_on_" + kind.value.replace("-", "_"), None)), kind


def test_start_frames_and_done_are_counted(run: Run) -> None:
    run._on_event(events.ChunkStart(slot=1, index=0, start=1, end=10, frames="1-10"))
    assert run.chunks[0].status is ChunkStatus.RUNNING and run.chunks[0].slot == 1
    for f in (1, 2, 3):
        run._on_event(events.Frame(slot=1, index=0, frame=f, done=f))
    run._on_event(events.Frame(slot=1, index=0, frame=None, done=4))  # unresolvable number
    assert run.done_frames == {1, 2, 3} and run.unresolved == {(0, 0): 4}
    run._on_event(events.ChunkDone(slot=1, index=0, start=1, end=10, frames_rendered=10))
    assert run.chunks[0].status is ChunkStatus.DONE and run.chunks[0].terminal


def test_a_steal_shortens_the_victims_record(run: Run) -> None:
    run._on_event(events.ChunkShrink(slot=0, index=1, end=15, thief=4))
    assert run.chunks[1].end == 15 and run.chunks[1].stolen_by == [4]


def test_a_stolen_chunks_record_says_what_it_rendered_and_where_its_log_is(run: Run) -> None:
    """The summary's record of a victim: the frames it rendered and where it was cut (not
    the frames planned), and its launch's log even though it ended well."""
    run._on_event(events.ChunkStart(slot=0, index=1, start=21, end=40, frames="21-40",
                                    log="/logs/chunk0001-f21-40-slot0.log"))
    run._on_event(events.ChunkShrink(slot=0, index=1, end=30, thief=4))
    run._on_event(events.ChunkDone(slot=0, index=1, start=21, end=30, frames="21-30",
                                   cut=30, frames_rendered=10, log=""))
    rec = run.chunks[1]
    assert (rec.frames, rec.cut, rec.end) == ("21-30", 30, 30)
    assert rec.log == "/logs/chunk0001-f21-40-slot0.log"


def _steal_and_overwrite(tmp_path: Path, ext: str, rewrite: str) -> tuple[Run, Path]:
    """Chunk 0 (1-10) is cut after 5; the thief (chunk 2, 6-10) finishes frame 6; then the
    victim's renderer, rendering ahead with MFR, writes frame 6 again before it dies."""
    from stmpo_celery.aerender._fakeframes import frame_bytes
    from stmpo_celery.orchestrator._summary import ChunkRecord

    out = str(tmp_path / f"f_[##].{ext}")
    opts = RenderOptions(project=str(tmp_path / "p.aep"), frames="1-10", output=out,
                         comp="C", log_dir=str(tmp_path / "logs"))
    prep = Prepared(options=opts, project=opts.project, pattern=OutputPattern(out),
                    frames=list(range(1, 11)), to_render=list(range(1, 11)),
                    aerender="aerender", broker=None, chunk_size=None)
    plan = HostPlan(n_slots=2, bound_by="test", blocks=[None, None], chunks=[(1, 10)],
                    schedule="adaptive")
    r = Run(prep, plan, stdout=io.StringIO(), tty=False)
    for i in (0, 2):
        r.chunks[i] = ChunkRecord(index=i, start=1 if i == 0 else 6, end=10)
    frame6 = tmp_path / f"f_06.{ext}"
    r._on_event(events.ChunkStart(slot=0, index=0, start=1, end=10, frames="1-10"))
    r._on_event(events.ChunkShrink(slot=0, index=0, end=5, thief=2))
    r._on_event(events.ChunkStart(slot=1, index=2, start=6, end=10, frames="6-10"))
    frame6.write_bytes(frame_bytes(f"x.{ext}", 6))
    r._on_event(events.Frame(slot=1, index=2, frame=6, done=1))
    assert 6 in r.verified
    whole = frame_bytes(f"x.{ext}", 6)
    frame6.write_bytes(whole[: len(whole) // 2] if rewrite == "cut short" else whole + b"")
    os.utime(frame6, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    r._on_event(events.ChunkDone(slot=0, index=0, start=1, end=5, frames="1-5", cut=5))
    return r, frame6


@pytest.mark.parametrize(("ext", "rewrite", "kept"), [
    ("png", "cut short", False),  # killed in the middle of writing it again
    ("psd", "cut short", False),
    ("png", "whole", True),  # written again to the end: a PNG says so
    ("psd", "whole", False),  # a PSD cannot say: not kept on trust
])
def test_a_frame_a_stopped_renderer_wrote_over_after_the_thief_is_not_kept_on_trust(
        tmp_path: Path, ext: str, rewrite: str, kept: bool) -> None:
    r, frame6 = _steal_and_overwrite(tmp_path, ext, rewrite)
    try:
        assert frame6.exists() is kept and (6 in r.verified) is kept
        said = r.stdout.getvalue()  # type: ignore[attr-defined]
        assert ("frame 6 was written again by the renderer stopped after frame 5" in said) \
            is not kept, said
    finally:
        import shutil

        shutil.rmtree(r.run_dir, ignore_errors=True)


def test_a_retry_keeps_the_chunk_open_and_counts_the_attempt(run: Run) -> None:
    run._on_event(events.ChunkRetry(slot=0, index=0, start=1, end=10, missing=[7],
                                    reason="stalled", attempts=1, redo=[7]))
    rec = run.chunks[0]
    assert rec.status is ChunkStatus.RETRYING and not rec.terminal and rec.attempts == 1
    assert run.stop_reason is None


def test_a_failed_chunk_stops_the_run_when_failing_fast(run: Run) -> None:
    run._on_event(events.ChunkFailed(slot=0, index=1, start=11, end=20, reason="bad",
                                     tail=["aerender ERROR: x"]))
    assert run.chunks[1].status is ChunkStatus.FAILED and run.failures == [run.chunks[1]]
    assert run.exit_code == ExitCode.RENDER_FAILED and "bad" in (run.stop_reason or "")


def test_without_fail_fast_a_failure_is_recorded_and_the_run_goes_on(run: Run) -> None:
    run.o.fail_fast = False
    run._on_event(events.ChunkFailed(slot=0, index=1, reason="bad"))
    run._on_event(events.Abort(slot=0, reason="bad"))
    assert run.failures and run.stop_reason is None


@pytest.mark.parametrize("fail_fast", [True, False])
@pytest.mark.parametrize("first", ["failed", "abort"])
def test_a_chunk_that_lost_its_broker_stops_the_run_as_an_environment_failure(
        run: Run, fail_fast: bool, first: str) -> None:
    """The broker restarted under a slot: exit 3 (the host), never 1 (the render), and
    whichever of the chunk's failure and the run's abort arrives first."""
    run.o.fail_fast = fail_fast
    reason = f"{events.BROKER_FAILED}: ConnectionError: Error 111 connecting"
    failed = events.ChunkFailed(slot=1, index=1, start=11, end=20, reason=reason)
    abort = events.Abort(slot=1, reason=f"chunk 1 frames 11-20 on slot 1: {reason}")
    for ev in ((failed, abort) if first == "failed" else (abort, failed)):
        run._on_event(ev)
    assert run.exit_code == ExitCode.ENVIRONMENT and run.stop_reason


def test_warnings_are_said_once_and_idle_spares_end(run: Run) -> None:
    run._on_event(events.SlotWarning(slot=0, text="Project has missing fonts"))
    run._on_event(events.SlotWarning(slot=1, text="Project has missing fonts"))
    assert run.warnings == ["Project has missing fonts"]
    run._on_event(events.ChunkIdle(slot=0, index=1, status="skipped"))
    assert run.chunks[1].status is ChunkStatus.SKIPPED and run.chunks[1].terminal
    run._on_event(events.Finalized(slot=0, chunks=1, frames=10))
    assert run.finalized


def test_events_for_unknown_chunks_change_nothing(run: Run) -> Any:
    before = {i: (c.status, c.end) for i, c in run.chunks.items()}
    run._on_event(events.ChunkDone(slot=0, index=99))
    run._on_event(events.ChunkShrink(slot=0, index=99, end=1, thief=3))
    assert {i: (c.status, c.end) for i, c in run.chunks.items()} == before


# -- a slot that cannot start --------------------------------------------------------------
class _RecordingPool(SlotPool):
    """The real pool's bookkeeping and log reading; its replacements are only recorded
    (a slot process dying for real is tests/test_faults.py's)."""

    replaced: list[int]

    def replace(self, k: int) -> Slot:
        self.replaced.append(k)
        return self.slots[k] if self.slots else None  # type: ignore[return-value]


@pytest.fixture
def dead_slot(run: Run, client: redis.Redis, tmp_path: Path) -> Iterator[Slot]:
    import subprocess
    import sys

    log_dir = tmp_path / "slotlogs"
    log_dir.mkdir()
    pool = _RecordingPool(spec_path=tmp_path / "spec.json", blocks=[None, None],
                          log_dir=log_dir, funnel=LogFunnel(None, None), use_fork=False)
    pool.replaced = []
    run.pool, run.client = pool, client
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"],
                            stdout=subprocess.PIPE)
    proc.wait()
    assert proc.stdout is not None
    yield Slot(0, None, proc, proc.stdout)
    proc.stdout.close()


# Celery's own line when Redis refuses a slot's connection (maxclients), with a password
_REFUSED = ("[2026-12-06 16:09:20,935: ERROR/MainProcess] consumer: Cannot connect to "
            "redis://:hunter2@127.0.0.1:54047/0: max number of clients reached.\n"
            "Trying again in 6.00 seconds... (3/5)\n")


def test_a_slot_dying_again_before_any_work_stops_the_run_with_its_cause(
        run: Run, dead_slot: Slot) -> None:
    """Replaced for ever, a slot that cannot start (here: Redis refuses its connections
    while the orchestrator's own still works) would leave the run waiting for ever."""
    pool = run.pool
    assert isinstance(pool, _RecordingPool)
    (pool.log_dir / "slot0.celery.log").write_text(_REFUSED)
    run._slot_died(dead_slot)
    assert (run.stop_reason, pool.replaced) == (None, [0])
    run._slot_died(dead_slot)
    reason = str(run.stop_reason)
    assert run.exit_code == ExitCode.ENVIRONMENT
    assert "slot 0 died 2 times in a row before taking any work" in reason
    assert "max number of clients reached" in reason
    assert "hunter2" not in reason and "slot0.celery.log" in reason
    assert pool.replaced == [0]


def test_a_slot_that_spoke_between_two_deaths_is_replaced_again(
        run: Run, dead_slot: Slot) -> None:
    run._slot_died(dead_slot)  # the first process never spoke: 1
    run._on_event(events.SlotReady(slot=0, pid=4321))  # its replacement did: it is ready
    run._slot_died(dead_slot)  # ... then died: it had started, so 0
    run._on_event(events.ChunkIdle(slot=1, index=1, status="idle"))  # another slot's word
    run._slot_died(dead_slot)  # the next one never spoke: 1
    assert run.stop_reason is None
    run._slot_died(dead_slot)  # nor its replacement: 2
    assert run.exit_code == ExitCode.ENVIRONMENT
