"""Fatal and benign aerender lines, end to end: the simulator prints them as After Effects
does (exit 0 included), `stmpo render` must fail or pass the chunk accordingly."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import Farm

from stmpo_celery.aerender._simknobs import FAILURES

pytestmark = pytest.mark.slow


def _failed_line(stdout: str) -> str:
    return [ln for ln in stdout.splitlines() if ln.startswith("stmpo: FAILED")][-1]


@pytest.mark.parametrize("failure", ["licence", "serial", "missing-effect", "read-source"])
def test_fatal_line_on_exit_0_fails_the_run(farm: Farm, failure: str) -> None:
    farm.knobs.update(FAILURE=failure)
    res = farm.run(frames="1-4", concurrency=1)
    assert res.returncode == 1, res.stdout + res.stderr
    line = _failed_line(res.stdout)
    text = FAILURES[failure][0]
    assert text.split(":")[-1].strip()[:30] in line, line
    assert farm.launches() == 1  # a fatal line is not retried
    assert not farm.leftovers()


def test_missing_effects_can_be_ignored(farm: Farm) -> None:
    farm.knobs.update(FAILURE="missing-deps")
    res = farm.run("--ignore-missing-effects", frames="1-4", concurrency=1)
    assert res.returncode == 0, res.stdout + res.stderr
    assert farm.frames_on_disk() == [1, 2, 3, 4]
    assert "missing dependencies" in res.stdout  # still said, as a warning


def test_auto_save_error_is_a_warning(farm: Farm) -> None:
    farm.knobs.update(FAILURE="autosave")
    res = farm.run(frames="1-4", concurrency=1)
    assert res.returncode == 0, res.stdout + res.stderr
    assert farm.frames_on_disk() == [1, 2, 3, 4]


def test_openmp_clash_is_avoided_by_the_environment(farm: Farm) -> None:
    # The simulated renderer aborts with "OMP: Error #15" unless KMP_DUPLICATE_LIB_OK=TRUE,
    # as After Effects does when a plug-in brings a second OpenMP runtime.
    farm.knobs.update(OMP_CONFLICT="1")
    env = farm.env()
    env.pop("KMP_DUPLICATE_LIB_OK", None)
    res = farm.run(frames="1-4", concurrency=1, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert farm.frames_on_disk() == [1, 2, 3, 4]
    assert "OMP: Error" not in res.stdout


def test_mfr_frames_are_attributed_by_timecode_when_a_chunk_crashes(farm: Farm) -> None:
    # MFR finishes frames out of order and the (N) counts frames done: attributing by N
    # would call finished frames suspect (deleted, rendered twice) and trust others.
    once = farm.tmp / "once"
    once.mkdir()
    farm.knobs.update(MFR_SHUFFLE="1", NUMBERING="count", CRASH_FRAME="5",
                      ONCE_DIR=str(once))
    res = farm.run("--mfr", "--retries", "1", "--schedule", "static", frames="1-12",
                   concurrency=1)
    assert res.returncode == 0, res.stdout + res.stderr
    assert farm.frames_on_disk() == list(range(1, 13))
    counts = Counter(farm.journal_frames())
    assert all(counts[f] == 1 for f in range(1, 13)), counts  # no good frame rendered twice
    assert farm.launches() == 3  # the crash, then the retry of 5 and of 8-12


def test_a_field_rendered_movie_is_counted_and_kept(farm: Farm) -> None:
    """With field rendering on, After Effects prints ``(12U)``: those frame lines were not
    recognised, so a movie that rendered well was failed for reporting no frame, and the
    finished movie deleted."""
    farm.knobs.update(FIELDS="U")
    res = farm.run(frames="1-4", concurrency=1, output=str(farm.out / "shot.mov"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert (farm.out / "shot.mov").read_bytes().startswith(b"stmpo fake movie: complete")
    assert farm.launches() == 1


def test_a_host_wide_concurrency_renders_a_movie_with_one_process(farm: Farm) -> None:
    """``STMPO_CONCURRENCY`` (or a profile's ``concurrency``) is a host's setting for
    every render: a movie job on that host was refused (exit 2) as if ``--concurrency``
    had been typed, so every movie of a farm whose hosts set it failed."""
    env = {**farm.env(), "STMPO_CONCURRENCY": "4"}
    res = farm.run(frames="1-4", concurrency=None, output=str(farm.out / "shot.mov"), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (farm.out / "shot.mov").read_bytes().startswith(b"stmpo fake movie: complete")
    assert farm.launches() == 1
