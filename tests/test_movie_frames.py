"""A movie is one file for every frame: it counts as rendered only when this run wrote it
whole. An older movie of that name, one After Effects ended early, one a failure or a
cancel cut short — none is reported rendered, and what this run cut short is deleted.
Stand-ins of the tests' own play After Effects' habits the simulator has no knob for."""

from __future__ import annotations

import re
import signal
import sys

import pytest
from conftest import FAKE, Farm, wait_for

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("how", ["failed", "cancelled"])
def test_a_movie_the_run_did_not_finish_is_deleted(farm: Farm, how: str) -> None:
    movie = farm.out / "shot.mov"
    farm.out.mkdir(exist_ok=True)
    farm.knobs.update(FRAME_COST="0.1")
    if how == "failed":
        farm.knobs.update(FAIL_FRAME="5")  # the renderer stops mid-movie, exit 0
        res = farm.run("--retries", "0", frames="1-12", output=str(movie), concurrency=1)
        out, code = res.stdout, res.returncode
    else:
        proc = farm.start(frames="1-40", output=str(movie), concurrency=1)
        try:
            assert wait_for(lambda: movie.exists() and movie.stat().st_size > 40, timeout=30)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        finally:
            proc.kill()
        code = proc.returncode
    assert code == (1 if how == "failed" else 143), out
    assert not movie.exists(), "a movie cut short was left where it could be taken as whole"
    if how == "failed":
        assert "missing: the movie (frames 1-12); running again renders it whole" in out
    assert not farm.leftovers()


def _stand_in(farm: Farm, name: str, body: str) -> str:
    """An After Effects stand-in of the test's own: a Python script run as aerender."""
    path = farm.tmp / name
    path.write_text(f"#!{sys.executable}\nimport os, sys\nFAKE = {FAKE!r}\n{body}")
    path.chmod(0o755)
    return str(path)


def test_a_movie_this_run_did_not_write_is_not_reported_rendered(farm: Farm) -> None:
    """aerender exits 0 without writing the movie; last week's movie of that name is there:
    the render fails, and the old file is left as it was (it is not this run's)."""
    movie = farm.out / "shot.mov"
    farm.out.mkdir(exist_ok=True)
    movie.write_text("last week's movie")
    silent = _stand_in(farm, "silent-aerender", (
        'print("aerender version 24.6x1")\n'
        'print("PROGRESS: Launching After Effects...")\n'
        'print("PROGRESS: ...After Effects successfully launched")\n'))
    res = farm.run("--retries", "0", "--aerender", silent, frames="1-12", output=str(movie),
                   concurrency=1)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "reported 0 of 12 frame(s) and did not write the movie" in res.stdout
    assert farm.load_summary()["status"] == "failed"
    assert movie.read_text() == "last week's movie"
    assert not farm.leftovers()


def test_a_movie_after_effects_ended_early_is_deleted(farm: Farm) -> None:
    """AE renders to the comp's end when -e is past it, and exits 0: a movie of 10 frames
    for 24 asked is not a render of 24 frames."""
    movie = farm.out / "shot.mov"
    short = _stand_in(farm, "short-aerender", (
        'args = sys.argv[1:]\nargs[args.index("-e") + 1] = "10"\n'
        'os.execv(FAKE, [FAKE, *args])\n'))
    farm.knobs.update(FRAME_COST="0.02")
    res = farm.run("--retries", "0", "--aerender", short, frames="1-24", output=str(movie),
                   concurrency=1)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "reported 10 of 24 frame(s) and rewrote the movie" in res.stdout
    assert not movie.exists(), "a movie cut short was left where it could be taken as whole"
    assert not farm.leftovers()


def test_a_movie_retried_after_a_crash_is_rendered_whole_again(farm: Farm) -> None:
    once = farm.tmp / "once"
    once.mkdir()
    movie = farm.out / "shot.mov"
    farm.knobs.update(FRAME_COST="0.02", CRASH_FRAME="15", ONCE_DIR=str(once))
    res = farm.run(frames="1-30", output=str(movie), concurrency=1)
    assert res.returncode == 0, res.stdout + res.stderr
    # the retry rewrote the movie from its first frame, not just the frames after the crash
    body = movie.read_bytes()  # a header line, then each frame's record (padded)
    assert body.startswith(b"stmpo fake movie: complete")
    assert [int(f) for f in re.findall(rb"frame (\d+)\n", body)] == list(range(1, 31))
    assert not farm.leftovers()
