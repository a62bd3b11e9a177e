"""`stmpo render` end to end: real Redis, real slot processes, the aerender simulator."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import redis
from conftest import SYSTEM_REDIS, Farm, stmpo_keys, tagged, wait_for
from framelib import bad_files

from stmpo_celery.aerender._fakeframes import frame_bytes
from stmpo_celery.broker import keys

pytestmark = pytest.mark.slow


def test_success_renders_every_frame_and_writes_a_true_summary(farm: Farm) -> None:
    res = farm.run(frames="1-24", concurrency=3)
    assert res.returncode == 0, res.stdout + res.stderr
    assert farm.frames_on_disk() == list(range(1, 25))
    s = farm.load_summary()
    assert s["exit_code"] == 0 and s["status"] == "ok"
    assert s["frames"]["requested"] == 24 and s["frames"]["rendered"] == 24
    assert s["frames"]["missing"] == 0 and s["frames"]["skipped"] == 0
    assert s["plan"]["n_slots"] == 3 and s["embedded_broker"] is True
    done = [c for c in s["chunks"] if c["status"] == "done"]
    assert sorted(f for c in done for f in range(c["start"], c["end"] + 1)) == list(range(1, 25))
    assert {c["slot"] for c in done} <= {0, 1, 2}
    for c in done:
        assert c["exit_code"] == 0 and c["t1"] >= c["t0"] and c["launch_s"] > 0
    # progress for the Deadline monitor, one directive per line
    progress = [ln for ln in res.stdout.splitlines() if ln.startswith("openjd_progress: ")]
    assert progress and progress[-1] == "openjd_progress: 100.0"
    assert "openjd_status: Rendered 24 of 24 frames" in res.stdout
    # the merged stream: whole lines, prefixed by slot and frames
    merged = [ln for ln in res.stdout.splitlines() if ln.startswith("[slot ")]
    assert any("PROGRESS:" in ln and "(1):" in ln for ln in merged)
    assert all(ln.split("] ", 1)[0].count("[") == 1 for ln in merged)
    # one log file per aerender run
    assert len(list(farm.logs.glob("chunk*-slot*.log"))) == len(done)
    assert not farm.leftovers()


def test_strong_error_with_exit_0_fails_fast_and_stops_everything(farm: Farm) -> None:
    farm.knobs.update(FAIL_FRAME="3", FRAME_COST="0.2")
    t0 = time.monotonic()
    res = farm.run(frames="1-40", concurrency=2)
    elapsed = time.monotonic() - t0
    assert res.returncode == 1, res.stdout + res.stderr
    last = [ln for ln in res.stdout.splitlines() if ln.startswith("stmpo: FAILED")][-1]
    assert "chunk 0" in last and "frames 1-20" in last and "slot" in last
    assert "After Effects error" in last  # the aerender log tail is quoted
    assert any(ln.startswith("openjd_fail: ") for ln in res.stdout.splitlines())
    # the sibling chunk (21-40, 4 s of work) was stopped, not left to finish
    assert elapsed < 4.0, elapsed
    assert 40 not in farm.frames_on_disk()
    # the summary says the sibling was stopped, and when: no chunk of an ended run runs
    chunks = {c["start"]: c for c in farm.load_summary()["chunks"]}
    assert chunks[1]["status"] == "failed"
    assert chunks[21]["status"] == "stopped" and chunks[21]["t1"] >= chunks[21]["t0"]
    assert not farm.leftovers()
    s = farm.load_summary()
    assert s["exit_code"] == 1 and s["frames"]["missing"] > 0


def test_no_fail_fast_lets_other_chunks_finish(farm: Farm) -> None:
    farm.knobs.update(FAIL_FRAME="3")
    res = farm.run("--no-fail-fast", frames="1-20", concurrency=2)
    assert res.returncode == 1
    assert set(range(11, 21)) <= set(farm.frames_on_disk())
    s = farm.load_summary()
    assert [c["status"] for c in s["chunks"]].count("failed") == 1
    assert len(s["failures"]) == 1 and "frames 1-10" in s["failures"][0]
    assert not farm.leftovers()


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_cancel_by_signal_stops_everything(farm: Farm, sig: int, code: int) -> None:
    proc = farm.start_rendering(frames="1-60", frame_cost="0.3")
    t0 = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert time.monotonic() - t0 < 2.5
    assert proc.returncode == code, out + err
    assert "stmpo: CANCELLED by" in out and "FAILED" not in out
    assert not farm.leftovers(timeout=3)


def test_cancel_before_any_frame_removes_the_folders_it_created(farm: Farm) -> None:
    farm.out.mkdir()  # the user's: kept
    nested = farm.out / "v001" / "exr"
    farm.knobs.update(STARTUP="30")  # After Effects still starting when the cancel comes
    proc = farm.start(output=str(nested / "shot_[####].png"), frames="1-20")
    assert wait_for(lambda: farm.launches() > 0, timeout=30), "aerender never launched"
    assert nested.is_dir()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 143, out + err
    assert farm.out.is_dir() and not (farm.out / "v001").exists(), list(farm.out.rglob("*"))
    assert not farm.leftovers(timeout=3)


def test_sigkill_of_orchestrator_leaves_no_process(farm: Farm) -> None:
    proc = farm.start_rendering(frames="1-60", frame_cost="0.3")
    assert any("AfterFX" in (p.name() or "") for p in tagged(farm.tag))
    proc.kill()
    proc.communicate(timeout=10)
    assert not farm.leftovers(timeout=5), [p.name() for p in tagged(farm.tag)]


def test_skip_existing_frames_are_not_rendered_again(farm: Farm) -> None:
    farm.out.mkdir(parents=True)
    for f in (1, 2, 3, 10):
        path = farm.out / f"shot_{f:04d}.png"
        path.write_bytes(frame_bytes(str(path), f))
    (farm.out / "shot_0004.png").write_bytes(b"")  # empty is not a frame
    whole = frame_bytes(str(farm.out / "shot_0005.png"), 5)
    (farm.out / "shot_0005.png").write_bytes(whole[: len(whole) - 40])  # cut short: neither
    res = farm.run(frames="1-12", concurrency=2)
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(farm.journal_frames()) == [4, 5, 6, 7, 8, 9, 11, 12]
    assert farm.frames_on_disk() == list(range(1, 13))
    s = farm.load_summary()
    assert s["frames"]["skipped"] == 4 and s["frames"]["skipped_spec"] == "1-3,10"
    res = farm.run("--no-skip-existing", frames="1-4", concurrency=1)
    assert res.returncode == 0
    assert sorted(farm.journal_frames()).count(1) == 1  # rendered once, by the second run


def test_external_redis_keeps_no_key_of_the_run(farm: Farm, ext_redis: redis.Redis) -> None:
    before = stmpo_keys(ext_redis)
    res = farm.run("--broker", SYSTEM_REDIS, frames="1-12", concurrency=2)
    assert res.returncode == 0, res.stdout + res.stderr
    assert stmpo_keys(ext_redis) - before <= {keys.HISTORY}  # only the comp's frame costs
    assert json.loads(farm.summary.read_text())["embedded_broker"] is False


def test_sigkill_of_orchestrator_leaves_no_key_on_external_redis(
        farm: Farm, ext_redis: redis.Redis) -> None:
    """The orphaned slots delete the run's keys, and none of their threads writes after
    that: a retry reported by a slot whose renderer was killed under it, or its state
    heartbeat, would leave a key with no TTL that nothing deletes."""
    before = stmpo_keys(ext_redis)
    farm.knobs.update(WRITE_TIME="0.2")
    proc = farm.start_rendering("--broker", SYSTEM_REDIS, frames="1-40",
                                frame_cost="0.05")
    proc.kill()
    proc.communicate(timeout=10)
    assert not farm.leftovers(timeout=5)
    time.sleep(1.0)  # anything a dying slot wrote late has landed by now
    left = stmpo_keys(ext_redis) - before
    assert not left, {k: ext_redis.ttl(k) for k in left}


def test_two_runs_on_one_redis_do_not_cross(tmp_path: Path, ext_redis: redis.Redis) -> None:
    a, b = Farm(tmp_path / "a"), Farm(tmp_path / "b")
    try:
        before = stmpo_keys(ext_redis)
        url = ["--broker", SYSTEM_REDIS]
        pa = a.start(*url, frames="1-16", concurrency=2)
        pb = b.start(*url, frames="101-116", concurrency=2)
        pa.communicate(timeout=90)
        pb.communicate(timeout=90)
        assert pa.returncode == 0 and pb.returncode == 0
        assert a.frames_on_disk() == list(range(1, 17))
        assert b.frames_on_disk() == list(range(101, 117))
        assert sorted(a.journal_frames()) == list(range(1, 17))
        assert sorted(b.journal_frames()) == list(range(101, 117))
        assert a.load_summary()["queue"] != b.load_summary()["queue"]
        assert stmpo_keys(ext_redis) - before <= {keys.HISTORY}
    finally:
        for f in (a, b):
            for p in tagged(f.tag):
                p.kill()


def test_adaptive_steals_a_heavy_tail_and_renders_each_frame_once(farm: Farm) -> None:
    farm.knobs.update(HEAVY="1-20x8", FRAME_COST="0.05", STARTUP="0.3")
    res = farm.run("--schedule", "adaptive", "--launch-cost", "0.3", frames="1-40",
                   concurrency=2)
    assert res.returncode == 0, res.stdout + res.stderr
    assert farm.frames_on_disk() == list(range(1, 41)) and not bad_files(farm)
    rendered = farm.journal_frames()
    s = farm.load_summary()
    # every frame once, but for the frame right after a cut: a victim on a machine too
    # busy to stop its renderer in time may finish that one too (whole either way)
    cuts = {c["end"] + 1 for c in s["chunks"] if c.get("stolen_by")}
    assert sorted(set(rendered)) == list(range(1, 41))
    assert all(rendered.count(f) == 1 or (f in cuts and rendered.count(f) == 2)
               for f in set(rendered)), ("every frame once", sorted(rendered), cuts)
    victim = s["chunks"][0]
    assert victim["stolen_by"], s["chunks"]
    assert victim["end"] < 20  # its tail went to the idle slot
    thieves = [c for c in s["chunks"] if c["index"] in victim["stolen_by"]]
    assert all(c["status"] == "done" and c["start"] > victim["end"] for c in thieves)
    assert farm.launches() == len([c for c in s["chunks"] if c["status"] == "done"])


@pytest.mark.parametrize("schedule", ["static", "adaptive"])
def test_stepped_frame_spec_renders_only_the_listed_frames(farm: Farm, schedule: str) -> None:
    # An OpenJD range expression with a step: ten frames, never the ones in between
    # (aerender renders contiguous -s/-e spans, so each listed frame is its own span).
    res = farm.run("--schedule", schedule, frames="1-20:2", concurrency=2)
    assert res.returncode == 0, res.stdout + res.stderr
    listed = list(range(1, 21, 2))
    assert farm.frames_on_disk() == listed
    assert sorted(farm.journal_frames()) == listed
    assert farm.load_summary()["frames"]["rendered"] == 10
    assert not farm.leftovers()


def test_a_steal_under_mfr_with_out_of_order_slow_writes_leaves_every_frame_whole(
        farm: Farm) -> None:
    """The same steal with MFR as After Effects does it: frames finish out of order and
    each is written in place over a while. The victim is stopped only once every frame up
    to its new end is on disk, so nothing it had half-written is left or accepted."""
    from stmpo_celery.plan._formats import bytes_reader, frame_problem

    farm.knobs.update(HEAVY="1-20x8", FRAME_COST="0.05", STARTUP="0.3", MFR_SHUFFLE="1",
                      WRITE_TIME="0.03")
    res = farm.run("--mfr", "--schedule", "adaptive", "--launch-cost", "0.3",
                   frames="1-40", concurrency=2)
    assert res.returncode == 0, res.stdout + res.stderr
    assert farm.load_summary()["chunks"][0]["stolen_by"], "no steal: the test tests nothing"
    assert farm.frames_on_disk() == list(range(1, 41))
    for path in farm.out.glob("shot_*.png"):
        data = path.read_bytes()
        assert frame_problem(str(path), len(data), bytes_reader(data)) is None, path
    assert not farm.leftovers()
