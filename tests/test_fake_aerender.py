"""The aerender simulator, run as real processes: log format, files, tree, failure knobs."""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from conftest import tagged

import stmpo_celery
from stmpo_celery.aerender._fakeframes import frame_bytes
from stmpo_celery.aerender._log import AerenderLog, AeWarning
from stmpo_celery.aerender._output import file_problem
from stmpo_celery.aerender.simulator import Knobs, frame_cost, parse_args, scan_flags, timecode

pytestmark = pytest.mark.slow
ROOT = str(Path(stmpo_celery.__file__).resolve().parent.parent)
POSIX = os.name == "posix"


def _dead(proc: psutil.Process) -> bool:
    """Gone or a zombie (an orphan's zombie waits for init to reap it; it holds nothing)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _kill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    wait_for(lambda: all(_dead(p) for p in procs), timeout=5)


class Fake:
    """Starts the simulator with a per-test tag so teardown can kill every process."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.tag = uuid.uuid4().hex
        self.project = tmp / "shot.aep"
        self.project.write_text("aep")
        (tmp / "out").mkdir()
        self.journal = tmp / "journal.txt"
        self.started: list[subprocess.Popen[bytes]] = []

    def argv(self, s: int, e: int, output: str | None = None, comp: str = "Main") -> list[str]:
        out = output if output is not None else str(self.tmp / "out" / "f_[####].png")
        return ["-project", str(self.project), "-comp", comp, "-s", str(s), "-e", str(e),
                "-output", out, "-mfr", "OFF", "100", "-v", "ERRORS_AND_PROGRESS",
                "-close", "DO_NOT_SAVE_CHANGES", "-sound", "OFF"]  # fmt: skip

    def env(self, **knobs: str) -> dict[str, str]:
        env = dict(os.environ, STMPO_TEST_TAG=self.tag, PYTHONPATH=ROOT,
                   STMPO_FAKE_STARTUP="0.1", STMPO_FAKE_FRAME_COST="0.005",
                   STMPO_FAKE_JOURNAL=str(self.journal))  # fmt: skip
        env.update({f"STMPO_FAKE_{k}": v for k, v in knobs.items()})
        return env

    def start(self, argv: list[str], **knobs: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "stmpo_celery.aerender.simulator", *argv]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=self.env(**knobs), cwd=self.tmp)  # fmt: skip
        self.started.append(proc)
        return proc

    def run(self, argv: list[str], **knobs: str) -> tuple[int, list[str]]:
        proc = self.start(argv, **knobs)
        out, _ = proc.communicate(timeout=20)
        return proc.returncode, out.decode("utf-8").splitlines()

    def journal_lines(self, kind: str) -> list[list[str]]:
        if not self.journal.exists():
            return []
        rows = [line.split() for line in self.journal.read_text().splitlines()]
        return [row[1:] for row in rows if row[0] == kind]

    def cleanup(self) -> None:
        _kill(tagged(self.tag))
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Fake]:
    f = Fake(tmp_path)
    try:
        yield f
    finally:
        f.cleanup()
        assert tagged(f.tag) == [], "a simulator process outlived its test"


def parse(lines: list[str], s: int, e: int) -> AerenderLog:
    log = AerenderLog(s, e)
    for line in lines:
        log.feed(line + "\n")
    return log


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def frames_on_disk(fake: Fake) -> set[int]:
    return {int(p.stem.split("_")[-1]) for p in (fake.tmp / "out").iterdir()}


def test_run_writes_every_frame_and_log_yields_exactly_them(fake: Fake) -> None:
    code, lines = fake.run(fake.argv(95, 104, comp="Main comp"))
    assert code == 0
    assert lines[0] == "aerender version 24.6x1"
    assert "PROGRESS: Launching After Effects..." in lines
    assert "PROGRESS:  0:00:04:02 (98): 0 Seconds" in lines
    assert "PROGRESS:      Duration: 0:00:00:10 (10)" in lines
    assert any(line.startswith("PROGRESS:  Total Time Elapsed:") for line in lines)
    log = parse(lines, 95, 104)
    assert log.frames_done == set(range(95, 105)) and log.done_count == 10
    assert log.launched and log.finished and log.errors == []
    assert log.comp_name == "Main comp"
    for f in range(95, 105):
        path = fake.tmp / "out" / f"f_{f:04d}.png"
        assert path.read_bytes() == frame_bytes(str(path), f)
        assert f"stmpo fake frame {f}\n".encode() in path.read_bytes()
        assert file_problem(str(path)) is None  # a real, whole PNG
    assert frames_on_disk(fake) == set(range(95, 105))
    launches = fake.journal_lines("launch")
    assert len(launches) == 1 and launches[0][1:3] == ["95", "104"]
    assert sorted(int(r[0]) for r in fake.journal_lines("frame")) == list(range(95, 105))


def test_relative_numbering(fake: Fake) -> None:
    code, lines = fake.run(fake.argv(40, 45), NUMBERING="relative")
    assert code == 0
    assert "PROGRESS:  0:00:01:16 (1): 0 Seconds" in lines
    log = parse(lines, 40, 45)
    # the header's Start and Frame Rate anchor the timecode: the (N) is not needed
    assert log.numbering == "timecode" and log.frames_done == set(range(40, 46))


def test_count_numbering_with_mfr_shuffle(fake: Fake) -> None:
    argv = fake.argv(1, 8)
    argv[argv.index("-mfr") + 1] = "ON"
    code, lines = fake.run(argv, MFR_SHUFFLE="1", NUMBERING="count")
    assert code == 0
    order = [int(r[0]) for r in fake.journal_lines("frame")]
    numbers = [int(ln.split("(")[1].split(")")[0]) for ln in lines if ") : " in ln or "): " in ln]
    assert numbers == list(range(1, 9)) and order != sorted(order)
    log = parse(lines, 1, 8)
    assert log.frames_done == set(range(1, 9))


@pytest.mark.parametrize(("failure", "renders"), [("licence", False), ("startup", False),
                                                  ("serial", True), ("missing-effect", True),
                                                  ("autosave", True), ("logged-error", True),
                                                  ("write-error", False)])
def test_failure_lines_exit_0(fake: Fake, failure: str, renders: bool) -> None:
    code, lines = fake.run(fake.argv(1, 3), FAILURE=failure)
    assert code == 0
    log = parse(lines, 1, 3)
    assert (frames_on_disk(fake) == {1, 2, 3}) is renders
    if failure == "autosave":
        assert log.errors == [] and log.warnings
    else:
        assert len(log.errors) == 1


def test_omp_conflict_aborts_without_kmp_duplicate_lib_ok(
        fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KMP_DUPLICATE_LIB_OK", raising=False)
    proc = fake.start(fake.argv(1, 3), OMP_CONFLICT="1")
    out, _ = proc.communicate(timeout=20)
    lines = out.decode().splitlines()
    assert proc.returncode != 0 and any(ln.startswith("OMP: Error #15") for ln in lines)
    assert frames_on_disk(fake) == set()
    monkeypatch.setenv("KMP_DUPLICATE_LIB_OK", "TRUE")
    code, _ = fake.run(fake.argv(1, 3), OMP_CONFLICT="1")
    assert code == 0 and frames_on_disk(fake) == {1, 2, 3}


def test_mfr_shuffle_finishes_out_of_order(fake: Fake) -> None:
    argv = fake.argv(40, 51)
    argv[argv.index("-mfr") + 1] = "ON"
    code, lines = fake.run(argv, MFR_SHUFFLE="1")
    assert code == 0
    order = [int(r[0]) for r in fake.journal_lines("frame")]
    assert sorted(order) == list(range(40, 52)) and order != sorted(order)
    log = parse(lines, 40, 51)
    assert log.frames_done == set(range(40, 52)) and log.done_count == 12


def test_movie_output_writes_one_file(fake: Fake) -> None:
    movie = fake.tmp / "out" / "shot.mov"
    code, lines = fake.run(fake.argv(0, 4, output=str(movie)))
    assert code == 0 and movie.stat().st_size > 0
    assert [p.name for p in (fake.tmp / "out").iterdir()] == ["shot.mov"]
    assert parse(lines, 0, 4).done_count == 5


def test_tree_launcher_and_afterfx_and_sigterm_orphans_renderer(fake: Fake) -> None:
    launcher = fake.start(fake.argv(0, 100000), FRAME_COST="0.01")
    wait_for(lambda: len(fake.journal_lines("frame")) >= 3)
    parent = psutil.Process(launcher.pid)
    (renderer,) = parent.children(recursive=True)
    assert renderer.pid != launcher.pid
    if sys.platform.startswith("linux"):
        assert renderer.name() == "AfterFX"
        assert parent.name() == "aerender"
    assert {int(r[1]) for r in fake.journal_lines("frame")} == {renderer.pid}
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=5) != 0
    # the renderer lost its reader but keeps running and rendering
    seen = len(fake.journal_lines("frame"))
    wait_for(lambda: len(fake.journal_lines("frame")) >= seen + 5)
    assert renderer.is_running() and renderer.status() != psutil.STATUS_ZOMBIE
    # a plain SIGTERM to the renderer ends it promptly
    renderer.terminate()
    wait_for(lambda: _dead(renderer), timeout=1.0)


@pytest.mark.skipif(not POSIX, reason="signals")
def test_ignore_sigterm_needs_sigkill(fake: Fake) -> None:
    launcher = fake.start(fake.argv(0, 0), IGNORE_SIGTERM="1", HANG_FRAME="0")
    wait_for(lambda: len(psutil.Process(launcher.pid).children()) == 1, timeout=30)
    (renderer,) = psutil.Process(launcher.pid).children()
    if sys.platform.startswith("linux"):
        wait_for(lambda: renderer.name() == "AfterFX")  # named once SIGTERM is ignored
    else:
        time.sleep(0.5)
    renderer.terminate()
    time.sleep(0.3)
    assert renderer.is_running() and renderer.status() != psutil.STATUS_ZOMBIE
    renderer.kill()
    assert launcher.wait(timeout=5) == 128 + signal.SIGKILL


def test_fail_frame_is_a_strong_error_with_exit_0(fake: Fake) -> None:
    code, lines = fake.run(fake.argv(10, 19), FAIL_FRAME="14")
    assert code == 0
    log = parse(lines, 10, 19)
    assert len(log.errors) == 1 and "After Effects error:" in log.errors[0]
    assert log.frames_done == set(range(10, 14)) and not log.finished
    assert frames_on_disk(fake) == set(range(10, 14))


@pytest.mark.skipif(not POSIX, reason="signals")
def test_crash_frame_kills_renderer_and_exits_non_zero(fake: Fake) -> None:
    code, lines = fake.run(fake.argv(0, 9), CRASH_FRAME="6")
    assert code == 128 + signal.SIGKILL
    log = parse(lines, 0, 9)
    assert log.errors == [] and log.frames_done == set(range(6))
    assert frames_on_disk(fake) == set(range(6))


def test_crash_exit_code_without_strong_error(fake: Fake) -> None:
    code, lines = fake.run(fake.argv(0, 9), CRASH_FRAME="2", CRASH_EXIT="3")
    assert code == 3
    assert parse(lines, 0, 9).errors == []
    assert frames_on_disk(fake) == {0, 1}


def test_once_dir_crashes_once_then_retry_succeeds(fake: Fake) -> None:
    once = fake.tmp / "once"
    once.mkdir()
    first, _ = fake.run(fake.argv(0, 5), CRASH_FRAME="3", CRASH_EXIT="7", ONCE_DIR=str(once))
    assert first == 7 and (once / "crash-3").exists()
    second, lines = fake.run(fake.argv(3, 5), CRASH_FRAME="3", CRASH_EXIT="7", ONCE_DIR=str(once))
    assert second == 0 and parse(lines, 3, 5).frames_done == {3, 4, 5}
    assert frames_on_disk(fake) == set(range(6))
    assert len(fake.journal_lines("launch")) == 2


def test_hostile_argv_arrives_intact(fake: Fake) -> None:
    pwned = fake.tmp / "pwned"
    comp = f"Main \"comp\"; $(touch {pwned}) `id` — ünï 日本 'x'"
    argv = [*fake.argv(-10, -8, comp=comp), "-RStemplate", "-odd value", "-mem_usage", "10", "60",
            "-continueOnMissingFootage"]  # fmt: skip
    dump = fake.tmp / "argv.json"
    code, lines = fake.run(argv, ARGV_DUMP=str(dump))
    assert code == 0
    assert json.loads(dump.read_text(encoding="utf-8")) == argv
    assert not pwned.exists()
    log = parse(lines, -10, -8)
    assert log.comp_name == comp and log.frames_done == {-10, -9, -8}
    names = {p.name for p in (fake.tmp / "out").iterdir()}
    assert names == {"f_-010.png", "f_-009.png", "f_-008.png"}


def test_missing_output_folder_is_error_with_exit_0(fake: Fake) -> None:
    out = str(fake.tmp / "nowhere" / "f_[####].png")
    code, lines = fake.run(fake.argv(0, 3, output=out))
    assert code == 0
    log = parse(lines, 0, 3)
    assert len(log.errors) == 1 and "output folder does not exist" in log.errors[0]
    assert log.done_count == 0 and not (fake.tmp / "nowhere").exists()


def test_missing_project_unknown_flag_and_version(fake: Fake) -> None:
    fake.project.unlink()
    code, lines = fake.run(fake.argv(0, 3))
    assert code == 1 and any("No project found" in x for x in parse(lines, 0, 3).errors)
    code, lines = fake.run([*fake.argv(0, 3), "-bogus", "1"])
    assert code != 0 and parse(lines, 0, 3).errors
    code, lines = fake.run(["-version"])
    assert code == 0 and lines == ["aerender version 24.6x1"]
    assert len(fake.journal_lines("launch")) == 1  # only the missing-project run launched


def test_missing_fonts_no_write_and_empty_frame(fake: Fake) -> None:
    code, lines = fake.run(fake.argv(0, 4), MISSING_FONTS="1", NO_WRITE_FRAME="1", EMPTY_FRAME="3")
    assert code == 0
    log = parse(lines, 0, 4)
    assert log.errors == [] and log.done_count == 5
    assert any("missing fonts" in w for w in log.warnings)
    feed = AerenderLog(0, 4).feed("WARNING:After Effects warning: Project has missing fonts")
    assert any(isinstance(e, AeWarning) for e in feed)
    assert frames_on_disk(fake) == {0, 2, 3, 4}
    assert (fake.tmp / "out" / "f_0003.png").stat().st_size == 0
    assert (fake.tmp / "out" / "f_0004.png").stat().st_size > 0


def test_hang_frame_stops_output_without_cpu(fake: Fake) -> None:
    launcher = fake.start(fake.argv(0, 9), HANG_FRAME="4")
    wait_for(lambda: len(fake.journal_lines("frame")) == 4)
    (renderer,) = psutil.Process(launcher.pid).children()
    before = sum(renderer.cpu_times()[:2])
    time.sleep(0.5)
    assert launcher.poll() is None and len(fake.journal_lines("frame")) == 4
    assert sum(renderer.cpu_times()[:2]) - before < 0.1


@pytest.mark.skipif(not POSIX, reason="rusage")
def test_busy_frame_burns_cpu_silently(fake: Fake) -> None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    code, lines = fake.run(fake.argv(0, 2), BUSY_FRAME="1:0.6")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert code == 0 and parse(lines, 0, 2).frames_done == {0, 1, 2}
    assert after.ru_utime - before.ru_utime >= 0.5


def test_fail_only_once(fake: Fake) -> None:
    once = fake.tmp / "once"
    once.mkdir()
    code, lines = fake.run(fake.argv(0, 3), FAIL_FRAME="2", ONCE_DIR=str(once))
    assert code == 0 and len(parse(lines, 0, 3).errors) == 1
    assert frames_on_disk(fake) == {0, 1}
    code, lines = fake.run(fake.argv(0, 3), FAIL_FRAME="2", ONCE_DIR=str(once))
    assert code == 0 and parse(lines, 0, 3).errors == [] and frames_on_disk(fake) == {0, 1, 2, 3}


def test_cost_knobs_are_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STMPO_FAKE_FRAME_COST", "0.1")
    monkeypatch.setenv("STMPO_FAKE_HEAVY", "100-149x10, 200-210x3")
    monkeypatch.setenv("STMPO_FAKE_RAMP", "1-11x6")
    knobs = Knobs.from_env()
    assert frame_cost(99, knobs) == pytest.approx(0.1)
    assert frame_cost(100, knobs) == pytest.approx(1.0)
    assert frame_cost(205, knobs) == pytest.approx(0.3)
    assert frame_cost(1, knobs) == pytest.approx(0.1)
    assert frame_cost(6, knobs) == pytest.approx(0.35)
    assert frame_cost(11, knobs) == pytest.approx(0.6)
    assert frame_cost(12, knobs) == pytest.approx(0.1)
    monkeypatch.setenv("STMPO_FAKE_HEAVY", "oops")
    with pytest.raises(Exception, match="HEAVY"):
        Knobs.from_env()


def test_parse_args_keeps_dash_values_and_timecode() -> None:
    args = parse_args(["-project", "p", "-comp", "-s", "-s", "-10", "-e", "-1", "-output", "o"])
    assert (args.comp, args.start, args.end) == ("-s", -10, -1)
    assert scan_flags(["-comp", "-version", "-MFR", "on", "50"]) == {
        "-comp": ["-version"],
        "-mfr": ["on", "50"],
    }
    with pytest.raises(Exception, match="requires"):
        scan_flags(["-project", "p", "-s"])
    assert timecode(118) == "0:00:04:22" and timecode(24 * 3600) == "1:00:00:00"
    assert timecode(-2) == "-0:00:00:02"


def test_write_time_leaves_a_partial_file_mid_write(fake: Fake) -> None:
    proc = fake.start(fake.argv(1, 2, output=str(fake.tmp / "out" / "f_[####].exr")),
                      WRITE_TIME="1.5")
    path = fake.tmp / "out" / "f_0001.exr"
    wait_for(lambda: bool(fake.journal_lines("begin")) and path.exists()
             and path.stat().st_size > 0)
    assert not fake.journal_lines("frame")
    assert file_problem(str(path)) is not None  # partial: a kill now leaves exactly this
    proc.communicate(timeout=20)
    assert proc.returncode == 0 and file_problem(str(path)) is None
    assert path.read_bytes() == frame_bytes(str(path), 1)


def test_truncate_frame_reports_done_but_file_is_cut_short(fake: Fake) -> None:
    code, lines = fake.run(fake.argv(1, 3), TRUNCATE_FRAME="2")
    assert code == 0 and parse(lines, 1, 3).frames_done == {1, 2, 3}
    assert file_problem(str(fake.tmp / "out" / "f_0002.png")) is not None
    assert file_problem(str(fake.tmp / "out" / "f_0003.png")) is None


@pytest.mark.skipif(not POSIX, reason="signals")
def test_orphan_frame_kills_the_launcher_and_the_renderer_holds_the_pipe(fake: Fake) -> None:
    launcher = fake.start(fake.argv(1, 40), ORPHAN_FRAME="2", FRAME_COST="0.1")
    wait_for(lambda: bool(fake.journal_lines("orphan")))
    assert launcher.wait(timeout=5) == -signal.SIGKILL
    (row,) = fake.journal_lines("orphan")
    renderer = psutil.Process(int(row[1]))
    assert renderer.name() == "AfterFX" and not _dead(renderer)
    # the reader of aerender's output gets no EOF: the orphan holds the pipe
    assert launcher.stdout is not None
    fd = launcher.stdout.fileno()
    os.set_blocking(fd, False)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.05)[0]:
            assert os.read(fd, 65536) != b"", "EOF while the renderer lives"
    seen = len(fake.journal_lines("frame"))
    wait_for(lambda: len(fake.journal_lines("frame")) > seen)  # and it renders on
    _kill([renderer])
