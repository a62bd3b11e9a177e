"""The orchestrator's handling of each slot event and of a slot process that dies, in
process: a :class:`Run` fed events, its records, stop reasons and exit codes.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PrivateRedis

from stmpo_celery.broker import events
from stmpo_celery.config import RenderOptions, defaults
from stmpo_celery.errors import ExitCode
from stmpo_celery.host import HostPlan
from stmpo_celery.orchestrator import Prepared, Run
from stmpo_celery.orchestrator._funnel import LogFunnel
from stmpo_celery.orchestrator._pool import Slot, SlotPool
from stmpo_celery.orchestrator._summary import ChunkStatus
from stmpo_celery.plan import OutputPattern


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


def _stolen_run(tmp_path: Path, ext: str) -> Run:
    """An adaptive run of frames 1-10 into ``f_[##].<ext>``: chunk 0 (1-10) and its thief,
    chunk 2 (6-10)."""
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
    return r


def _steal_and_overwrite(tmp_path: Path, ext: str, rewrite: str) -> tuple[Run, Path]:
    """Chunk 0 (1-10) is cut after 5; the thief (chunk 2, 6-10) finishes frame 6; then the
    victim's renderer, rendering ahead with MFR, writes frame 6 again before it dies."""
    from stmpo_celery.aerender._fakeframes import frame_bytes

    r = _stolen_run(tmp_path, ext)
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
    ("pic", "cut short", False),
    ("png", "whole", True),  # written again to the end: a PNG says so
    ("psd", "whole", True),  # and so does a Photoshop file's row-length table
    ("pic", "whole", False),  # a Softimage PIC cannot say: not kept on trust
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


@pytest.mark.parametrize(("ext", "counted_ago", "kept"), [
    ("pic", 0.0, False),  # counted just before the stop: maybe the victim's first bytes
    ("pic", defaults.REWRITE_QUIET_S + 0.5, True),  # the victim would have written more
    ("png", 0.0, True),  # a PNG says where it ends: what was counted was whole
])
def test_a_stop_right_after_a_thief_frame_was_counted_keeps_it_only_if_it_can_tell(
        tmp_path: Path, ext: str, counted_ago: float, kept: bool) -> None:
    """The victim's renderer, past its cut, begins rewriting frame 6 in the instant after
    the thief finished it; the run counts the file (already the victim's first bytes) and
    is cancelled before the victim writes more: nothing on disk tells the cut-short file
    from the counted one. The victim's ledger, settled at the stop, still lists frame 6."""
    from stmpo_celery.aerender._fakeframes import frame_bytes
    from stmpo_celery.slot import ledger_dir, settle_ledgers
    from stmpo_celery.slot._ledger import Ledger

    r = _stolen_run(tmp_path, ext)
    prep = r.prep
    try:
        victim = Ledger(prep.pattern, r.run_id, 0, range(1, 11))
        victim.open()
        for f in range(1, 6):
            victim.done(f)
        r._on_event(events.ChunkShrink(slot=0, index=0, end=5, thief=2))
        frame6 = tmp_path / f"f_06.{ext}"
        whole = frame_bytes(f"x.{ext}", 6)
        frame6.write_bytes(whole if ext == "png" else whole[:20])  # PIC: the victim's start
        r._on_event(events.Frame(slot=1, index=2, frame=6, done=1))
        assert 6 in r.verified
        r.verified_at[6] -= counted_ago
        settle_ledgers(ledger_dir(prep.pattern), lambda e: e.run_id == r.run_id,
                       owned=r.unsettled)
        assert frame6.exists() is kept
        assert not victim.path.exists()
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
def dead_slot(run: Run, private_redis: PrivateRedis, tmp_path: Path) -> Iterator[Slot]:
    import subprocess
    import sys

    log_dir = tmp_path / "slotlogs"
    log_dir.mkdir()
    pool = _RecordingPool(spec_path=tmp_path / "spec.json", blocks=[None, None],
                          log_dir=log_dir, funnel=LogFunnel(None, None), use_fork=False)
    pool.replaced = []
    run.pool, run.client = pool, private_redis.client
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


def test_a_slot_ready_before_the_orchestrator_listened_is_not_taken_for_one_that_cannot_start(
        run: Run, dead_slot: Slot) -> None:
    """Slots start in parallel with Redis and the orchestrator's subscription: a slot's
    ``slot-ready`` may be sent before anyone listens. Its mark in the run's state stands
    for it; a mark of another process (the slot's predecessor) does not."""
    from stmpo_celery.broker import keys

    assert run.client is not None
    field = keys.SLOT_READY_FIELD.format(0)
    run.client.hset(keys.state_key(run.run_id), field, dead_slot.pid)
    run._slot_died(dead_slot)
    run._slot_died(dead_slot)
    assert run.stop_reason is None
    run.client.hset(keys.state_key(run.run_id), field, dead_slot.pid + 1)
    run._slot_died(dead_slot)
    run._slot_died(dead_slot)
    assert run.exit_code == ExitCode.ENVIRONMENT


def test_frames_a_stopped_renderer_wrote_over_after_their_thief_ended_are_rendered_late(
        tmp_path: Path, private_redis: PrivateRedis) -> None:
    """The thief (chunk 2, 6-10) has ended when the victim, stopped at its cut after frame
    5, turns out to have been killed halfway through writing frame 6 again: frame 6 is
    deleted, and once every chunk has ended it goes to one more chunk — a real chord
    message on the run's queue, its frames recorded as that chunk's retry — once. A late
    chunk that fails fails the run; a broker gone when one is sent is exit 3."""
    import base64
    import json

    from stmpo_celery.aerender._fakeframes import frame_bytes
    from stmpo_celery.broker import RENDER_CHUNK, BrokerUrl, keys
    from stmpo_celery.orchestrator._dispatch import RunQueue
    from stmpo_celery.orchestrator._summary import ChunkRecord

    r = _stolen_run(tmp_path, "png")
    r.client = BrokerUrl(private_redis.url).client(timeout=2)
    r.run_queue = RunQueue(BrokerUrl(private_redis.url), r.run_id, r.queue, r.host)
    try:
        r._on_event(events.ChunkStart(slot=0, index=0, start=1, end=10, frames="1-10"))
        r._on_event(events.ChunkShrink(slot=0, index=0, end=5, thief=2))
        r._on_event(events.ChunkStart(slot=1, index=2, start=6, end=10, frames="6-10"))
        for f in range(1, 11):
            (tmp_path / f"f_{f:02d}.png").write_bytes(frame_bytes("x.png", f))
            r._on_event(events.Frame(slot=0 if f <= 5 else 1, index=0 if f <= 5 else 2,
                                     frame=f, done=f))
        r._on_event(events.ChunkDone(slot=1, index=2, start=6, end=10, frames="6-10"))
        assert not r._rerender_late()  # nothing was written over yet
        whole = frame_bytes("x.png", 6)
        (tmp_path / "f_06.png").write_bytes(whole[: len(whole) // 2])
        later = time.time_ns() + 10**9
        os.utime(tmp_path / "f_06.png", ns=(later, later))
        r._on_event(events.ChunkDone(slot=0, index=0, start=1, end=5, frames="1-5", cut=5))
        r._on_event(events.Finalized(slot=0, chunks=2, frames=10))
        assert not (tmp_path / "f_06.png").exists() and r.late == {6}
        assert all(c.terminal for c in r.chunks.values())

        assert r._rerender_late()
        assert not r.finalized and set(r.chunks) == {0, 2, 3}
        assert isinstance(r.chunks[3], ChunkRecord) and not r.chunks[3].terminal
        redo = private_redis.client.hget(keys.sched_key(r.run_id, keys.Sched.RETRY), "3")
        assert redo is not None and json.loads(redo) == [6]
        queue = keys.prefix(r.run_id) + r.queue
        sent = [json.loads(m) for m in private_redis.client.lrange(queue, 0, -1)]
        bodies = [json.loads(base64.b64decode(m["body"])) for m in sent
                  if m["headers"]["task"] == RENDER_CHUNK]
        assert [b[0] for b in bodies] == [[r.run_id, 3]]
        assert not r._rerender_late()  # once

        r._on_event(events.ChunkStart(slot=1, index=3, start=6, end=6, frames="6"))
        (tmp_path / "f_06.png").write_bytes(whole)
        r._on_event(events.Frame(slot=1, index=3, frame=6, done=1))
        r._on_event(events.ChunkDone(slot=1, index=3, start=6, end=6, frames="6"))
        assert 6 in r.verified and r.chunks[3].terminal
        # a late chunk that fails is a failed chunk like any other: the run stops on it
        r.late.add(7)
        r.verified.pop(7)
        assert r._rerender_late() and set(r.chunks) == {0, 2, 3, 4}
        r._on_event(events.ChunkFailed(slot=0, index=4, start=7, end=7, reason="boom"))
        assert r.failures == [r.chunks[4]] and r.exit_code == ExitCode.RENDER_FAILED
        # a broker gone when the late chunk is sent: the host's fault (exit 3), no traceback
        r.late.add(8)
        r.verified.pop(8)
        private_redis.stop()
        assert not r._rerender_late() and 8 not in {c.start for c in r.chunks.values()}
        assert r.exit_code == ExitCode.ENVIRONMENT and "late re-render" in str(r.stop_reason)
    finally:
        import shutil

        shutil.rmtree(r.run_dir, ignore_errors=True)


@pytest.mark.parametrize(("ext", "counted_ago", "kept"), [
    ("pic", 0.0, False),  # the count may have seen the stopped renderer's first bytes
    ("pic", defaults.REWRITE_QUIET_S + 0.5, True),
    ("png", 0.0, True),  # a PNG says where it ends: what was counted was whole
])
def test_a_cut_right_after_a_thief_frame_was_counted_keeps_it_only_if_it_can_tell(
        tmp_path: Path, ext: str, counted_ago: float, kept: bool) -> None:
    """As above with the victim stopped at its cut instead of cancelled: the file has not
    changed since it was counted, so no signature tells; a format that cannot say where
    it ends is deleted and left to the late re-render."""
    from stmpo_celery.aerender._fakeframes import frame_bytes

    r = _stolen_run(tmp_path, ext)
    try:
        r._on_event(events.ChunkStart(slot=0, index=0, start=1, end=10, frames="1-10"))
        r._on_event(events.ChunkShrink(slot=0, index=0, end=5, thief=2))
        frame6 = tmp_path / f"f_06.{ext}"
        whole = frame_bytes(f"x.{ext}", 6)
        frame6.write_bytes(whole if ext == "png" else whole[:20])
        r._on_event(events.Frame(slot=1, index=2, frame=6, done=1))
        assert 6 in r.verified
        r.verified_at[6] -= counted_ago
        r._on_event(events.ChunkDone(slot=0, index=0, start=1, end=5, frames="1-5", cut=5))
        assert frame6.exists() is kept and (r.late == set()) is kept
    finally:
        import shutil

        shutil.rmtree(r.run_dir, ignore_errors=True)



def test_a_thiefs_frame_the_stopped_renderer_finished_first_is_left_to_the_thief(
        tmp_path: Path) -> None:
    """A victim's renderer (MFR) finished a thief's frame first; the thief then rewrote
    it in place. The changed file was deleted under the thief's write when the victim's
    chunk ended, costing one more launch. Now it is un-counted, for the thief to count."""
    from stmpo_celery.aerender._fakeframes import frame_bytes

    r = _stolen_run(tmp_path, "png")
    try:
        r._on_event(events.ChunkStart(slot=0, index=0, start=1, end=10, frames="1-10"))
        r._on_event(events.ChunkShrink(slot=0, index=0, end=5, thief=2))
        r._on_event(events.ChunkStart(slot=1, index=2, start=6, end=10, frames="6-10"))
        frame7, whole = tmp_path / "f_07.png", frame_bytes("x.png", 7)
        frame7.write_bytes(whole)
        r._on_event(events.Frame(slot=0, index=0, frame=7, done=6))  # the victim, ahead
        assert 7 in r.verified
        frame7.write_bytes(whole[:40])  # the thief, writing it again in place
        r._on_event(events.ChunkDone(slot=0, index=0, start=1, end=5, frames="1-5", cut=5))
        assert frame7.exists() and 7 not in r.verified and not r.late
        frame7.write_bytes(whole)  # the thief is done with it
        r._on_event(events.Frame(slot=1, index=2, frame=7, done=2))
        assert 7 in r.verified
    finally:
        __import__("shutil").rmtree(r.run_dir, ignore_errors=True)
