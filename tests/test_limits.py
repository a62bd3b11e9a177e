"""A render host's process limits: open files too few for the slots asked, a limit that
runs out mid-run. Real processes under real ``setrlimit``/``prlimit`` limits."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from conftest import Farm, PrivateRedis, free_port, wait_for
from framelib import whole
from hostlib import host_env

from stmpo_celery.config import defaults

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX limits")


def nofile(limit: int) -> Callable[[], None]:
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def test_an_open_file_limit_too_low_for_the_slots_is_refused_before_anything_starts(
        farm: Farm, tmp_path: Path) -> None:
    """Redis takes as many clients as its open-file limit allows, less 32, and every slot
    needs about ten: under a low hard limit runs failed at random ("max number of clients
    reached", "Broken pipe", "lost while the run started"). The need is checked first:
    one line naming the limit and the fix, exit 3, nothing started; a host service under
    such a limit is refused the same way, its folder not even made."""
    need = defaults.FDS_PER_RUN + defaults.FDS_PER_SLOT * 4
    res = subprocess.run(farm.argv(frames="1-8", concurrency=4), capture_output=True,
                         text=True, env=farm.env(), timeout=60, stdin=subprocess.DEVNULL,
                         preexec_fn=nofile(need - 8))
    assert res.returncode == 3, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"open-file limit is {need - 8}" in lines[0], res.stderr
    assert f"ulimit -n {need}" in lines[0] and "Traceback" not in res.stderr
    assert not farm.journal.exists() and not farm.out.exists() and not farm.leftovers()

    host_dir = tmp_path / "host"
    up = subprocess.run([sys.executable, "-m", "stmpo_celery.cli", "host", "up", "--port",
                         str(free_port())], capture_output=True, text=True, timeout=60,
                        env=host_env(farm, host_dir), stdin=subprocess.DEVNULL,
                        preexec_fn=nofile(256))
    assert up.returncode == 3 and "the host service needs about" in up.stderr, up.stderr
    assert not host_dir.exists()


def test_a_low_soft_limit_is_raised_to_the_hard_one(farm: Farm) -> None:
    """A shell's soft limit (macOS starts at 256) below what 8 slots need, with room
    under the hard limit: raised, the render runs."""
    need = defaults.FDS_PER_RUN + defaults.FDS_PER_SLOT * 8

    def soft_only() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, need * 2))

    res = subprocess.run(farm.argv(frames="1-16", concurrency=8), capture_output=True,
                         text=True, env=farm.env(), timeout=120, stdin=subprocess.DEVNULL,
                         preexec_fn=soft_only)
    assert res.returncode == 0, res.stdout + res.stderr
    assert farm.frames_on_disk() == list(range(1, 17)) and not farm.leftovers()


def test_running_out_of_file_descriptors_mid_run_ends_in_one_line_not_a_traceback(
        farm: Farm) -> None:
    """The orchestrator's limit lowered under its feet (``prlimit``): its cleanup could
    not list processes (psutil reads /proc) and the run ended in a traceback, with no
    last line. Now every step of the cleanup runs, the run ends with a FAILED line that
    names the limit, and no process is left."""
    proc = farm.start_rendering(frame_cost="0.1", frames="1-40")
    used = len(os.listdir(f"/proc/{proc.pid}/fd"))
    low = max(8, used - 6)
    subprocess.run(["prlimit", f"--pid={proc.pid}", f"--nofile={low}:{low}"], check=True)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in out + err, out + err
    assert proc.returncode in (0, 1, 3), out + err
    if proc.returncode != 0:
        assert "stmpo: FAILED" in out or "stmpo: error" in err, out + err
    assert not farm.leftovers(timeout=10)
    assert wait_for(lambda: not [p for p in psutil.process_iter(["environ"])
                                 if (p.info.get("environ") or {}).get("STMPO_TEST_TAG")
                                 == farm.tag], timeout=10)


def hold_embedded_redis(render: subprocess.Popen[str], seconds: float) -> None:
    """Hold the render's embedded Redis still (SIGSTOP) for ``seconds``, then let it go."""
    import signal
    import time

    server = next(c for c in psutil.Process(render.pid).children(recursive=True)
                  if "redis-server" in c.name())
    server.send_signal(signal.SIGSTOP)
    time.sleep(seconds)
    try:
        server.send_signal(signal.SIGCONT)
    except psutil.NoSuchProcess:  # a run that called it lost has stopped it already
        pass


def test_an_embedded_redis_stopped_for_a_moment_is_not_lost(farm: Farm) -> None:
    """A host under memory or CPU pressure can hold a process still for seconds. An
    embedded Redis that lives but does not answer for 3 s was declared lost at once
    (exit 3, the render thrown away): it now gets the grace an external broker gets."""
    proc = farm.start_rendering(frame_cost="0.1", frames="1-40")
    hold_embedded_redis(proc, 3)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert farm.frames_on_disk() == list(range(1, 41)) and not farm.leftovers()


def test_a_broker_stopped_long_enough_to_lose_the_run_keeps_every_written_frame(
        farm: Farm) -> None:
    """The embedded Redis held still for 10 s: the run is lost (exit 3), and the slots
    are stopped. Their log readers had waited on the broker for every frame, so After
    Effects went on writing frames (and reporting them into a pipe nobody read) while
    the in-flight ledgers still listed them: 343 whole frames of 385 were deleted as in
    flight. The reader no longer waits on the broker; a frame reported done stays."""
    import time

    farm.knobs["WRITE_TIME"] = "0.02"  # each frame written in place over 20 ms, as AE does
    proc = farm.start_rendering(frame_cost="0.1", frames="1-400")  # 20 s: outlives the stall
    time.sleep(1.0)
    hold_embedded_redis(proc, 10)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3 and "Redis was lost mid-run" in out, out + err
    written = set(farm.journal_frames())
    gone = sorted(written - set(farm.frames_on_disk()))
    # a slot stopped between a frame's write and the reader taking its line: one a slot
    assert len(written) > 100 and len(gone) <= 2, (len(written), gone, out[-2000:])
    kept = sorted(farm.out.glob("shot_*.png"))  # and never one cut short by the stop
    assert kept and [p.name for p in kept if not whole(p)] == []
    assert not farm.leftovers()


def test_a_run_stopped_longer_than_its_keys_live_says_so(farm: Farm) -> None:
    """The orchestrator stopped (SIGSTOP, a paused VM) for longer than its keys live in
    the broker: they expired. That was reported as a broker "restarted empty"; it now
    says the run was stopped, for how long, and why that lost its queue."""
    import signal
    import time

    proc = farm.start_rendering(frame_cost="0.2", frames="1-400")
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(defaults.RUN_KEY_TTL_S + 4)
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, out + err
    assert f"this run was stopped for {defaults.RUN_KEY_TTL_S + 4}" in out or (
        f"this run was stopped for {defaults.RUN_KEY_TTL_S + 5}" in out), out
    assert "restarted empty" not in out and not farm.leftovers()


def test_a_broker_out_of_memory_is_named_with_its_fix(farm: Farm,
                                                    private_redis: PrivateRedis) -> None:
    """An external Redis at its ``maxmemory`` (``noeviction``) refuses writes: the run
    ended with exit 1 "orchestrator error: OutOfMemoryError". It is the broker's
    problem: exit 3, a line that says so and what to raise."""
    private_redis.client.config_set("maxmemory-policy", "noeviction")
    proc = farm.start_rendering("--broker", private_redis.url, frame_cost="0.1",
                                frames="1-60")
    private_redis.client.config_set("maxmemory", "1")
    out, err = proc.communicate(timeout=120)
    private_redis.client.config_set("maxmemory", "0")
    assert proc.returncode == 3, out + err
    assert "the broker refuses writes: it is out of memory (its maxmemory)" in out, out
    assert "orchestrator error" not in out and not farm.leftovers()


def test_a_frame_that_cannot_be_read_now_is_never_deleted_as_not_whole(
        tmp_path: Path) -> None:
    """Out of file descriptors at the run's end, every frame read as "not whole" and the
    check deleted them all — whole frames included. A frame that cannot be read is not
    known to be anything: kept (the run fails, and a resume re-checks it); once it can be
    read again, only the cut-short one goes."""
    from stmpo_celery.aerender import delete_incomplete
    from stmpo_celery.aerender._fakeframes import frame_bytes
    from stmpo_celery.plan import OutputPattern

    pattern = OutputPattern(str(tmp_path / "f_[####].png"))
    whole = frame_bytes("x.png", 1)
    Path(pattern.path_for(1)).write_bytes(whole)
    Path(pattern.path_for(2)).write_bytes(whole[: len(whole) // 2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fds: list[int] = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16,
                                                    hard))
        try:
            while True:
                fds.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        gone = delete_incomplete(pattern, [1, 2])
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert gone == [] and Path(pattern.path_for(1)).exists()
    assert delete_incomplete(pattern, [1, 2]) == [pattern.path_for(2)]
    assert Path(pattern.path_for(1)).read_bytes() == whole


def test_a_broker_that_refuses_writes_after_the_last_frame_is_a_warning(
        farm: Farm, private_redis: PrivateRedis) -> None:
    """Every frame whole, After Effects still quitting, and then the broker refuses writes
    (out of memory): as for a broker lost at that moment, the render is done — a warning
    and exit 0, not a failed task Deadline would render again."""
    farm.knobs.update(QUIT_TIME="4")
    private_redis.client.config_set("maxmemory-policy", "noeviction")
    proc = farm.start_rendering("--broker", private_redis.url, frame_cost="0.05",
                                frames="1-20")
    assert wait_for(lambda: len(set(farm.journal_frames())) == 20, timeout=60)
    private_redis.client.config_set("maxmemory", "1")
    out, err = proc.communicate(timeout=120)
    private_redis.client.config_set("maxmemory", "0")
    assert proc.returncode == 0, out + err
    assert "WARNING: after the last frame, the broker refuses writes" in out, out
    assert farm.frames_on_disk() == list(range(1, 21)) and not farm.leftovers()


def test_an_environment_problem_inside_the_run_keeps_its_words_and_code(farm: Farm) -> None:
    """The embedded Redis failing to start (its temp folder full, its open-file limit)
    said so in its own line and exit 3 before the run began, but once inside the run it
    became "orchestrator error: EnvironmentProblem: …" and exit 1."""
    res = farm.run(frames="1-4", env=farm.env(STMPO_REDIS_SERVER="/bin/false"))
    assert res.returncode == 3, res.stdout + res.stderr
    assert "FAILED: embedded redis-server exited at start" in res.stdout, res.stdout
    assert "orchestrator error" not in res.stdout and not farm.leftovers()
