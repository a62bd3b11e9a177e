"""A render host whose disk fills: the output folder, the host service's folder, the
summary, the logs, the history. Real small file systems (tmpfs, mounted by root); the
module skips, saying why, where mounting is not allowed."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import psutil
import pytest
from conftest import Farm, free_port, wait_for
from hostlib import stmpo

Disk = Callable[[str], Path]


def fill(folder: Path) -> None:
    """Fill ``folder``'s file system to the last byte."""
    fd = os.open(folder / f"fill-{uuid.uuid4().hex}", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Disk]:
    """``small_disk(size)``: a fresh tmpfs of that size (``"256k"``), unmounted after."""
    mounted: list[Path] = []

    def make(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(where)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a small file system here: {res.stderr.strip()}")
        mounted.append(where)
        return where

    yield make
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_output_disk_still_keeps_the_output_lock_fresh(small_disk: Disk) -> None:
    """Other hosts judge a run by its lock's mtime. Rewriting the lock needs free space:
    on a full disk it is touched instead, so a run on another host never takes this live
    run for a dead one (two runs writing the same frames); if even that fails, the
    refresh says so instead of going stale in silence."""
    from stmpo_celery.orchestrator import _outlock
    from stmpo_celery.plan import OutputPattern

    disk = small_disk("64k")
    pattern = OutputPattern(str(disk / "f_[####].png"))
    lock, _ = _outlock.acquire(pattern, [1, 2, 3], "full0001")
    try:
        old = time.time() - 1000
        os.utime(lock.path, (old, old))
        fill(disk)
        with pytest.raises(OSError) as full:
            (disk / "one-more").write_bytes(b"x" * 8192)
        assert full.value.errno == errno.ENOSPC
        assert lock.refresh(force=True) is None
        mtime = lock.path.stat().st_mtime
        assert _outlock.alive({**lock.info, "host": "another-host"}, mtime,
                              _outlock.folder_now(lock.path.parent))
        lock.path.unlink()  # removed by hand meanwhile: neither rewrite nor touch works
        fill(disk)
        said = lock.refresh(force=True)
        assert said is not None and "cannot be re-stamped" in said and str(lock.path) in said
    finally:
        lock.release()


def redis_on(port: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if "redis-server" in " ".join(p.cmdline()) and f":{port}" in " ".join(p.cmdline()):
                out.append(p)
    return out


def test_host_up_on_a_full_folder_says_so_and_leaves_nothing(small_disk: Disk,
                                                              tmp_path: Path) -> None:
    """``stmpo host up`` whose folder fills at every step of its start (the config, the
    pid file, the broker file, Redis's own files): one line and exit 3 — never a
    traceback, never a redis-server left running that ``host down`` cannot find, never
    a temporary file; with room enough it starts, and ``host down`` stops it."""
    disk = small_disk("192k")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STMPO_")}
    env.update(STMPO_HOST_DIR=str(disk / "host"), TMPDIR=str(tmp_path))
    outcomes = []
    for fresh, pages in [(f, p) for f in (True, False) for p in range(0, 5)]:
        if not fresh and not (disk / "host").exists():  # one that has served before
            assert stmpo("host", "up", "--port", str(free_port()), env=env).returncode == 0
            assert stmpo("host", "down", env=env).returncode == 0
        slack = disk / "slack"
        slack.write_bytes(b"\0" * 4096 * pages)
        fill(disk)
        slack.unlink()
        port = free_port()
        up = stmpo("host", "up", "--port", str(port), env=env)
        outcomes.append(up.returncode)
        assert "Traceback" not in up.stderr, up.stderr
        if up.returncode == 0:
            down = stmpo("host", "down", "--force", env=env)
            assert down.returncode == 0, down.stderr
        else:
            assert up.returncode == 3, up.stdout + up.stderr
            lines = up.stderr.strip().splitlines()
            assert len(lines) == 1 and "host service's folder" in lines[0], up.stderr
            assert "free space" in lines[0]
        assert wait_for(partial(lambda p: not redis_on(p), port), timeout=10), redis_on(port)
        assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp")]
        for f in disk.glob("fill-*"):
            f.unlink()
        if fresh:
            shutil.rmtree(disk / "host", ignore_errors=True)
    assert 3 in outcomes, outcomes  # the full folder was reached ...
    assert 0 in outcomes, outcomes  # ... and so was room enough


def test_a_summary_that_cannot_be_written_is_no_success_and_no_stale_record(
        farm: Farm, small_disk: Disk) -> None:
    """The summary's folder fills during the render: every frame is whole, but the
    record asked for is not there — exit 3, one line, and the earlier run's summary in
    that place removed (a pipeline must not read it as this run's)."""
    disk = small_disk("256k")
    summary = disk / "s.json"
    summary.write_text(json.dumps({"run": "earlier1", "status": "failed"}))
    proc = farm.start_rendering("--summary", str(summary), frame_cost="0.2", frames="1-6")
    fill(disk)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 3, out + err
    assert not summary.exists(), summary.read_text()
    assert "the summary could not be written" in out and "every frame is whole" in out
    assert farm.frames_on_disk() == list(range(1, 7))
    assert not [p for p in disk.iterdir() if not p.name.startswith("fill-")]
    assert not farm.leftovers()


def test_a_folder_already_full_is_refused_before_anything_starts(farm: Farm,
                                                                small_disk: Disk) -> None:
    """Making a file succeeds on a full disk, writing does not: the checks before the
    start write real bytes, so a full summary, log or output folder is one line and exit
    3 (the host, not the job) with nothing started and nothing left there."""
    for flag, pages in [(f, p) for f in ("--summary", "--log-dir", "--output")
                        for p in (0, 1, 8)]:  # a short write is no room either
        disk = small_disk("128k")
        target = {"--summary": disk / "s.json", "--log-dir": disk / "logs",
                  "--output": disk / "out" / "f_[####].png"}[flag]
        slack = disk / "slack"
        slack.write_bytes(bytes(4096 * pages))
        fill(disk)
        slack.unlink()
        res = farm.run(flag, str(target), frames="1-4")
        assert res.returncode == 3, (flag, res.stdout + res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "free space there" in lines[0], (flag, res.stderr)
        assert "Traceback" not in res.stderr and not farm.journal.exists()
        assert [p.name for p in disk.iterdir() if not p.name.startswith("fill-")] == []
        assert not farm.leftovers()


def test_a_full_temp_folder_is_the_hosts_problem_in_one_line(farm: Farm,
                                                           small_disk: Disk) -> None:
    """The run's own folder (its spec, its Redis socket and log) lives in the temp folder.
    Nearly full, the run failed at random: the spec could not be written, or the embedded
    Redis never answered ("orchestrator error", exit 1). The temp folder is checked with
    the others before anything starts: one line naming it and the fix, exit 3, nothing
    left there. (Quite full, Python's tempfile moves to another temp folder itself.)"""
    disk = small_disk("128k")
    for pages in (1, 3, 8):
        slack = disk / "slack"
        slack.write_bytes(b"\0" * 4096 * pages)
        fill(disk)
        slack.unlink()
        res = farm.run(frames="1-4", env=farm.env(TMPDIR=str(disk)))
        assert res.returncode == 3, res.stdout + res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and f"the temp folder {disk} cannot be written" in lines[0]
        assert "(No space left on device): free space there" in lines[0], lines
        assert "Traceback" not in res.stderr and not farm.journal.exists()
        assert [p.name for p in disk.iterdir() if not p.name.startswith("fill-")] == []
        assert not farm.leftovers()
        for f in disk.glob("fill-*"):
            f.unlink()


def test_a_host_redis_whose_folder_fills_mid_run_is_exit_3_naming_it(
        farm: Farm, small_disk: Disk, tmp_path: Path) -> None:
    """The host service's Redis keeps its data in its folder; full, it refuses every
    write (``MISCONF``). The run on it stops with exit 3 and a line that says the
    broker cannot save and where to free space — not exit 1 "orchestrator error"."""
    disk = small_disk("2m")
    env = farm.env(STMPO_HOST_DIR=str(disk / "host"), TMPDIR=str(tmp_path))
    up = stmpo("host", "up", "--port", str(free_port()), env=env)
    assert up.returncode == 0, up.stderr
    try:
        proc = farm.start_rendering(frame_cost="0.15", frames="1-40", env=env)
        fill(disk)
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 3, out + err
        assert "the broker refuses writes because it cannot save its data" in out, out
        assert "STMPO_HOST_DIR" in out and "orchestrator error" not in out
        assert not farm.leftovers()
        # still full: the next run says why it does not use the host service (it
        # refuses even PING now) or, if it still answers, why it cannot — never "lost"
        again = farm.run(frames="1-44", env=env)
        assert "was lost" not in again.stdout, again.stdout
        assert (again.returncode == 0 and "does not answer (MISCONF" in again.stdout) or (
            again.returncode == 3 and "refuses writes because it cannot save" in again.stdout
        ), again.stdout + again.stderr
        down = stmpo("host", "down", env=env)  # the dead run's keys cannot be removed
        assert down.returncode == 3 and "cannot save its data" in down.stderr, down.stderr
        assert f"{disk / 'host'} is full" in down.stderr
    finally:
        for f in disk.glob("fill-*"):
            f.unlink()
        stmpo("host", "down", "--force", env=env)


def test_history_on_a_full_disk_leaves_no_temporary_file(
        small_disk: Disk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """History is a hint and never fails a render; on a full disk it must not leave a
    temporary file behind either (one more per render, named by its pid)."""
    from stmpo_celery.orchestrator import _history

    disk = small_disk("64k")
    monkeypatch.setenv("STMPO_HISTORY_DIR", str(disk / "h"))
    (disk / "h").mkdir()
    fill(disk)
    project = tmp_path / "shot.aep"
    project.write_text("v1")
    for _ in range(3):
        _history.save(str(project), "Main", {f: 0.5 for f in range(1, 2000)}, 3.0)
    assert list((disk / "h").iterdir()) == []


def test_logs_cut_short_by_a_full_disk_are_said_to_be_incomplete(
        farm: Farm, small_disk: Disk) -> None:
    """The log folder fills mid-render: the run log stops mid-line and the record of how
    the run ended is not written — the run says so at its end (on the terminal, which
    still works), rather than leaving a log that looks whole."""
    disk = small_disk("256k")
    proc = farm.start_rendering("--log-dir", str(disk / "logs"), frame_cost="0.15",
                                frames="1-16")
    fill(disk)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode in (0, 1), out + err  # a chunk log that fails fails its chunk
    assert f"the logs in {disk / 'logs'} are incomplete (No space left on device)" in out, out
    assert "Traceback" not in err and not farm.leftovers()


@pytest.mark.parametrize("output", ["f_[####].png", "movie.mov"])
def test_a_disk_that_fills_under_after_effects_fails_the_chunk_naming_it(
        farm: Farm, small_disk: Disk, output: str) -> None:
    """After Effects words a failed write "Rendering error while writing to file" and
    still exits 0. The run fails (exit 1) naming that line, and leaves nothing behind."""
    disk = small_disk("512k")
    target = disk / output
    farm.knobs.update(FRAME_COST="0.15")
    proc = farm.start("--output", str(target), frames="1-12", concurrency=1)
    assert wait_for(lambda: farm.journal_frames(), timeout=30)
    fill(disk)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, out + err
    assert "Rendering error while writing to file" in out, out
    assert "Traceback" not in out + err
    if output.endswith(".mov"):  # an unfinished movie is no movie: not kept
        assert not target.exists()
    else:  # the frames finished before the disk filled are kept, whole
        from stmpo_celery.aerender import missing_frames
        from stmpo_celery.plan import OutputPattern

        kept = sorted(int(p.stem[2:]) for p in disk.glob("f_*.png"))
        assert kept and not missing_frames(OutputPattern(str(target)), kept), kept
    assert not farm.leftovers()


def test_a_host_redis_already_full_at_the_start_is_named_not_lost(
        farm: Farm, small_disk: Disk, tmp_path: Path) -> None:
    """The host folder full before the render starts: its Redis still answers PING until
    its first write fails (``MISCONF``, wrapped by kombu as it sends the chord). That is
    a broker that cannot save — exit 3 naming the fix — not one "lost while the run
    started"."""
    disk = small_disk("2m")
    env = farm.env(STMPO_HOST_DIR=str(disk / "host"), TMPDIR=str(tmp_path))
    assert stmpo("host", "up", "--port", str(free_port()), env=env).returncode == 0
    try:
        fill(disk)
        res = farm.run(frames="1-4", env=env)
        assert "was lost" not in res.stdout, res.stdout
        assert (res.returncode == 3 and "refuses writes because it cannot save" in res.stdout
                ) or (res.returncode == 0 and "does not answer (MISCONF" in res.stdout), \
            res.stdout + res.stderr
        assert not farm.leftovers()
    finally:
        for f in disk.glob("fill-*"):
            f.unlink()
        stmpo("host", "down", "--force", env=env)


def test_a_probe_left_by_a_killed_process_of_the_same_pid_blocks_nothing(
        tmp_path: Path) -> None:
    """A cancel between the space probe's create and its unlink leaves the probe behind.
    It was named by pid alone and made with O_EXCL: the next process given that pid —
    at once on Windows, always 32 under Wine, 1 in a container — was refused for an
    unwritable folder (exit 2) by every render from then on."""
    from stmpo_celery.broker.keys import host_name
    from stmpo_celery.orchestrator._validate import probe_space

    for name in (f".stmpo-probe-{os.getpid()}", f".stmpo-probe-{host_name()}-{os.getpid()}"):
        (tmp_path / name).write_bytes(b"\0" * 100)  # what a killed probe leaves
    probe_space(str(tmp_path))
    assert not (tmp_path / f".stmpo-probe-{host_name()}-{os.getpid()}").exists()
