"""`stmpo demo`, the README's first command: a real render of the simulated comp on the
embedded Redis; bad input refused before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def demo(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **extra)
    env.pop("STMPO_BROKER_URL", None)
    return subprocess.run([sys.executable, "-m", "stmpo_celery.cli", "demo", *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
                          stdin=subprocess.DEVNULL)


def test_the_demo_renders_every_frame(tmp_path: Path) -> None:
    res = demo(tmp_path, "--frames", "1-12", "--concurrency", "2", "--frame-cost", "0.01",
               "--startup", "0.1")
    assert res.returncode == 0, res.stdout + res.stderr
    frames = sorted(p.name for p in (tmp_path / "demo" / "renders").iterdir())
    assert frames == [f"demo_{f:05d}.png" for f in range(1, 13)]
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["frames"]["rendered"] == 12
    assert summary["embedded_broker"] is True
    assert "stmpo demo: stmpo render --project" in res.stdout


def test_the_demos_flags_beat_the_simulators_variables(tmp_path: Path) -> None:
    """``--startup``/``--frame-cost`` given lost to ``STMPO_FAKE_*`` left in the shell (a
    4 s start-up stayed 4 s); without the flags, the variables still apply."""
    dump = tmp_path / "env.json"
    res = demo(tmp_path, "--frames", "1-2", "--concurrency", "1", "--startup", "0.1",
               "--frame-cost", "0.01", STMPO_FAKE_STARTUP="4", STMPO_FAKE_FRAME_COST="2",
               STMPO_FAKE_ENV_DUMP=str(dump))
    assert res.returncode == 0, res.stdout + res.stderr
    seen = json.loads(dump.read_text())
    assert (seen["STMPO_FAKE_STARTUP"], seen["STMPO_FAKE_FRAME_COST"]) == ("0.1", "0.01")
    res = demo(tmp_path, "--frames", "1-2", "--concurrency", "1", STMPO_FAKE_STARTUP="0.2",
               STMPO_FAKE_FRAME_COST="0.02", STMPO_FAKE_ENV_DUMP=str(dump))
    assert res.returncode == 0, res.stdout + res.stderr
    seen = json.loads(dump.read_text())
    assert (seen["STMPO_FAKE_STARTUP"], seen["STMPO_FAKE_FRAME_COST"]) == ("0.2", "0.02")


@pytest.mark.parametrize("args, words", [
    (["--frames", "x"], "frame"),
    (["--concurrency", "-1"], "--concurrency -1"),
])
def test_bad_demo_input_is_one_line_and_writes_nothing(tmp_path: Path, args: list[str],
                                                       words: str) -> None:
    res = demo(tmp_path, "--dir", "d", *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and words in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "d").exists()
