"""In-process checks of the stop, secret and log rules (no process needed)."""

from __future__ import annotations

import io
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from stmpo_celery.broker._liveness import judge
from stmpo_celery.broker._redis import mask_url, url_secrets
from stmpo_celery.broker._waits import bounded
from stmpo_celery.config import defaults
from stmpo_celery.config._settings import SETTINGS, convert
from stmpo_celery.errors import BadInput, EnvironmentProblem
from stmpo_celery.host import process_space, release_folder, same_space
from stmpo_celery.host._proc import spaces_match
from stmpo_celery.orchestrator import _logdir
from stmpo_celery.orchestrator._funnel import LogFunnel
from stmpo_celery.orchestrator._stopping import BrokerWatch


def test_every_funnel_line_is_one_line() -> None:
    out = io.StringIO()
    funnel = LogFunnel(None, out)
    for sep in ("\n", "\r", "\r\n", "\v", "\f", "\x85", "\u2028", "\u2029", "\x1c"):
        funnel.line(f"stmpo: FAILED: frame /r/x{sep}openjd_status: FORGED.png missing")
    lines = out.getvalue().split("\n")[:-1]
    assert len(lines) == 9
    assert all(ln.startswith("stmpo: FAILED:") for ln in lines), lines


@pytest.mark.parametrize("url,secret", [
    ("redis+socket://:Sekr3t@/tmp/run/redis.sock", "Sekr3t"),
    ("redis://:Sekr3t@h:6379/0", "Sekr3t"),
    ("redis://user:Sekr3t@h:6379/0", "Sekr3t"),
    ("rediss://user:Sekr3t@h/0", "Sekr3t"),
    ("redis://h:6379/0?password=Sekr3t", "Sekr3t"),
    ("redis://h:6379/0?db=1&PASSWORD=Sekr3t", "Sekr3t"),
    ("unix://:Sekr3t@/tmp/r.sock?virtual_host=1", "Sekr3t"),
    ("redis://:p%40Sekr3t@h:6379/0", "Sekr3t"),
])
def test_every_url_form_is_masked(url: str, secret: str) -> None:
    masked = mask_url(url)
    assert secret not in masked and "***" in masked, masked
    assert any(secret in s for s in url_secrets(url))


def test_a_masked_socket_url_keeps_its_form() -> None:
    assert mask_url("redis+socket:///tmp/r.sock?password=x") == (
        "redis+socket:///tmp/r.sock?password=***")


def test_url_without_secret_is_unchanged() -> None:
    for url in ("redis://h:6379/0", "redis+socket:///tmp/r.sock?virtual_host=1"):
        assert mask_url(url) == url


def test_a_blip_shorter_than_the_grace_is_not_a_loss() -> None:
    w = BrokerWatch(grace=defaults.BROKER_LOSS_GRACE_S)
    assert not w.failed(100.0)
    assert not w.failed(100.0 + defaults.BROKER_LOSS_GRACE_S - 0.1)
    assert w.ok(101.0) == pytest.approx(1.0)  # back: the clock starts again
    assert w.blips == 1
    assert not w.failed(200.0)
    assert w.failed(200.0 + defaults.BROKER_LOSS_GRACE_S)


def test_bounded_never_waits_longer_than_asked() -> None:
    t0 = time.monotonic()
    assert not bounded(lambda: time.sleep(5), 0.2)
    assert time.monotonic() - t0 < 0.5
    assert bounded(lambda: None, 1.0)


def test_the_start_waits_for_its_broker_thread_a_cancel_or_its_deadline() -> None:
    """The run's start on its broker runs beside the main thread, which keeps taking
    signals: a frozen broker holds neither a cancel nor the run past the deadline, and
    what the broker raised is raised where the run can say it."""
    import threading

    import redis

    from stmpo_celery.broker._waits import Waited, until_done

    never = threading.Event()
    assert until_done(lambda: None, lambda: False, 5) is Waited.DONE
    t0 = time.monotonic()
    assert until_done(never.wait, lambda: False, 0.3) is Waited.TIMED_OUT
    assert 0.3 <= time.monotonic() - t0 < 2
    asked = iter(range(4))  # a cancel on the fourth look
    assert until_done(never.wait, lambda: next(asked, None) is None, 60) is Waited.CANCELLED

    def lost() -> None:
        raise redis.TimeoutError("Timeout reading from socket")

    with pytest.raises(redis.TimeoutError, match="reading from socket"):
        until_done(lost, lambda: False, 5)
    never.set()


def test_a_run_is_dead_when_its_orchestrator_is_gone_or_its_beat_stopped() -> None:
    now = time.time()
    me: dict[str, Any] = {"host": "h1", "pid": os.getpid(), "space": process_space(),
                          "pid_started": _started(os.getpid()), "beat": now}
    assert not judge(me, "h1", now).dead
    reused = dict(me, pid_started=me["pid_started"] - 1000)  # same pid, another process
    assert judge(reused, "h1", now).dead
    assert judge(dict(me, pid=2 ** 22 + 7), "h1", now).dead
    far = dict(me, host="h2")  # another host: only the heartbeat tells
    assert not judge(far, "h1", now + defaults.RUN_KEY_TTL_S - 1).dead
    assert judge(far, "h1", now + defaults.RUN_KEY_TTL_S + 1).dead
    assert not judge({"host": "h2", "started": 0}, "h1", now).dead  # an older stmpo's entry
    # A container sharing this host's name (its own PID namespace), a machine cloned
    # under one name (another boot): the pid means nothing here. Judged by the pid, the
    # live run of the docker farm's other render host was reaped mid-render.
    for key in process_space():
        twin = dict(me, pid=2 ** 22 + 7, space={**process_space(), key: "elsewhere"})
        assert not judge(twin, "h1", now).dead, key
        assert judge(twin, "h1", now + defaults.RUN_KEY_TTL_S + 1).dead, key
    assert not judge(dict(me, pid=2 ** 22 + 7, space=None), "h1", now).dead
    # another host's clock a TTL or more off this one's: its alive key in the broker
    # decides, not the time its beat carries
    skewed = dict(far, beat=now - 10 * defaults.RUN_KEY_TTL_S)
    assert not judge(skewed, "h1", now, alive=True).dead
    assert "clock" in judge(dict(far, beat=now + 3600), "h1", now, alive=False).why


def test_a_process_space_survives_json_and_tells_boots_apart() -> None:
    mine = process_space()
    assert mine and same_space(json.loads(json.dumps(mine)))
    assert not same_space(None) and not same_space({}) and not same_space(
        {**mine, "more": "a newer stmpo's"})
    boot_time: dict[str, str | float] = {"boot": 1_700_000_000.0}  # Windows, macOS
    assert spaces_match(boot_time, {"boot": 1_700_000_001.2})  # reported to about 1 s
    assert not spaces_match(boot_time, {"boot": 1_700_000_009.0})
    assert not spaces_match(boot_time, {"boot": True})


def test_a_killed_orchestrator_not_yet_reaped_is_dead() -> None:
    """SIGKILLed, the orchestrator may stay a zombie until its parent (a busy OpenJD
    session, a shell script) reaps it: its run is dead all the same — the warden that
    looks a second later must not take it for alive and leave the run's rows and keys."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        entry = {"host": "h1", "pid": child.pid, "pid_started": _started(child.pid),
                 "space": process_space(), "beat": time.time()}
        assert not judge(entry, "h1", time.time()).dead
        child.kill()
        time.sleep(0.3)  # dead, and not waited for: a zombie
        assert judge(entry, "h1", time.time()).dead
    finally:
        child.wait(10)


def _started(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).create_time())


@pytest.mark.parametrize("name", ["spawn_delay", "stall_timeout", "chunk_timeout",
                                  "launch_cost", "ram_per_process_gb"])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999"])
def test_non_finite_numbers_are_refused(name: str, value: str) -> None:
    with pytest.raises(BadInput, match="finite"):
        convert(SETTINGS[name], value, f"${SETTINGS[name].env}")


# -- the private log root -----------------------------------------------------------------
@pytest.fixture
def tmpdir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_default_log_root_is_private(tmpdir_env: Path) -> None:
    path = _logdir.run_log_dir(None, "abcd0001")
    root = path.parent
    assert root == tmpdir_env / f"stmpo-logs-{os.getuid()}"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    with _logdir.open_private(path / "run.log") as fh:
        fh.write("x\n")
    assert stat.S_IMODE((path / "run.log").stat().st_mode) == 0o600


def test_log_root_symlink_is_refused(tmpdir_env: Path) -> None:
    elsewhere = tmpdir_env / "someone-elses"
    elsewhere.mkdir(mode=0o700)
    (tmpdir_env / f"stmpo-logs-{os.getuid()}").symlink_to(elsewhere)
    with pytest.raises(EnvironmentProblem, match="not a plain directory"):
        _logdir.run_log_dir(None, "abcd0002")
    assert list(elsewhere.iterdir()) == []


def test_log_root_open_to_others_is_refused(tmpdir_env: Path) -> None:
    root = tmpdir_env / f"stmpo-logs-{os.getuid()}"
    root.mkdir()
    root.chmod(0o777)
    with pytest.raises(EnvironmentProblem, match="open to others"):
        _logdir.run_log_dir(None, "abcd0003")


def test_old_run_folders_are_pruned(tmpdir_env: Path) -> None:
    root = tmpdir_env / f"stmpo-logs-{os.getuid()}"
    root.mkdir(mode=0o700)
    for i in range(defaults.LOG_KEEP_RUNS + 5):
        d = root / f"old{i:04d}"
        d.mkdir()
        os.utime(d, (1000 + i, 1000 + i))
    new = _logdir.run_log_dir(None, "abcd0004")
    release_folder(new)
    kept = sorted(p.name for p in root.iterdir())
    assert len(kept) == defaults.LOG_KEEP_RUNS and new.name in kept
    assert "old0000" not in kept and f"old{defaults.LOG_KEEP_RUNS + 4:04d}" in kept


def test_a_run_stmpo_status_still_lists_keeps_its_log_folder(tmpdir_env: Path) -> None:
    """``stmpo status`` lists an ended run for ``ENDED_RUN_SHOWN_S`` with its log: a busy
    host (more than ``LOG_KEEP_RUNS`` runs in that time) must not prune the folders of
    runs that recent — status would point at logs that are gone."""
    root = tmpdir_env / f"stmpo-logs-{os.getuid()}"
    root.mkdir(mode=0o700)
    now = time.time()
    for i in range(defaults.LOG_KEEP_RUNS + 5):  # ended a minute ago, and before
        d = root / f"new{i:04d}"
        d.mkdir()
        os.utime(d, (now - 60 - i, now - 60 - i))
    old = root / "old0000"
    old.mkdir()
    os.utime(old, (now - defaults.ENDED_RUN_SHOWN_S - 60,) * 2)
    release_folder(_logdir.run_log_dir(None, "abcd0005"))
    kept = {p.name for p in root.iterdir()}
    assert {f"new{i:04d}" for i in range(defaults.LOG_KEEP_RUNS + 5)} <= kept
    assert "old0000" not in kept


def test_a_live_runs_log_folder_is_never_pruned(tmpdir_env: Path) -> None:
    """The oldest folder belongs to a run still rendering (another process, hours into a
    long chunk): newer runs must not take its logs away mid-render; once it ends, they
    may."""
    import subprocess
    import sys

    root = tmpdir_env / f"stmpo-logs-{os.getuid()}"
    root.mkdir(mode=0o700)
    for i in range(defaults.LOG_KEEP_RUNS + 2):
        (root / f"run{i:05d}").mkdir()
        os.utime(root / f"run{i:05d}", (1000 + i, 1000 + i))
    holder = subprocess.Popen(  # a run's orchestrator, holding its folder as runs do
        [sys.executable, "-c", "import sys, time\n"
         "from pathlib import Path\n"
         "from stmpo_celery.host import hold_folder\n"
         "hold_folder(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)",
         str(root / "run00000")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        new = _logdir.run_log_dir(None, "abcd0006")
        assert (root / "run00000").is_dir() and not (root / "run00001").exists()
        release_folder(new)
    finally:
        holder.kill()
        holder.wait(10)
    os.utime(root / "run00000", (1000, 1000))  # (its lock file made it look new)
    release_folder(_logdir.run_log_dir(None, "abcd0007"))
    assert not (root / "run00000").exists()  # its run is gone: pruned like any other


def test_explicit_log_dir_is_never_pruned(tmp_path: Path) -> None:
    for i in range(defaults.LOG_KEEP_RUNS + 3):
        (tmp_path / f"r{i}").mkdir()
    _logdir.run_log_dir(str(tmp_path), "abcd0005")
    assert len(list(tmp_path.iterdir())) == defaults.LOG_KEEP_RUNS + 3


def test_registry_shared_with_an_older_stmpo_never_expires() -> None:
    import redis as r
    from conftest import system_redis

    from stmpo_celery.broker._liveness import heartbeat, owned_entry

    if system_redis() is None:
        pytest.skip("no Redis on 127.0.0.1:6379")
    c = r.Redis(port=6379, db=15, decode_responses=True)  # a database no run uses
    try:
        c.delete("stmpo:runs")
        entry = owned_entry(json.dumps({"run": "feed0001", "host": "h"}))
        heartbeat(c, "feed0001", entry)
        assert 0 < c.ttl("stmpo:runs") <= defaults.RUN_KEY_TTL_S
        c.hset("stmpo:runs", "old00001", json.dumps({"run": "old00001", "started": 1.0}))
        heartbeat(c, "feed0001", entry)
        assert c.ttl("stmpo:runs") == -1
    finally:
        c.delete("stmpo:runs", "stmpo:feed0001:x:alive")
        c.close()


def test_the_output_lock_sees_one_folder_through_a_symlink(tmp_path: Path) -> None:
    """Two spellings of one output folder (a link) are one output: the second is refused."""
    from stmpo_celery.errors import BadInput
    from stmpo_celery.orchestrator._outlock import acquire
    from stmpo_celery.plan import OutputPattern

    (tmp_path / "out").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "out")
    lock, _live = acquire(OutputPattern(str(tmp_path / "out" / "f_[####].png")),
                          list(range(1, 41)), "aaaa1111")
    try:
        with pytest.raises(BadInput, match="being rendered by run aaaa1111"):
            acquire(OutputPattern(str(tmp_path / "link" / "f_[####].png")),
                    list(range(30, 51)), "bbbb2222")
    finally:
        lock.release()


def test_a_run_folder_is_reaped_only_once_its_run_is_gone(tmp_path: Path) -> None:
    """kill -9 of everything leaves the run's folder (its spec holds the broker URL): the
    next run deletes it — never while its run lives, never a folder it cannot prove dead."""
    import subprocess
    import sys

    from stmpo_celery.host import reap_run_dirs

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "from stmpo_celery.host import make_run_dir; import sys, time;"
         "p = make_run_dir('stmpo-abcd1234-'); (p / 'spec.json').write_text('redis://:pw@h');"
         "print(p, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        assert holder.stdout is not None
        folder = Path(holder.stdout.readline().strip())
        unknown = tmp_path / "stmpo-older-run"  # no alive.lock: not provably dead
        unknown.mkdir()
        assert folder.parent == tmp_path and reap_run_dirs(tmp_path) == []
        assert (folder / "spec.json").exists()  # its run is alive
    finally:
        holder.kill()
        holder.wait()
    assert reap_run_dirs(tmp_path) == [folder]
    assert not folder.exists() and unknown.exists()


def test_a_run_folder_lost_to_a_reaper_before_it_was_locked_is_given_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another run's reaper can take ``alive.lock`` between its creation and its lock:
    that folder is the reaper's to delete, and the new run makes another."""
    from stmpo_celery.host import _rundir, make_run_dir, remove_run_dir

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(_rundir.tempfile, "tempdir", None)
    real = _rundir.try_lock_file
    calls: list[int] = []

    def taken_once(fh: object) -> bool:
        calls.append(1)
        return len(calls) > 1 and real(fh)

    monkeypatch.setattr(_rundir, "try_lock_file", taken_once)
    folder = make_run_dir("stmpo-abcd1234-")
    try:
        assert [p for p in tmp_path.iterdir()] == [folder]  # the lost one is gone
        assert _rundir.reap_run_dirs(tmp_path) == []  # and this one is locked
    finally:
        remove_run_dir(folder)


def test_settling_a_stopped_launch_keeps_the_frames_another_chunk_finished(
        tmp_path: Path) -> None:
    """A launch stopped with frames 1-5 in its ledger (its renderer dead): frame 3, which a
    thief finished and the run verified whole, is kept while unchanged; the rest go, and
    so does frame 3 once it has been written since (it may be cut short)."""
    from types import SimpleNamespace

    from stmpo_celery.aerender import signature
    from stmpo_celery.orchestrator._handlers import EventHandlers
    from stmpo_celery.plan import parse_output
    from stmpo_celery.slot import ledger_dir, settle_ledgers
    from stmpo_celery.slot._ledger import Ledger

    pattern = parse_output(str(tmp_path / "f_[#].png"))
    for f in range(1, 6):
        Path(pattern.path_for(f)).write_bytes(b"frame %d" % f)
        os.utime(pattern.path_for(f), (time.time() - 60, time.time() - 60))  # a tick ago
    run = SimpleNamespace(prep=SimpleNamespace(pattern=pattern),
                          verified={3: signature(pattern.path_for(3))}, verified_at={3: 0.0})
    run.first_bytes_maybe = lambda f: EventHandlers.first_bytes_maybe(run, f)  # type: ignore[arg-type]

    def settle() -> list[str]:
        ledger = Ledger(pattern, "run1", 0, range(1, 6))
        ledger.open()
        return settle_ledgers(ledger_dir(pattern), lambda e: e.run_id == "run1",
                              owned=lambda f: EventHandlers.unsettled(run, f))  # type: ignore[arg-type]

    assert sorted(settle()) == sorted(pattern.path_for(f) for f in (1, 2, 4, 5))
    assert Path(pattern.path_for(3)).read_bytes() == b"frame 3"
    with open(pattern.path_for(3), "r+b") as fh:  # the stopped renderer began it again
        fh.write(b"FR")
    assert settle() == [pattern.path_for(3)]


@pytest.mark.skipif(not os.path.exists("/proc/self/cmdline"), reason="reads /proc")
def test_every_secret_option_is_scrubbed_from_ps() -> None:
    """A farm worker or Flower lives for days: its --farm URL password and Flower's
    --auth were readable by every user in ps for all that time."""
    import subprocess
    import sys

    code = ("import sys; from stmpo_celery.cli._main import _scrub_secrets; "
            "_scrub_secrets(sys.argv[1:]); print(open('/proc/self/cmdline').read())")
    args = ["--farm", "redis://:FarmPw1@h:6379/0", "--auth=u:AuthPw2", "--farm-dir", "/d",
            "--broker=redis://:BrokerPw3@h/0", "--flower-auth", "w:FlowerPw4",
            "--farm=redis://h/0?password=QueryPw5"]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                         text=True, check=True).stdout
    for secret in ("FarmPw1", "AuthPw2", "BrokerPw3", "FlowerPw4", "QueryPw5"):
        assert secret not in out, out
    assert "--farm-dir\0/d" in out  # what is not a secret stays as given
