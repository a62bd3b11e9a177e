"""What Deadline's monitor is told is true at every moment: ``openjd_progress`` never says
100 before every frame was checked whole at the end, a frame sent back to render again is
no longer counted, the status says what the run is doing, and a directive is one short
line. In process (a :class:`Run` fed events) and with real renders."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import Farm, tagged, wait_for
from test_orchestrator_inprocess import _stolen_run

from stmpo_celery.broker import events
from stmpo_celery.orchestrator._funnel import LogFunnel
from stmpo_celery.orchestrator._progress import Progress, percent
from stmpo_celery.text import DIRECTIVE_MAX, directive


def _directives(text: str, name: str) -> list[str]:
    return [ln.split(": ", 1)[1] for ln in text.splitlines() if ln.startswith(name + ": ")]


def test_progress_rounds_down_and_says_100_only_when_confirmed() -> None:
    assert percent(1999, 2000) == "99.9" and percent(23990, 24000) == "99.9"
    assert percent(1, 3) == "33.3" and percent(2, 3) == "66.6"
    out = io.StringIO()
    p = Progress(LogFunnel(None, out), 2000, tty=False)
    p.set_done(2000)  # every frame counted: still to be checked on disk at the end
    assert _directives(out.getvalue(), "openjd_progress") == ["99.9"]
    assert _directives(out.getvalue(), "openjd_status")[-1].endswith("checking them on disk")
    p.confirm("Done")
    assert _directives(out.getvalue(), "openjd_progress")[-1] == "100.0"


def test_a_counted_frame_sent_back_is_uncounted_and_the_status_says_why(
        tmp_path: Path) -> None:
    """A frame counted whole, then deleted (by hand, a cleanup script) or rewritten by a
    stopped renderer: the slot's end-of-chunk check sends it back. Until now the run went
    on counting it: Deadline read 100% while it was missing, then saw the count drop."""
    from stmpo_celery.aerender._fakeframes import frame_bytes

    r = _stolen_run(tmp_path, "png")
    r.progress = Progress(r.funnel, 10, tty=False)
    try:
        r._on_event(events.ChunkStart(slot=0, index=0, start=1, end=10, frames="1-10"))
        for f in range(1, 11):
            (tmp_path / f"f_{f:02d}.png").write_bytes(frame_bytes("x.png", f))
            r._on_event(events.Frame(slot=0, index=0, frame=f, done=f))
        (tmp_path / "f_05.png").unlink()
        r._on_event(events.ChunkRetry(slot=0, index=0, start=1, end=10, frames="1-10",
                                      attempts=1, redo=[5], reason="1 frame(s) missing"))
        said = r.stdout.getvalue()  # type: ignore[attr-defined]
        assert 5 not in r.verified and 5 not in r.done_frames
        assert _directives(said, "openjd_progress")[-2:] == ["99.9", "90.0"], said
        assert "100.0" not in _directives(said, "openjd_progress")
        status = _directives(said, "openjd_status")[-1]
        assert status.startswith("Rendered 9 of 10") and "retrying 1 frame(s) of chunk 0" in status
        r._on_event(events.ChunkStart(slot=0, index=0, start=5, end=5, frames="5", attempt=1))
        (tmp_path / "f_05.png").write_bytes(frame_bytes("x.png", 5))
        r._on_event(events.Frame(slot=0, index=0, frame=5, done=1))
        status = _directives(r.stdout.getvalue(), "openjd_status")[-1]  # type: ignore[attr-defined]
        assert status == "Rendered 10 of 10 frames, checking them on disk", status
    finally:
        shutil.rmtree(r.run_dir, ignore_errors=True)


def test_a_slots_frames_on_the_bar_follow_a_steal() -> None:
    p = Progress(LogFunnel(None, io.StringIO()), 100, tty=False)
    cut = SimpleNamespace(slot=0, status="running", frames="1-50", frames_done=28,
                          start=1, end=28)
    p.track([cut])
    assert p.slots == {0: "28/28"}


def test_a_directive_is_one_line_of_bounded_length() -> None:
    line = directive("openjd_fail", "bad --frames item " + "9" * 20000 + "\nopenjd_progress: 100")
    assert "\n" not in line and len(line) == len("openjd_fail: ") + DIRECTIVE_MAX
    assert line.endswith("…")


@pytest.mark.slow
def test_a_stale_frame_aerender_did_not_write_is_not_taken_for_rendered(farm: Farm) -> None:
    """``--no-skip-existing`` over an earlier render: a renderer that reports a frame but
    never writes it left the earlier file, which was taken for this render's (exit 0,
    "OK: 6 of 6"): a re-render after fixing the comp delivered an old frame as new."""
    farm.knobs.update(FRAME_COST="0.01")
    assert farm.run(frames="1-6", concurrency=1).returncode == 0
    old = Path(farm.pattern.replace("[####]", "0004"))
    before = (old.read_bytes(), old.stat().st_mtime_ns)
    time.sleep(0.05)
    farm.knobs.update(NO_WRITE_FRAME="4")
    res = farm.run("--no-skip-existing", "--retries", "0", frames="1-6", concurrency=1)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "files from before the launch it did not write" in res.stdout
    # run again as it says, it renders that frame (--skip-existing would keep the old one)
    resume = next(ln for ln in res.stdout.splitlines() if ln.startswith("stmpo:   resume: "))
    assert "--skip-existing" not in resume and resume.endswith("--no-skip-existing "
                                                               "--retries 0 --frames 4"), resume
    assert farm.load_summary()["frames"]["missing_spec"] == "4"
    assert "100.0" not in _directives(res.stdout, "openjd_progress")
    assert (old.read_bytes(), old.stat().st_mtime_ns) == before  # the user's file: kept
    assert not farm.leftovers()


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["static", "adaptive"])
def test_no_fail_fast_renders_the_rest_when_a_slot_dies_past_its_retries(
        farm: Farm, schedule: str) -> None:
    """A slot killed with its chunk's retries used up stopped the whole run, under
    ``--no-fail-fast`` too: the healthy slot's frames were thrown away. (Adaptive: the
    dead chunk must not hold the spare tasks waiting for a steal.)"""
    farm.knobs.update(FRAME_COST="0.15")
    proc = farm.start("--retries", "0", "--no-fail-fast", "--schedule", schedule,
                      frames="1-20", concurrency=2)
    try:
        assert wait_for(lambda: len(farm.journal_frames()) >= 3, timeout=30)
        busy = next(p for p in tagged(farm.tag) if p.name().startswith("stmpo-slot"))
        busy.kill()
        out, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 1, out + err
    assert "continuing (--no-fail-fast)" in out and "the run stopped" not in out
    s = farm.load_summary()
    # one chunk failed (the killed slot's); the healthy slot's chunks were all rendered
    # (adaptive: a loaded host may let it finish its block and steal before the kill)
    statuses = [c["status"] for c in s["chunks"]]
    assert statuses.count("failed") == 1 and "done" in statuses, s["chunks"]
    assert set(statuses) == {"done", "failed"}, s["chunks"]
    for done in (c for c in s["chunks"] if c["status"] == "done"):
        first, last = (int(x) for x in done["frames"].split("-"))
        assert set(range(first, last + 1)) <= set(farm.frames_on_disk())
    assert "1 chunk(s) failed, rendering the rest" in out
    assert not farm.leftovers()


@pytest.mark.slow
def test_a_task_already_whole_says_done_at_100(farm: Farm) -> None:
    farm.knobs.update(FRAME_COST="0.01")
    assert farm.run(frames="1-4", concurrency=1).returncode == 0
    res = farm.run(frames="1-4", concurrency=2)
    assert res.returncode == 0, res.stdout + res.stderr
    assert _directives(res.stdout, "openjd_progress") == ["100.0"]
    assert _directives(res.stdout, "openjd_status")[-1] == (
        "Done: 4 frame(s) whole on disk (4 were already)")
    assert "capped to" not in res.stdout and "plan:" not in res.stdout  # nothing to plan


def test_the_final_check_takes_a_file_from_before_the_run_for_missing(tmp_path: Path) -> None:
    """Whatever a slot said: a frame this run was to render whose file is still the one
    that was there before it is not on disk as this render wrote it."""
    from stmpo_celery.aerender import signatures
    from stmpo_celery.aerender._fakeframes import frame_bytes
    from stmpo_celery.orchestrator._ending import missing_now

    r = _stolen_run(tmp_path, "png")
    try:
        for f in range(1, 11):
            (tmp_path / f"f_{f:02d}.png").write_bytes(frame_bytes("x.png", f))
        r.prep.before = signatures(r.prep.pattern, r.prep.to_render)
        for f in range(1, 11):
            if f != 4:  # rendered again: a new file
                (tmp_path / f"f_{f:02d}.png").unlink()
                (tmp_path / f"f_{f:02d}.png").write_bytes(frame_bytes("x.png", f))
        assert missing_now(r) == [4]
    finally:
        shutil.rmtree(r.run_dir, ignore_errors=True)
