"""The core without slot processes: claims, the steal compare-and-set, retry bookkeeping,
requeue of a dead slot's message and the event protocol — against a real Redis (the
embedded server the package ships), in-process. The orchestrator's handling of the
events: test_orchestrator_inprocess.py.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stmpo_celery.aerender import RenderTarget
from stmpo_celery.broker import (
    EmbeddedRedis,
    close_row,
    delete_run,
    events,
    keys,
    make_app,
    requeue_unacked,
)
from stmpo_celery.broker.keys import Sched
from stmpo_celery.config import defaults
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


def test_a_late_chunk_beyond_the_plan_renders_its_recorded_frames(client: redis.Redis) -> None:
    """The orchestrator's late re-render: a chunk index past every planned and spare task,
    whose frames are recorded as its retry, renders exactly them (first attempt), unsplit."""
    run = secrets.token_hex(4)
    s = spec(run, [(1, 10), (11, 20)])
    register_plan(client, run, s.chunks)
    set_retry(client, run, 11, [6, 14])
    assert claim(ctx_for(client, s, slot=1), 11) == ([6, 14], 0)
    assert json.loads(sched(client, run, Sched.INFO)["11"])["state"] == SchedState.RETRY


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
    on_frame(victim, 0, 1, {}, 1.0)
    for f in range(2, 6):
        on_frame(victim, 0, f, {f: 1.0}, None)
    thief = ctx_for(client, s, slot=1)
    got = claim(thief, 1)
    assert got is not None
    frames, attempt = got
    new_end = int(sched(client, run, Sched.END)["0"])
    assert attempt == 0 and frames == list(range(new_end + 1, 101))
    assert 5 < new_end < 100 and int(sched(client, run, Sched.END)["1"]) == 100
    # the victim learns its new end at its next frame
    assert on_frame(victim, 0, 6, {6: 1.0}, None) == new_end


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


def test_a_dead_runs_flower_row_fails_once_also_after_its_keys_are_gone(
        client: redis.Redis) -> None:
    """Every slot of a run whose orchestrator died mourns it: the first fails the run's
    row in Flower; the others only take their node offline — also one that read the
    run's registry line before the first deleted the run's keys (the claim went with
    them, and a second FAILED counted the run twice), and nothing is left behind."""
    run = secrets.token_hex(4)
    entry = {"row_task": "row-1", "row_node": f"orchestrator.{run}@h"}
    client.hset(keys.REGISTRY, run, json.dumps(entry))

    def said() -> list[str]:
        return [kind for _node, sends in close_row(client, run, entry, "DEAD: x")
                for kind, _ in sends]

    assert said() == ["task-failed", "worker-offline"]
    assert said() == ["worker-offline"]
    delete_run(client, run)  # the first mourner cleans up
    assert said() == ["worker-offline"]
    assert not list(client.scan_iter(match=f"*{run}*"))


def test_frames_a_stopped_renderer_wrote_over_are_forgiven_once(client: redis.Redis) -> None:
    """A victim's renderer, stopped at a steal's cut, rendering ahead (MFR) wrote over
    frames its thief had finished: the thief's check finds them cut short. That used the
    thief's retry (with --retries 0 it failed a healthy render). Only when every frame to
    redo was so marked, and only once."""
    from stmpo_celery.slot._schedule import mark_overwritten, take_overwritten

    run = secrets.token_hex(4)
    s = spec(run, [(1, 60)])
    victim, thief = ctx_for(client, s, slot=0), ctx_for(client, s, slot=1)
    mark_overwritten(victim, 0, [53, 54])
    assert not take_overwritten(thief, [54, 58])  # 58 failed on its own: counted
    assert take_overwritten(thief, [54])
    assert not take_overwritten(thief, [54])  # once
    assert take_overwritten(thief, [53])
    static = spec(run, [(1, 60)], schedule="static")
    mark_overwritten(ctx_for(client, static), 0, [7])  # no steals: nothing to forgive
    assert not take_overwritten(ctx_for(client, static), [7])


def test_a_strong_error_after_the_cut_is_about_a_thiefs_frame(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A victim stopped at its cut: its renderer, already in the thief's first frame (MFR
    renders ahead), printed a strong error about it before it died. That failed the
    victim's chunk — exit 1, and fail-fast stopped every slot — though every frame it
    owned was whole and the thief had rendered that frame already. Before the cut, the
    same line still fails the launch."""
    from stmpo_celery.slot import _launch

    monkeypatch.setattr(_launch, "kill_renderer", lambda: None)
    att = _launch.Attempt(1, 30)
    cut = _launch._Cut(att)
    cut.advance(10)
    assert cut.error("Unable to allocate enough memory to render frame 11") is None
    cut.lower(22)
    cut.advance(22)  # frame 22, its new end, is done: the renderer is stopped there
    assert att.cut_end == 22
    said = cut.error("Unable to allocate enough memory to render frame 23")
    assert said is not None and said == att.warnings[-1]
    assert att.strong == ["Unable to allocate enough memory to render frame 11"]
    assert len(att.warnings) == 1
    assert "after frame 22" in att.warnings[0] and "frame 23" in att.warnings[0]


def test_a_half_written_frame_that_cannot_be_deleted_stays_listed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows refuses to delete a file another process has open (a viewer, an antivirus
    scan). Settling a stopped launch's ledger swallowed that and removed the ledger: the
    half-written frame stayed on disk with nothing saying so, and a format that does not
    tell where a file ends would have passed a later --skip-existing as rendered."""
    from stmpo_celery.plan import OutputPattern
    from stmpo_celery.slot import _ledger

    pattern = OutputPattern(str(tmp_path / "shot_[####].pic"))
    ledger = _ledger.Ledger(pattern, "deadbeef", 0, [1, 2, 3])
    ledger.open()
    for f in (1, 2):
        Path(pattern.path_for(f)).write_bytes(b"half")
    held = pattern.path_for(2)
    real_remove = _ledger.remove_file

    def refuse(path: str | Path, *args: object) -> None:
        if str(path) == held:
            raise PermissionError(13, "The process cannot access the file", held)
        real_remove(path)

    monkeypatch.setattr(_ledger, "remove_file", refuse)
    first = _ledger.settle(_ledger.state_dir(pattern), lambda e: e.run_id == "deadbeef")
    assert list(first) == [pattern.path_for(1)] and first.kept == [held]
    (entry,) = _ledger.entries(_ledger.state_dir(pattern))
    assert entry.frames == [2]  # still listed: whoever settles next tries again
    monkeypatch.setattr(_ledger, "remove_file", real_remove)  # the reader let go
    second = _ledger.settle(_ledger.state_dir(pattern), lambda e: e.run_id == "deadbeef")
    assert list(second) == [held] and not second.kept
    assert not Path(held).exists() and not _ledger.entries(_ledger.state_dir(pattern))
