"""Never accept a bad frame, never destroy a good one: partial writes, a launcher dying
under its renderer, steals during stalls, two runs on one output, a full log folder.
Real processes, killed for real; the simulator writes frames in place like After Effects.
Movies: test_movie_frames.py; renderers orphaned by a run killed outright:
test_orphans.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import Farm, kill_tagged, tagged, wait_for
from framelib import bad_files, journal, mid_write, power_cut

from stmpo_celery.plan import parse_frames

pytestmark = pytest.mark.slow


def test_cancel_mid_write_then_rerun_accepts_no_partial_frame(farm: Farm) -> None:
    farm.knobs.update(WRITE_TIME="1.5", FRAME_COST="0.05")
    proc = farm.start(frames="1-12", concurrency=2)
    try:
        partial = wait_for(lambda: mid_write(farm), timeout=30)
        assert partial, "no frame was ever caught mid-write"
        proc.send_signal(signal.SIGTERM)  # the Deadline cancel
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143, out + err
    assert not farm.leftovers()
    assert bad_files(farm) == [], "the stopped run left half-written frames behind"
    farm.knobs.update(WRITE_TIME="0")
    res = farm.run(frames="1-12", concurrency=2)  # default --skip-existing
    assert res.returncode == 0, res.stdout + res.stderr
    assert bad_files(farm) == [] and farm.frames_on_disk() == list(range(1, 13))


def test_a_second_cancel_still_deletes_half_written_frames_and_writes_the_summary(
        farm: Farm) -> None:
    """A second Ctrl-C forces the exit at once, but not past what every cancel leaves: no
    half-written frame where a compositor could take it, and a summary that says so."""
    farm.knobs.update(WRITE_TIME="1.5", FRAME_COST="0.05", IGNORE_SIGTERM="1")
    proc = subprocess.Popen(farm.argv(frames="1-12", concurrency=2), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=farm.env(),
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        partial = wait_for(lambda: mid_write(farm), timeout=30)
        assert partial, "no frame was ever caught mid-write"
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, twice: the terminal's whole group
        time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert bad_files(farm) == [], "the forced exit left half-written frames behind"
    summary = farm.load_summary()
    assert summary["status"] == "cancelled" and summary["exit_code"] == 130
    rendered = summary["frames"]["rendered_spec"]
    assert set(parse_frames(rendered) if rendered else []) <= set(farm.frames_on_disk())
    assert not farm.leftovers(timeout=3)


def _iff_caught_mid_write(farm: Farm, concurrency: int) -> tuple[subprocess.Popen[str], Path]:
    """A render of .iff frames (no structural check: only the ledger can tell a partial
    file) caught while a frame is half-written."""
    farm.pattern = str(farm.out / "shot_[####].iff")
    farm.knobs.update(WRITE_TIME="1.5", FRAME_COST="0.05")
    proc = farm.start(frames="1-8", concurrency=concurrency)
    partial = wait_for(lambda: mid_write(farm, "iff"), timeout=30)
    if not partial:
        proc.kill()
        pytest.fail("no frame was ever caught mid-write")
    return proc, partial


def test_sigkill_of_everything_mid_write_leaves_a_ledger_the_next_run_obeys(
        farm: Farm) -> None:
    proc, partial = _iff_caught_mid_write(farm, concurrency=1)
    try:
        power_cut(tagged(farm.tag))
        kill_tagged(farm.tag)
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert not farm.leftovers()
    size = partial.stat().st_size
    assert size > 0, "the kill must leave a partial, non-empty file"
    frame = int(partial.stem.split("_")[-1])
    before = len(journal(farm, "frame"))
    farm.knobs.update(WRITE_TIME="0")
    res = farm.run(frames="1-8", concurrency=1)
    assert res.returncode == 0, res.stdout + res.stderr
    redone = [int(r[0]) for r in journal(farm, "frame")[before:]]
    assert frame in redone, "the half-written frame was trusted"
    assert partial.stat().st_size > size
    assert "half-written" in res.stdout


def test_sigkill_of_the_orchestrator_alone_leaves_no_half_written_frame(farm: Farm) -> None:
    """The slots outlive it by a moment: they kill their renderers and delete what those
    had in flight (.iff: only the ledger can tell a partial file)."""
    proc, partial = _iff_caught_mid_write(farm, concurrency=2)
    try:
        proc.kill()
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert not farm.leftovers()
    assert not partial.exists(), "a frame the renderer was writing was left on disk"
    assert not list((farm.out / ".stmpo").glob("inflight-*")), "ledgers were left behind"


def _renderer_pids(farm: Farm) -> dict[int, float]:
    """renderer pid -> time of its last written frame."""
    last: dict[int, float] = {}
    for _f, pid, t in journal(farm, "frame"):
        last[int(pid)] = max(last.get(int(pid), 0.0), float(t))
    return last


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _assert_one_retry_after(farm: Farm, renderer: int, overlap: str) -> None:
    """One retry launched only after ``renderer`` wrote its last frame; frames 1-20 whole."""
    launches = [float(r[3]) for r in journal(farm, "launch")]
    assert len(launches) == 2
    assert _renderer_pids(farm).get(renderer, 0.0) < launches[1], overlap
    assert bad_files(farm) == [] and farm.frames_on_disk() == list(range(1, 21))
    assert not farm.leftovers()


def test_launcher_dying_while_renderer_holds_the_pipe(farm: Farm) -> None:
    once = farm.tmp / "once"
    once.mkdir()
    farm.knobs.update(ORPHAN_FRAME="3", ONCE_DIR=str(once), FRAME_COST="0.15")
    proc = farm.start("--retries", "1", frames="1-20", concurrency=1)
    try:
        row = wait_for(lambda: journal(farm, "orphan"), timeout=30)
        assert row
        _, pid, t_orphan = row[0]
        assert wait_for(lambda: _gone(int(pid)), timeout=5)
        gone_after = time.time() - float(t_orphan)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert gone_after < 1.0, f"the orphaned renderer lived {gone_after:.2f} s"
    assert proc.returncode == 0, out + err
    _assert_one_retry_after(farm, int(pid), "the retry overlapped a living renderer")


def test_killed_launcher_takes_its_renderer_along_before_the_retry(farm: Farm) -> None:
    farm.knobs.update(FRAME_COST="0.15")
    proc = farm.start("--retries", "1", frames="1-20", concurrency=1)
    try:
        assert wait_for(lambda: len(journal(farm, "frame")) >= 2, timeout=30)
        launcher = next(p for p in tagged(farm.tag) if p.name() == "aerender")
        renderer = next(p for p in tagged(farm.tag) if p.name() == "AfterFX")
        launcher.kill()
        t_kill = time.time()
        assert wait_for(lambda: _gone(renderer.pid), timeout=5)
        gone_after = time.time() - t_kill
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert gone_after < 1.0, f"the renderer outlived its launcher by {gone_after:.2f} s"
    assert proc.returncode == 0, out + err
    _assert_one_retry_after(farm, renderer.pid, "two renderers on one chunk")


def test_stall_in_a_chunk_whose_tail_was_stolen_keeps_every_frame(farm: Farm) -> None:
    once = farm.tmp / "once"
    once.mkdir()
    # chunk 1 (21-40) is quick: its slot steals chunk 0's tail before chunk 0 hangs at 10
    farm.knobs.update(HANG_FRAME="10", ONCE_DIR=str(once), FRAME_COST="0.2",
                      HEAVY="21-40x0.1")
    res = farm.run("--stall-timeout", "2", frames="1-40", concurrency=2)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "stalled" in res.stdout
    chunk0 = next(c for c in farm.load_summary()["chunks"] if c["index"] == 0)
    assert chunk0["stolen_by"], "the scenario needs a steal from the stalled chunk"
    assert farm.frames_on_disk() == list(range(1, 41)) and bad_files(farm) == []
    assert not farm.leftovers()


def _run_id(out: str) -> str:
    match = re.search(r"stmpo: run (\w+) on ", out)
    assert match, out
    return match[1]


def test_second_run_on_a_busy_output_is_refused_naming_the_first(farm: Farm) -> None:
    farm.knobs.update(FRAME_COST="0.25")
    a = farm.start(frames="1-30", concurrency=2)
    try:
        assert wait_for(lambda: journal(farm, "frame"), timeout=30)
        t0 = time.monotonic()
        b = farm.run(frames="25-40", concurrency=2, timeout=30)
        assert time.monotonic() - t0 < 8
        c = farm.run(frames="100-101", concurrency=1, timeout=60)  # other frames: fine
        out, err = a.communicate(timeout=90)
    finally:
        a.kill()
    assert b.returncode == 2, b.stdout + b.stderr
    line = b.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert _run_id(out) in line and f"pid {a.pid}" in line and "25-30" in line
    assert c.returncode == 0, c.stdout + c.stderr
    assert a.returncode == 0, out + err
    # the refused run launched nothing: every launch is A's (1-30) or C's (100-101)
    assert all(int(r[2]) <= 30 or int(r[1]) >= 100 for r in journal(farm, "launch"))
    assert farm.frames_on_disk() == list(range(1, 31)) + [100, 101]
    assert not (farm.out / ".stmpo").exists()  # every run ended: no lock, no ledger


def test_lock_of_a_killed_run_is_reclaimed(farm: Farm) -> None:
    farm.knobs.update(FRAME_COST="0.25")
    a = farm.start(frames="1-30", concurrency=2)
    try:
        assert wait_for(lambda: journal(farm, "frame"), timeout=30)
        assert list((farm.out / ".stmpo").glob("run-*.lock"))
        a.kill()  # SIGKILL: no cleanup of its own
        a.communicate(timeout=10)
    finally:
        a.kill()
    assert not farm.leftovers()
    res = farm.run(frames="1-30", concurrency=2)
    assert res.returncode == 0, res.stdout + res.stderr
    assert farm.frames_on_disk() == list(range(1, 31)) and bad_files(farm) == []
    assert not (farm.out / ".stmpo").exists()


def test_full_log_folder_fails_the_chunk_cleanly(farm: Farm) -> None:
    farm.logs.mkdir()
    for slot in (0, 1):  # the first chunk's log is on a full device, wherever it runs
        os.symlink("/dev/full", farm.logs / f"chunk0000-f1-5-slot{slot}.log")
    try:
        res = farm.run("--no-fail-fast", "--schedule", "fixed", "--chunk-size", "5",
                       frames="1-10", concurrency=2, timeout=40)
    except subprocess.TimeoutExpired:
        pytest.fail("the run never ended")
    assert res.returncode == 1, res.stdout + res.stderr
    last = [ln for ln in res.stdout.splitlines() if ln.startswith("stmpo: FAILED")][-1]
    assert "No space left on device" in last and "--log-dir" in last
    assert "Traceback" not in res.stdout + res.stderr
    assert set(range(6, 11)) <= set(farm.frames_on_disk())
    assert not farm.leftovers()


def test_final_verification_rejects_a_frame_cut_short(farm: Farm) -> None:
    farm.knobs.update(TRUNCATE_FRAME="4")  # aerender reports it done, exit 0, file cut short
    res = farm.run("--retries", "0", frames="1-6", concurrency=1)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "missing on disk (or incomplete)" in res.stdout
    assert "stmpo:   log: " in res.stdout  # the launch that should have written it
    assert farm.load_summary()["frames"]["missing_spec"] == "4"
    # the cut-short file is gone: nothing downstream can take it for frame 4
    assert 4 not in farm.frames_on_disk() and bad_files(farm) == []
    assert "not whole" in res.stdout
    assert not farm.leftovers()


def test_slot_dying_after_its_tail_was_stolen_never_redoes_the_thiefs_frames(
        farm: Farm) -> None:
    # chunk 1 (21-40) is quick; its slot steals the tail of chunk 0 (1-20, 0.3 s a frame)
    farm.knobs.update(FRAME_COST="0.3", HEAVY="21-40x0.05")
    proc = farm.start(frames="1-40", concurrency=2)
    try:
        def victim_renderer() -> int | None:
            rows = journal(farm, "frame")
            first = next((int(pid) for f, pid, _ in rows if f == "1"), None)
            thief = {int(f) for f, pid, _ in rows if int(f) <= 20 and int(pid) != first}
            return first if first is not None and len(thief) >= 2 else None

        pid = wait_for(victim_renderer, timeout=30)
        assert pid, "no steal from chunk 0 happened"
        slot = next(p for p in psutil.Process(pid).parents() if p.name().startswith("stmpo-slot"))
        slot.kill()
        out, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 0, out + err
    assert "died" in out
    assert farm.frames_on_disk() == list(range(1, 41)) and bad_files(farm) == []
    stolen = {int(f) for f, p, _ in journal(farm, "frame") if int(f) <= 20 and int(p) != pid}
    counts = {f: [int(r[0]) for r in journal(farm, "frame")].count(f) for f in stolen}
    thief_only = [f for f in stolen if f > max(int(r[0]) for r in journal(farm, "frame")
                                               if int(r[1]) == pid)]
    assert all(counts[f] == 1 for f in thief_only), counts
    assert not farm.leftovers()


def _overlap(farm: Farm) -> int | None:
    """A frame that one renderer has begun writing after another finished it."""
    done: dict[str, str] = {}
    for line in farm.journal.read_text().splitlines() if farm.journal.exists() else []:
        kind, *row = line.split()
        if kind == "frame":
            done.setdefault(row[0], row[1])
        elif kind == "begin" and row[0] in done and done[row[0]] != row[1]:
            return int(row[0])
    return None


def test_a_cut_renderer_writing_over_a_thiefs_frame_leaves_nothing_false(farm: Farm) -> None:
    """MFR renders ahead: a victim cut at a steal goes on into the thief's frames until its
    renderer dies, rewriting frames the thief has finished. Cancelled in the middle of such
    a rewrite, the run must not count that frame, and a resume must not skip it: a
    Softimage PIC cut short is not empty, and nothing in it says where it should end."""
    from stmpo_celery.aerender._fakeframes import frame_bytes

    farm.knobs.update(FRAME_COST="0.05", MFR_SHUFFLE="1", HEAVY="35-60x5",
                      WRITE_TIME="0.3", STARTUP="0.3")
    out = str(farm.out / "shot_[####].pic")
    args = ("--mfr", "--launch-cost", "0.3", "--no-history")
    proc = farm.start(*args, frames="1-60", output=out)
    try:
        clobbered = wait_for(lambda: _overlap(farm), timeout=60, step=0.02)
        assert clobbered, "no renderer wrote over another's frame: the scenario did not happen"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stdout + stderr
    path = Path(out.replace("[####]", f"{clobbered:04d}"))
    counted = farm.load_summary()["frames"]
    rendered = parse_frames(counted["rendered_spec"]) if counted["rendered"] else []
    for f in rendered:  # what the run counted is exactly the finished file
        p = Path(out.replace("[####]", f"{f:04d}"))
        assert p.read_bytes() == frame_bytes(str(p), f), f"frame {f} counted but not whole"
    assert clobbered not in rendered or path.read_bytes() == frame_bytes(str(path), clobbered)
    farm.knobs.update(HEAVY="", WRITE_TIME="0")
    res = farm.run(*args, frames="1-60", output=out)  # --skip-existing: the resume
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    for f in range(1, 61):
        p = Path(out.replace("[####]", f"{f:04d}"))
        assert p.read_bytes() == frame_bytes(str(p), f), f"frame {f} is not whole after resume"
    assert not farm.leftovers()
