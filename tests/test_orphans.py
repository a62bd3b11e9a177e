"""Renderers left running by a run killed outright (`pkill -9 -f 'stmpo render'`, a power
cut of the session): the run's warden stops them, deletes their half-written frames and
removes the run folder; killed too, the next render on the host does it before it claims
its output. Real processes, killed for real."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest
from conftest import Farm, tagged, wait_for
from framelib import bad_files, power_cut

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def own_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run folders in a temp dir of the test's own: every render reaps the dead run
    folders of its temp dir (and what their runs left running), so a render of a test
    running alongside would stop these orphans before the render meant to."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # what Farm.env passes to the renders


def _warden(farm: Farm) -> list[psutil.Process]:
    return [p for p in tagged(farm.tag) if "orchestrator._warden" in " ".join(p.cmdline())]


def test_renderers_left_by_a_run_killed_with_its_slots_are_stopped_by_its_warden(
        farm: Farm) -> None:
    """`pkill -9 -f 'stmpo render'` kills the orchestrator and its slots (they share its
    command line) but not aerender and its renderer. The run's warden stops them, deletes
    the frames they had half-written and removes the run folder (its spec holds the
    broker URL), with no other stmpo command run."""
    farm.knobs.update(WRITE_TIME="0.3")
    proc = farm.start_rendering(frame_cost="0.3", frames="1-40", concurrency=2)
    try:
        stmpo = [p for p in tagged(farm.tag)
                 if p.pid == proc.pid or p.name().startswith("stmpo-slot")]
        assert len(stmpo) == 3 and len(_warden(farm)) == 1, [
            p.name() for p in tagged(farm.tag)]
        run_dirs = [Path(p.environ()["STMPO_RUN_DIR"]) for p in tagged(farm.tag)
                    if "STMPO_RUN_DIR" in p.environ()]
        power_cut(stmpo)
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    time.sleep(0.3)
    renderers = [p for p in tagged(farm.tag) if p.is_running() and p not in _warden(farm)]
    assert renderers, "the renderers must outlive their slots for this test to mean anything"
    assert farm.leftovers(timeout=10) == [], "the warden left processes running"
    assert run_dirs and not any(d.exists() for d in run_dirs)
    assert bad_files(farm) == [], "half-written frames were left where they could be taken"
    assert not list((farm.out / ".stmpo").glob("inflight-*"))
    assert not list((farm.out / ".stmpo").glob("run-*.lock")), "its output lock was left"


def test_the_warden_waits_out_another_reaper_holding_the_run_folder(farm: Farm) -> None:
    """Another run starting on the host reaps dead run folders too, and holds the dead
    run's lock while it does: the warden, waking then, must not take the run for alive and
    give up — it waits, then deletes the half-written frames and the ledgers."""
    import fcntl

    farm.knobs.update(WRITE_TIME="0.3")
    proc = farm.start_rendering(frame_cost="0.3", frames="1-40", concurrency=2)
    try:
        stmpo = [p for p in tagged(farm.tag)
                 if p.pid == proc.pid or p.name().startswith("stmpo-slot")]
        run_dir = next(Path(p.environ()["STMPO_RUN_DIR"]) for p in tagged(farm.tag)
                       if "STMPO_RUN_DIR" in p.environ())
        power_cut(stmpo)
        time.sleep(0.5)
        with open(run_dir / "alive.lock", "a+b") as held:  # the other reaper, for 1.5 s
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)
            time.sleep(1.5)
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert farm.leftovers(timeout=15) == [], "the warden gave up and left renderers running"
    assert not run_dir.exists()
    assert bad_files(farm) == [], "half-written frames were left where they could be taken"
    assert not list((farm.out / ".stmpo").glob("inflight-*"))


def test_renderers_left_by_a_run_killed_with_its_slots_are_stopped_by_the_next(
        farm: Farm) -> None:
    """Everything stmpo started killed at once but the renderers (its warden too): they
    render on as orphans. The next run on the host stops them before it claims the output
    they may still be writing."""
    proc = farm.start_rendering(frame_cost="0.4", frames="1-40", concurrency=2)
    try:
        stmpo = [p for p in tagged(farm.tag)
                 if p.pid == proc.pid or p.name().startswith("stmpo-slot")] + _warden(farm)
        assert len(stmpo) == 4, [p.name() for p in tagged(farm.tag)]
        power_cut(stmpo)
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    time.sleep(0.5)
    orphans = [p for p in tagged(farm.tag) if p.is_running()]
    assert orphans, "the renderers must outlive their slots for this test to mean anything"

    def alive() -> list[psutil.Process]:
        return [p for p in orphans if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    launches = farm.launches()
    second = farm.start(frames="1-40", concurrency=2)
    try:  # by its first launch (the orphans have seconds of frames left) they are gone
        assert wait_for(lambda: farm.launches() > launches, timeout=30)
        assert not alive(), [p.name() for p in alive()]
        out, err = second.communicate(timeout=90)
    finally:
        second.kill()
    assert second.returncode == 0, out + err
    assert farm.frames_on_disk() == list(range(1, 41)) and not bad_files(farm)
    assert not farm.leftovers()


def test_portable_mode_embedded_redis_left_by_a_power_cut_is_stopped_by_the_next(
        farm: Farm) -> None:
    """macOS (no parent-death signal, no Job Object): the embedded Redis runs under a
    guard process; killed together with the guard and the orchestrator, it is left
    running. The next render finds it by its working folder, the dead run's folder."""
    from conftest import orphan_redis

    env = farm.env(STMPO_START_METHOD="spawn")
    proc = farm.start_rendering(frame_cost="0.3", frames="1-20", env=env)
    try:
        power_cut(tagged(farm.tag))
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    left = wait_for(lambda: orphan_redis(env["TMPDIR"]), timeout=5)
    assert left, "the Redis must outlive its guard for this test to mean anything"
    res = farm.run(frames="1-20", concurrency=2, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not [p for p in left if _alive(p)]
    assert not farm.leftovers()


def _alive(p: psutil.Process) -> bool:
    """Running and not a zombie (a process that ends while it is looked at is gone)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
