"""Pure logic: frame specs, output patterns, chunk plans, aerender command lines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stmpo_celery.aerender._argv import RenderTarget, build_argv, resolve_aerender
from stmpo_celery.errors import BadInput, EnvironmentProblem, ExitCode
from stmpo_celery.plan._chunks import guided_sizes, makespan_bound, plan_chunks
from stmpo_celery.plan._frames import format_frames, parse_frames, runs
from stmpo_celery.plan._pattern import parse_output


@pytest.mark.parametrize("spec,expected", [
    ("1-5", [1, 2, 3, 4, 5]),
    ("7", [7]),
    ("1-3,10-11", [1, 2, 3, 10, 11]),
    ("-3--1", [-3, -2, -1]),
    ("-2-1", [-2, -1, 0, 1]),
    (" 1 - 3 , 2-4 ", [1, 2, 3, 4]),
    # OpenJD range expressions with steps, as Deadline Cloud writes them
    ("1-20:2", [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]),
    ("1,3,7-20:2", [1, 3, 7, 9, 11, 13, 15, 17, 19]),
    ("1-100:25", [1, 26, 51, 76]),
    ("-10--1:3", [-10, -7, -4, -1]),
    ("10-1:-3", [1, 4, 7, 10]),
])
def test_parse_frames(spec: str, expected: list[int]) -> None:
    assert parse_frames(spec) == expected


@pytest.mark.parametrize("spec,needle", [
    ("", "empty"), ("   ", "empty"), ("1-", "not a frame"), ("a-b", "not a frame"),
    ("10-1", "ends before it starts"), ("1,,2", "empty item"), ("1-2x", "not a frame"),
    ("0-99999999", "more than"), ("1-20:0", "not a frame"), ("1-20:x", "not a frame"),
    ("1-10:-1", "not a frame"), ("0-999999,0-999999", "more than"),
])
def test_parse_frames_rejects(spec: str, needle: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_frames(spec)
    assert needle in info.value.message
    assert "\n" not in info.value.message
    assert info.value.code == ExitCode.BAD_INPUT


def test_runs_and_format_roundtrip() -> None:
    frames = [1, 2, 3, 7, 9, 10]
    assert runs(frames) == [(1, 3), (7, 7), (9, 10)]
    assert parse_frames(format_frames(frames)) == frames


def test_output_pattern_paths() -> None:
    p = parse_output("/r/shot_[#####].png")
    assert p.is_sequence
    assert p.path_for(7) == "/r/shot_00007.png"
    assert p.path_for(-3) == "/r/shot_-0003.png"
    movie = parse_output("/r/shot.mov")
    assert not movie.is_sequence and movie.path_for(5) == "/r/shot.mov"
    for bad in ("", "/r/a_[##]_[##].png", "/r/a_[#x#].png"):
        with pytest.raises(BadInput):
            parse_output(bad)


def test_static_plan_is_n_equal_blocks() -> None:
    assert plan_chunks(list(range(1, 241)), 4, "static") == [
        (1, 60), (61, 120), (121, 180), (181, 240)]


def test_fixed_plan_and_gaps_split_chunks() -> None:
    frames = [*range(1, 11), *range(20, 26)]
    assert plan_chunks(frames, 2, "fixed", 4) == [
        (1, 4), (5, 8), (9, 10), (20, 23), (24, 25)]


def test_guided_sizes_decrease_and_cover() -> None:
    sizes = guided_sizes(240, 4)
    assert sum(sizes) == 240
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 60 and sizes[-1] == 1
    assert min(guided_sizes(240, 4, minimum=5)[:-1]) >= 5


def test_plan_never_renders_a_frame_twice_or_skips_one() -> None:
    frames = [f for f in range(-10, 300) if f % 7]
    for schedule in ("static", "fixed", "guided", "adaptive"):
        chunks = plan_chunks(frames, 3, schedule, 9 if schedule == "fixed" else None)
        covered = [f for s, e in chunks for f in range(s, e + 1)]
        assert covered == frames, schedule


def test_makespan_bound() -> None:
    assert makespan_bound([1.0] * 100, 4, 5.0) == 30.0
    assert makespan_bound([1.0, 50.0], 4, 5.0) == 55.0


def test_argv_is_a_list_with_every_required_flag() -> None:
    target = RenderTarget(project="/p/a b.aep", output="/o/x_[####].png", comp='C "1"; $(rm)',
                          mfr=False, mfr_max_cpu=70, rs_template="Best", om_template="PNG",
                          mem_usage=(50, 80), continue_on_missing_footage=True)
    argv = build_argv("/bin/aerender", target, -5, 10)
    assert argv[:3] == ["/bin/aerender", "-project", "/p/a b.aep"]
    assert argv[argv.index("-comp") + 1] == 'C "1"; $(rm)'
    assert argv[argv.index("-s") + 1] == "-5" and argv[argv.index("-e") + 1] == "10"
    i = argv.index("-mfr")
    assert argv[i + 1 : i + 3] == ["OFF", "70"]
    assert argv[argv.index("-close") + 1] == "DO_NOT_SAVE_CHANGES"
    assert argv[argv.index("-sound") + 1] == "OFF"
    assert argv[argv.index("-v") + 1] == "ERRORS_AND_PROGRESS"
    assert "-reuse" not in argv and "-mp" not in argv
    assert argv[argv.index("-mem_usage") + 1 :][:2] == ["50", "80"]
    assert "-continueOnMissingFootage" in argv
    rq = build_argv("ae", RenderTarget(project="p", output="o", rqindex=3), 1, 2)
    assert rq[rq.index("-rqindex") + 1] == "3" and "-comp" not in rq


def _exe(path: Path) -> str:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def test_aerender_resolution_order(tmp_path: Path) -> None:
    explicit = _exe(tmp_path / "explicit")
    from_env = _exe(tmp_path / "fromenv")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    on_path = _exe(bindir / "aerender")
    env = {"AERENDER_PATH": from_env, "PATH": str(bindir)}
    assert resolve_aerender(explicit, env) == explicit
    assert resolve_aerender(None, env) == from_env
    assert resolve_aerender(None, {"PATH": str(bindir)}) == on_path
    # a host set up for the official After Effects adaptor: its variable, after ours
    adaptor = _exe(tmp_path / "adaptor")
    both = {**env, "AFTEREFFECTS_ADAPTOR_AERENDER_EXE": adaptor}
    assert resolve_aerender(None, both) == from_env
    assert resolve_aerender(None, {"AFTEREFFECTS_ADAPTOR_AERENDER_EXE": adaptor,
                                   "PATH": str(bindir)}) == adaptor
    with pytest.raises(EnvironmentProblem) as info:
        resolve_aerender(None, {"PATH": str(tmp_path / "empty")})
    msg = info.value.message
    assert all(w in msg for w in ("--aerender", "AERENDER_PATH", "PATH", "standard location"))
    with pytest.raises(EnvironmentProblem, match="does not exist"):
        resolve_aerender(str(tmp_path / "nope"), env)
    noexec = tmp_path / "noexec"
    noexec.write_text("x")
    os.chmod(noexec, 0o644)
    with pytest.raises(EnvironmentProblem, match="not executable"):
        resolve_aerender(str(noexec), env)


def test_fixed_auto_size_is_four_chunks_per_slot() -> None:
    chunks = plan_chunks(list(range(1, 241)), 4, "fixed")
    assert len(chunks) == 16 and all(e - s + 1 == 15 for s, e in chunks)


def test_task_share_cuts_listed_frames_into_near_equal_tasks() -> None:
    from stmpo_celery.plan._chunks import task_share

    frames = parse_frames("1-1200")
    assert task_share(frames, 1, 2) == list(range(1, 601))
    assert task_share(frames, 2, 2) == list(range(601, 1201))
    stepped = parse_frames("1-20:2")
    pieces = [task_share(stepped, i, 3) for i in (1, 2, 3)]
    assert pieces == [[1, 3, 5, 7], [9, 11, 13], [15, 17, 19]]
    for bad in ((0, 2), (3, 2), (1, 0)):
        with pytest.raises(BadInput, match="is not a task of the job"):
            task_share(frames, *bad)
    with pytest.raises(BadInput, match="fewer than its tasks"):
        task_share([1, 2], 1, 3)


@pytest.mark.parametrize("frames", [[1, 2, 3, 7, 9, 10], [-5, -4, -1, 0, 1], [7], [-3]])
def test_parse_runs_reads_what_format_frames_writes(frames: list[int]) -> None:
    from stmpo_celery.plan._frames import parse_runs

    assert parse_runs(format_frames(frames)) == frames == parse_frames(format_frames(frames))


@pytest.mark.parametrize("item", ["7", "-3", "0", "007", "1-10", "-10--1", "1- 5", "1 -5",
                                  "5-5", "-0", "0--0", "-5-3", "100-140"])
def test_plain_items_parse_exactly_as_openjd_model_does(item: str) -> None:
    """Items without a step skip the openjd-model import; they must mean the same."""
    from openjd.model import IntRangeExpr

    assert parse_frames(item) == sorted(set(IntRangeExpr.from_str(item)))


@pytest.mark.parametrize("item", ["10-1", "1--1", "--1", "+3", "1-2-3", "a"])
def test_items_openjd_model_refuses_are_refused(item: str) -> None:
    with pytest.raises(BadInput):
        parse_frames(item)
