"""One run per output: the lock beside the output, refused, reclaimed (real files, real pids)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Farm, tagged

from stmpo_celery.broker.keys import host_name
from stmpo_celery.errors import BadInput
from stmpo_celery.host._proc import process_space, start_time
from stmpo_celery.orchestrator._outlock import acquire
from stmpo_celery.plan._pattern import OutputPattern
from stmpo_celery.slot._ledger import Ledger, entries, state_dir


def plant(pattern: OutputPattern, run: str, frames: str, *, host: str | None = None,
          pid: int | None = None, started: float | None = None,
          stamped: float | None = None, space: object = None) -> Path:
    """A lock file as another run would have written it (in this process space unless
    ``space`` says another)."""
    folder = state_dir(pattern)
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getpid() if pid is None else pid
    info = {"run": run, "host": host or host_name(), "pid": pid,
            "space": process_space() if space is None else space,
            "started": start_time(pid) if started is None else started,
            "pattern": pattern.raw, "frames": frames, "time": stamped or time.time()}
    path = folder / f"run-{run}.lock"
    path.write_text(json.dumps(info))
    if stamped is not None:
        os.utime(path, (stamped, stamped))
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_live_overlapping_run_is_refused_with_its_name(tmp_path: Path) -> None:
    pattern = OutputPattern(str(tmp_path / "shot_[####].png"))
    plant(pattern, "aaaa1111", "1-50")  # this very process: alive
    with pytest.raises(BadInput) as err:
        acquire(pattern, list(range(40, 61)), "bbbb2222")
    msg = err.value.message
    assert "aaaa1111" in msg and host_name() in msg and f"pid {os.getpid()}" in msg
    assert "40-50" in msg and "\n" not in msg
    assert sorted(p.name for p in state_dir(pattern).iterdir()) == ["run-aaaa1111.lock"]


def test_a_wait_takes_the_lock_once_the_live_run_ends(tmp_path: Path) -> None:
    """--output-lock-wait: a requeued task beside a render still running waits for it to
    end (told what it waits for), then takes the output."""
    import threading

    pattern = OutputPattern(str(tmp_path / "shot_[####].png"))
    theirs = plant(pattern, "aaaa1111", "1-50")
    told: list[tuple[str, float]] = []
    threading.Timer(1.2, theirs.unlink).start()  # that run ends
    t0 = time.monotonic()
    lock, live = acquire(pattern, list(range(40, 61)), "bbbb2222", wait=20,
                         on_wait=lambda busy, left: told.append((busy.holder(), left)))
    assert 1.2 <= time.monotonic() - t0 < 5 and live == set()
    assert told and told[0][0] == f"run aaaa1111 on {host_name()} (pid {os.getpid()})"
    assert len(told) == 1 and 19 < told[0][1] <= 20  # said once, not on every look
    assert sorted(p.name for p in state_dir(pattern).iterdir()) == ["run-bbbb2222.lock"]
    lock.release()


def test_a_wait_that_runs_out_refuses_saying_how_long_it_waited(tmp_path: Path) -> None:
    pattern = OutputPattern(str(tmp_path / "shot_[####].png"))
    plant(pattern, "aaaa1111", "1-50")
    with pytest.raises(BadInput, match=r"aaaa1111 .*\(waited 0.5 s\)"):
        acquire(pattern, [7], "bbbb2222", wait=0.5)
    assert sorted(p.name for p in state_dir(pattern).iterdir()) == ["run-aaaa1111.lock"]


def test_disjoint_frames_and_other_patterns_are_not_refused(tmp_path: Path) -> None:
    pattern = OutputPattern(str(tmp_path / "shot_[####].png"))
    plant(pattern, "aaaa1111", "1-50")
    lock, live = acquire(pattern, list(range(51, 61)), "bbbb2222")
    assert live == {"aaaa1111"}
    lock2, _ = acquire(OutputPattern(str(tmp_path / "shot_[####].exr")), [1], "cccc3333")
    lock.release()
    lock2.release()
    assert sorted(p.name for p in state_dir(pattern).iterdir()) == ["run-aaaa1111.lock"]


def test_dead_or_reused_pid_and_stale_remote_locks_are_reclaimed(tmp_path: Path) -> None:
    pattern = OutputPattern(str(tmp_path / "shot_[####].png"))
    plant(pattern, "dead0001", "1-10", pid=dead_pid())
    plant(pattern, "reuse002", "1-10", started=12345.0)  # our pid, another start time
    plant(pattern, "gone0003", "1-10", host="elsewhere", pid=1, stamped=time.time() - 600)
    lock, live = acquire(pattern, list(range(1, 11)), "mine0004")
    assert live == set()
    assert sorted(p.name for p in state_dir(pattern).iterdir()) == ["run-mine0004.lock"]
    lock.release()
    assert not state_dir(pattern).exists()


def test_the_lock_of_a_killed_run_its_parent_never_reaped_is_reclaimed(
        tmp_path: Path) -> None:
    """A render killed while its parent was frozen stays a zombie with its pid and start
    time: it holds nothing, and a waiting attempt must not wait for it."""
    import psutil

    pattern = OutputPattern(str(tmp_path / "shot_[####].png"))
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # not waited for: a zombie
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        plant(pattern, "zomb0001", "1-10", pid=zombie.pid)
        lock, live = acquire(pattern, [5], "mine0002")
        assert live == set()
        lock.release()
    finally:
        zombie.wait()


def test_fresh_remote_lock_is_live(tmp_path: Path) -> None:
    pattern = OutputPattern(str(tmp_path / "shot_[####].png"))
    plant(pattern, "far00001", "1-10", host="elsewhere", pid=1)
    with pytest.raises(BadInput, match="far00001 on elsewhere"):
        acquire(pattern, [5], "mine0002")


def test_a_remote_lock_is_aged_by_the_folders_clock_not_this_hosts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a share, the file server stamps the locks: a host whose clock runs minutes
    ahead of it took every live remote lock for stale and rendered over their frames
    (and one behind kept a dead one's lock for as long as the time its writer put in)."""
    pattern = OutputPattern(str(tmp_path / "shot_[####].png"))
    plant(pattern, "far00001", "1-10", host="elsewhere", pid=1)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 1000)  # this host's clock ahead
    with pytest.raises(BadInput, match="far00001 on elsewhere"):
        acquire(pattern, [5], "mine0002")
    monkeypatch.setattr(time, "time", real)
    plant(pattern, "far00001", "1-10", host="elsewhere", pid=1, stamped=real() - 600)
    (state_dir(pattern) / "run-far00001.lock").write_text(json.dumps(
        {**json.loads((state_dir(pattern) / "run-far00001.lock").read_text()),
         "time": real() + 3600}))  # its writer's clock an hour ahead: says nothing
    os.utime(state_dir(pattern) / "run-far00001.lock", (real() - 600, real() - 600))
    lock, live = acquire(pattern, [5], "mine0003")
    assert live == set()
    lock.release()


def test_a_lock_of_a_twin_of_this_hosts_name_is_live_until_stale(tmp_path: Path) -> None:
    """A container sharing this host's name, or a clone of it, renders to the same shared
    folder: its pid means nothing here, so its fresh lock holds (it was reclaimed, and
    both rendered the same frames); a stale one is reclaimed as any remote lock is."""
    pattern = OutputPattern(str(tmp_path / "shot_[####].png"))
    twin = {**process_space(), "boot": "another boot"}
    plant(pattern, "twin0001", "1-10", pid=dead_pid(), space=twin)
    with pytest.raises(BadInput, match=f"twin0001 on {host_name()}"):
        acquire(pattern, [5], "mine0002")
    plant(pattern, "twin0001", "1-10", pid=dead_pid(), space=twin, stamped=time.time() - 600)
    lock, live = acquire(pattern, [5], "mine0003")
    assert live == set()
    lock.release()


def test_busy_output_refusal_starts_nothing_and_keeps_the_other_runs_ledger(
        farm: Farm) -> None:
    pattern = OutputPattern(farm.pattern)
    farm.out.mkdir()
    plant(pattern, "live0001", "1-100")
    ledger = Ledger(pattern, "live0001", 0, [7])
    ledger.open()
    Path(pattern.path_for(7)).write_bytes(b"half")
    res = subprocess.run(farm.argv(frames="5-9"), capture_output=True, text=True,
                         env=farm.env(), timeout=30, stdin=subprocess.DEVNULL)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stmpo: error: ")
    assert "live0001" in lines[0] and "Traceback" not in res.stderr
    assert not tagged(farm.tag) and not farm.journal.exists()
    # the live run's in-flight frame and ledger are its own business
    assert Path(pattern.path_for(7)).exists() and [e.run_id for e in entries(
        state_dir(pattern))] == ["live0001"]


def test_a_lock_that_cannot_be_read_is_refused_not_reclaimed(tmp_path: Path) -> None:
    """A lock file that says nothing is a dead run's; one that cannot be read at all may
    be a live run's (another user's, a share's permissions): one line, exit 2, and it
    stays (taking it for dead would let two runs write the same frames)."""
    pattern = OutputPattern(str(tmp_path / "shot_[####].png"))
    folder = state_dir(pattern)
    (folder / "run-other001.lock").mkdir(parents=True)  # reading it fails (as root too)
    with pytest.raises(BadInput, match="cannot read the output lock .*run-other001.lock"):
        acquire(pattern, [1], "mine0005")
    assert sorted(p.name for p in folder.iterdir()) == ["run-other001.lock"]


def test_malformed_locks_are_reclaimed_not_a_traceback(tmp_path: Path) -> None:
    pattern = OutputPattern(str(tmp_path / "shot_[####].png"))
    folder = state_dir(pattern)
    folder.mkdir()
    (folder / "run-junk0001.lock").write_text("{not json")
    (folder / "run-junk0002.lock").write_text(json.dumps({"host": host_name(), "pid": -5}))
    (folder / "run-junk0003.lock").write_text(json.dumps(["a", "list"]))
    lock, live = acquire(pattern, [1], "mine0004")
    assert live == set()
    assert sorted(p.name for p in folder.iterdir()) == ["run-mine0004.lock"]
    lock.release()


def test_a_run_that_claims_the_folder_just_after_keeps_its_frames_in_flight(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard is released once a run's claim is written, before it settles the
    ledgers of stopped runs. A run on other frames of the same folder that claims it in
    between (lock first, then its renders) must not have its in-flight frames deleted as
    a dead run's; a ledger with no lock and no live run is still settled."""
    from stmpo_celery.config import RenderOptions
    from stmpo_celery.orchestrator import Prepared, _validate

    opts = RenderOptions(project=str(tmp_path / "p.aep"), frames="1-10",
                         output=str(tmp_path / "shot_[####].png"), comp="C")
    pattern = OutputPattern(opts.output)
    prep = Prepared(options=opts, project=opts.project, pattern=pattern,
                    frames=list(range(1, 11)), to_render=list(range(1, 11)),
                    aerender="aerender", broker=None, chunk_size=None)
    dead = Ledger(pattern, "dead0001", 0, [40])  # killed long ago: no lock, no process
    dead.open()
    Path(pattern.path_for(40)).write_bytes(b"half")
    real = _validate.acquire

    def then_another_run_starts(*args: object, **kw: object) -> object:
        got = real(*args, **kw)  # type: ignore[arg-type]
        plant(pattern, "next0002", "21-30")  # this very process: alive
        Ledger(pattern, "next0002", 0, [21]).open()
        Path(pattern.path_for(21)).write_bytes(b"rendering")
        return got

    monkeypatch.setattr(_validate, "acquire", then_another_run_starts)
    _validate.claim_output(prep)
    try:
        assert Path(pattern.path_for(21)).read_bytes() == b"rendering"
        assert "next0002" in [e.run_id for e in entries(state_dir(pattern))]
        assert not Path(pattern.path_for(40)).exists()
        assert "dead0001" not in [e.run_id for e in entries(state_dir(pattern))]
        assert any("half-written" in n for n in prep.notes)
    finally:
        prep.release()
