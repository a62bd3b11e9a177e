"""The job bundles run by the real OpenJD runtime (`openjd run`), with the aerender simulator.

`openjd run` executes a step with its environments on this machine, the same session
runtime a Deadline Cloud worker uses: output directories, exported settings, `stmpo
doctor`, font hooks, then `stmpo render` per task, and cancel by NOTIFY_THEN_TERMINATE.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import BIN, FAKE, SYSTEM_REDIS, kill_tagged, system_redis, tagged, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
IMAGE_T = ROOT / "openjd_bundle" / "template.yaml"
MOVIE_T = ROOT / "openjd_bundle" / "movie" / "template.yaml"
BIG_T = ROOT / "openjd_bundle" / "big" / "template.yaml"
_RUN_ID = re.compile(r"stmpo: run ([0-9a-f]+) on ")


class Session:
    """One `openjd run` of a bundle: a project and an output folder with awkward names."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.tag = uuid.uuid4().hex
        self.project = tmp / "proj, é" / "shot 1.aep"
        self.project.parent.mkdir(parents=True)
        self.project.write_text("aep")
        self.out = tmp / "renders, ü ø"
        self.journal = tmp / "journal.txt"
        self.argv_dump = tmp / "argv.json"

    def env(self, **knobs: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("STMPO_") and k != "AERENDER_PATH"}
        env.update(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                   STMPO_TEST_TAG=self.tag, STMPO_FAKE_STARTUP="0.1",
                   STMPO_FAKE_FRAME_COST="0.005", STMPO_FAKE_JOURNAL=str(self.journal),
                   STMPO_FAKE_ARGV_DUMP=str(self.argv_dump))
        env.update({f"STMPO_FAKE_{k}": v for k, v in knobs.items()})
        return env

    def argv(self, template: Path, step: str, *extra: str, **params: str) -> list[str]:
        values = {"ProjectFile": str(self.project), "RenderBy": "comp", "Comp": "Main, Comp",
                  "OutputDir": str(self.out), "AerenderPath": FAKE, **params}
        args = [str(BIN / "openjd"), "run", str(template), "--step", step]
        for k, v in values.items():
            args += ["-p", f"{k}={v}"]
        return args + list(extra)

    def run(self, template: Path, step: str, *extra: str, knobs: dict[str, str] | None = None,
            **params: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(template, step, *extra, **params), capture_output=True,
                              text=True, timeout=120, env=self.env(**(knobs or {})),
                              stdin=subprocess.DEVNULL, cwd=self.tmp)

    def frames(self, name: str = "shot_") -> list[int]:
        if not self.out.exists():
            return []
        return sorted(int(p.stem.rsplit("_", 1)[1]) for p in self.out.glob(f"{name}*")
                      if p.stat().st_size > 0)

    def launches(self) -> list[tuple[int, int]]:
        if not self.journal.exists():
            return []
        return [(int(ln.split()[2]), int(ln.split()[3]))
                for ln in self.journal.read_text().splitlines() if ln.startswith("launch ")]


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    s = Session(tmp_path)
    try:
        yield s
    finally:
        kill_tagged(s.tag)


def progress(stdout: str) -> list[float]:
    return [float(m) for m in re.findall(r"openjd_progress: ([0-9.]+)", stdout)]


def test_image_step_renders_every_task_with_slots(session: Session) -> None:
    res = session.run(IMAGE_T, "RenderImageSequence", Frames="1-30", FramesPerTask="10",
                      OutputFileName="shot_[####].png", Concurrency="2", Mfr="OFF")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    assert session.frames() == list(range(1, 31))
    # three tasks, each one `stmpo render` of its chunk on two slots (two aerender runs)
    assert re.findall(r"Frame\(CHUNK\[INT\]\) = (\S+)", res.stdout) == ["1-10", "11-20", "21-30"]
    assert sorted(session.launches()) == [(1, 5), (6, 10), (11, 15), (16, 20), (21, 25),
                                          (26, 30)]
    # settings reached aerender through the exported environment
    assert "openjd_env: STMPO_CONCURRENCY=2" in res.stdout
    argv = json.loads(session.argv_dump.read_text())
    assert argv[argv.index("-mfr") + 1] == "OFF" and argv[argv.index("-comp") + 1] == "Main, Comp"
    # the output directory (a comma, spaces, non-ASCII) was made before rendering
    assert f"output directory created: {session.out}" in res.stdout
    assert "ok   aerender:" in res.stdout  # stmpo doctor ran
    assert "Entering Environment: Fonts" in res.stdout
    pct = progress(res.stdout)
    assert pct and max(pct) == 100.0 and pct.count(100.0) >= 3  # each task reached 100


def test_big_task_of_600_frames_is_one_stmpo_render(session: Session) -> None:
    # Above CHUNK[INT]'s 150 frames: the big-task template, task 1 of 2 of 1-1200.
    res = session.run(BIG_T, "RenderImageSequence", "--tasks", '[{"Task": 1}]',
                      Frames="1-1200", TaskCount="2", OutputFileName="shot_[####].png",
                      Concurrency="2", Schedule="static", Mfr="OFF",
                      knobs={"FRAME_COST": "0.001", "STARTUP": "0.05"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    assert session.frames() == list(range(1, 601))
    assert len(_RUN_ID.findall(res.stdout)) == 1  # one stmpo render for the 600 frames
    assert sorted(session.launches()) == [(1, 300), (301, 600)]  # one launch per slot
    assert progress(res.stdout)[-1] == 100.0


def test_movie_step_is_one_process_for_all_frames(session: Session) -> None:
    res = session.run(MOVIE_T, "RenderMovie", Frames="1-24", OutputFileName="edit.mov",
                      Profile="farm", Mfr="ON", MfrMaxCpu="60")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    movie = session.out / "edit.mov"
    assert movie.is_file() and movie.stat().st_size > 0
    assert session.launches() == [(1, 24)]  # one aerender process wrote the whole movie
    argv = json.loads(session.argv_dump.read_text())
    assert argv[argv.index("-mfr") + 1:argv.index("-mfr") + 3] == ["ON", "60"]
    assert re.search(r"^\S+\s+  mfr\s+True\s+\$STMPO_MFR$", res.stdout, re.M)
    assert progress(res.stdout)[-1] == 100.0


def test_a_movie_name_in_the_image_bundle_fails_before_any_render(session: Session) -> None:
    res = session.run(IMAGE_T, "RenderImageSequence", Frames="1-10", OutputFileName="edit.mov")
    assert res.returncode != 0
    assert "openjd_fail: OutputFileName 'edit.mov' has no [#####] frame token" in res.stdout
    assert "Entering Environment: HostCheck" not in res.stdout
    assert not session.launches() and not session.out.exists()


def test_a_failed_host_check_fails_the_session_with_its_reason(session: Session) -> None:
    res = session.run(IMAGE_T, "RenderImageSequence", Frames="1-10",
                      AerenderPath=str(session.tmp / "no" / "aerender"))
    assert res.returncode != 0
    assert re.search(r"FAIL aerender: .*does not exist", res.stdout), res.stdout[-3000:]
    assert "Running Task" not in res.stdout and not session.launches()


def _run_keys(client: Any, run_id: str) -> list[str]:
    keys = list(client.scan_iter(match=f"stmpo:{run_id}:*", count=1000))
    if client.hexists("stmpo:runs", run_id):
        keys.append(f"stmpo:runs[{run_id}]")
    return keys


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cancel_through_the_runtime_leaves_no_process_and_no_key(session: Session,
                                                                 sig: signal.Signals) -> None:
    client = system_redis()
    if client is None:
        pytest.skip("no Redis on 127.0.0.1:6379")
    proc = subprocess.Popen(
        session.argv(IMAGE_T, "RenderImageSequence", Frames="1-150", FramesPerTask="150",
                      OutputFileName="shot_[####].png", Concurrency="2",
                      BrokerUrl=SYSTEM_REDIS),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=session.env(FRAME_COST="0.2"), stdin=subprocess.DEVNULL, cwd=session.tmp)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:  # wait until both slots' aerender are rendering
            lines.append(line)
            if "openjd_progress:" in line and len(session.launches()) >= 2:
                break
        run_id = _RUN_ID.search("".join(lines))
        assert run_id, "".join(lines)[-3000:]
        renderers = [p for p in tagged(session.tag) if "AfterFX" in p.name()
                     or "--renderer" in " ".join(p.cmdline())]
        assert renderers, "no renderer was running when the cancel came"
        t0 = time.monotonic()
        proc.send_signal(sig)  # the CLI cancels its session, as Deadline cancels a task
        rest, _ = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode != 0
    assert "via notify then terminate" in out  # SIGTERM first, not an immediate kill
    assert "stmpo: CANCELLED by SIGTERM" in out and "exited with code: 143" in out
    assert elapsed < 15, elapsed  # well inside the 30 s notify period
    assert "Exiting Environment: Fonts" in out  # the font cleanup hook ran after the cancel
    # nothing of the run is left: no slot, no aerender, no After Effects, no key
    assert wait_for(lambda: not tagged(session.tag), timeout=5), [
        (p.pid, p.name(), p.cmdline()) for p in tagged(session.tag)]
    for pid in (p.pid for p in renderers):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    # (only this run's keys: other runs may share the system Redis at the same time)
    assert not _run_keys(client, run_id.group(1))
    assert len(session.frames()) < 200  # it was stopped, not left to finish
