"""`stmpo farm`'s rules, in-process: footage listing and scene snapshots, job states and
priorities, and which session folders a worker sweeps. The commands:
test_farm_parts.py; the farm with real workers: test_farm.py."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def test_footage_listed_with_sizes_and_mtimes(tmp_path: Path) -> None:
    from stmpo_celery.farm._snapshot import footage_list, snapshot_file

    (tmp_path / "plates").mkdir()
    (tmp_path / "plates" / "a.exr").write_bytes(b"12345")
    (tmp_path / "logo.png").write_bytes(b"xy")
    listed = footage_list({"filenames": ["logo.png", "gone.mov"], "directories": ["plates"]},
                          tmp_path)
    by_name = {Path(f["path"]).name: f for f in listed}
    assert by_name["logo.png"]["size"] == 2 and by_name["a.exr"]["size"] == 5
    assert by_name["a.exr"]["mtime"] == (tmp_path / "plates" / "a.exr").stat().st_mtime
    assert by_name["gone.mov"]["missing"] is True
    snap = snapshot_file(tmp_path / "logo.png", tmp_path / "job" / "scene")
    assert snap["sha256"] == hashlib.sha256(b"xy").hexdigest() and snap["size"] == 2
    assert not os.access(snap["snapshot"], os.W_OK) or os.geteuid() == 0  # read-only copy


def test_job_state_and_priority_rules() -> None:
    from stmpo_celery.farm._app import redis_priority
    from stmpo_celery.farm._store import job_summary_state

    def tasks(*states: str) -> list[dict[str, Any]]:
        return [{"state": st} for st in states]

    assert job_summary_state("queued", tasks("queued", "queued")) == "queued"
    assert job_summary_state("queued", tasks("succeeded", "queued")) == "running"
    assert job_summary_state("queued", tasks("succeeded", "succeeded")) == "succeeded"
    assert job_summary_state("queued", tasks("succeeded", "failed")) == "failed"
    assert job_summary_state("canceled", tasks("running", "canceled")) == "canceling"
    assert job_summary_state("canceled", tasks("succeeded", "canceled")) == "canceled"
    assert [redis_priority(p) for p in (100, 91, 50, 0)] == [0, 0, 5, 9]  # higher first


def test_a_worker_sweeps_the_session_folders_of_dead_workers_only(tmp_path: Path) -> None:
    """A worker killed together with its guard leaves its OpenJD session folder: the next
    worker on the host removes those of workers that are gone, and no other. A worker
    holds its folder's lock while it lives: one locked by a worker whose pid names nothing
    here (another PID namespace sharing this /tmp) is kept — it was swept under that live
    worker, whose every task then failed —, one nobody holds goes whatever its pid reads
    here; an older worker's folder (no lock) goes by its pid."""
    from stmpo_celery.farm._worker import SESSIONS_PREFIX, sweep_sessions

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old_gone, elsewhere, reused, old_live = (
        tmp_path / f"{SESSIONS_PREFIX}{pid}-{tag}" for pid, tag in (
            (dead.pid, "ab12"), (dead.pid, "ef56"), (os.getpid(), "gh78"),
            (os.getpid(), "cd34")))
    other = tmp_path / "stmpo-farmer-1-x"
    for folder in (old_gone, elsewhere, reused, old_live, other):
        (folder / "session").mkdir(parents=True)
    for folder in (elsewhere, reused):
        (folder / "alive.lock").touch()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+b'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
         str(elsewhere / "alive.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert sorted(sweep_sessions(tmp_path)) == sorted([old_gone, reused])
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [elsewhere.name, old_live.name, other.name])


def test_a_worker_that_cannot_run_a_task_does_not_start(tmp_path: Path) -> None:
    """A worker whose OpenJD runtime does not load (a broken install, a Windows host
    missing a DLL) took every task and failed it in a second, spending each job's retries.
    It now refuses to start, in one line, exit 3, before it connects to the farm."""
    shadow = tmp_path / "shadow" / "openjd" / "sessions"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ImportError('DLL load failed while importing _rs: not found')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STMPO_")}
    env["PYTHONPATH"] = str(tmp_path / "shadow")
    res = subprocess.run([sys.executable, "-m", "stmpo_celery.cli", "farm", "worker",
                          "--farm", "redis://127.0.0.1:1/0"],  # never reached
                         capture_output=True, text=True, timeout=60, env=env,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 3, res.stdout + res.stderr
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot run farm tasks" in lines[0], lines
    assert "DLL load failed" in lines[0] and "Traceback" not in res.stderr
