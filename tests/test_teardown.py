"""Stopping, expiring, secrets, private logs, forged directives: real runs, killed for real."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from conftest import Farm, PrivateRedis, free_port, tagged, wait_for
from framelib import bad_files, mid_write
from freezeproxy import FreezeProxy

from stmpo_celery.broker import keys
from stmpo_celery.config import defaults

pytestmark = pytest.mark.slow


def start_in_own_group(farm: Farm, *extra: str, env: dict[str, str] | None = None,
                       **kw: Any) -> subprocess.Popen[str]:
    """`stmpo render` leading its own process group, as a terminal or OpenJD starts it."""
    return subprocess.Popen(farm.argv(*extra, **kw), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or farm.env(),
                            stdin=subprocess.DEVNULL, start_new_session=True)


def timed_signal(proc: subprocess.Popen[str], sig: int,
                 timeout: float) -> tuple[str, str, float]:
    """Send ``sig``; the output, and the seconds from the signal to the process's end."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    return out, err, time.monotonic() - t0


def run_id_of(proc: subprocess.Popen[str], seen: list[str]) -> str:
    assert proc.stdout is not None
    for line in iter(proc.stdout.readline, ""):
        seen.append(line)
        if line.startswith("stmpo: run "):
            return line.split()[2]
    raise AssertionError("no run line")


# -- stopping ---------------------------------------------------------------------------
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_group_signal_exits_within_a_second(farm: Farm, sig: int, code: int) -> None:
    """Ctrl-C reaches the whole process group; the embedded Redis must not die first and
    leave the stop waiting on it."""
    farm.knobs.update(FRAME_COST="0.2")
    proc = start_in_own_group(farm, frames="1-40", concurrency=2)
    try:
        assert wait_for(lambda: farm.journal_frames(), timeout=30)
        t0 = time.monotonic()
        os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == code, out + err
    assert elapsed < 1.0, f"took {elapsed:.2f} s to exit"
    assert "Traceback" not in out + err
    assert not farm.leftovers(timeout=3)


def test_ctrl_c_at_any_moment_of_start_up_exits_130_without_a_traceback(farm: Farm) -> None:
    """While Python loads stmpo, while render loads the orchestrator, while it prepares:
    a Ctrl-C always ends with 130, one line at most, and nothing left behind. Only in
    Python's own start-up, before the first of stmpo's code runs, is a Ctrl-C Python's
    (its KeyboardInterrupt traceback names none of stmpo's files)."""
    for delay in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4):
        proc = farm.start(frames="1-8", concurrency=2)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        if proc.returncode == 0:
            continue  # it finished first (no Ctrl-C handling left to check)
        # 130, or ended by the SIGINT itself (a shell's $? is 130 too)
        assert proc.returncode in (130, -signal.SIGINT), (
            f"at {delay} s: {proc.returncode}\n{out[-2000:]}{err[-2000:]}")
        assert "Traceback" not in out + err or "stmpo_celery" + os.sep not in out + err, (
            f"at {delay} s:\n{out}{err}")
        assert not farm.leftovers()


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_cancel_during_start_up_ends_with_its_code_and_a_summary(
        farm: Farm, sig: int, code: int) -> None:
    """From the moment stmpo's own code runs, a cancel ends with its exit code and the
    summary the README promises (nothing rendered), and leaves nothing behind; only in
    Python's own start-up before that does the signal end the process itself."""
    handled = 0
    for delay in (0.15, 0.2, 0.25, 0.3, 0.35, 0.45, 0.6, 0.8):  # a loaded host starts late
        farm.summary.unlink(missing_ok=True)
        proc = farm.start(frames="1-8", concurrency=2)
        time.sleep(delay)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert "Traceback" not in out + err, f"at {delay} s:\n{out}{err}"
        assert not farm.leftovers()
        if proc.returncode in (0, -sig):
            continue  # finished first, or still in Python's start-up
        assert proc.returncode == code, f"at {delay} s: {proc.returncode}\n{out}{err}"
        assert "CANCELLED by" in out
        assert farm.load_summary()["exit_code"] == code, f"at {delay} s"
        assert farm.load_summary()["status"] == "cancelled", f"at {delay} s"
        handled += 1
    assert handled >= 3  # most of start-up is stmpo's own


def test_sighup_is_a_cancel_with_129_and_a_summary(farm: Farm) -> None:
    proc = farm.start_rendering(frame_cost="0.2")
    try:
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 129, out + err
    assert "CANCELLED by SIGHUP" in out
    summary = farm.load_summary()
    assert summary["exit_code"] == 129 and summary["status"] == "cancelled"
    started = [c for c in summary["chunks"] if c["t0"] is not None]
    assert started and all(c["status"] in ("done", "stopped") and c["t1"] for c in started)
    assert not farm.leftovers(timeout=3)


def test_second_signal_forces_the_exit_while_the_broker_is_frozen(
        farm: Farm, private_redis: PrivateRedis) -> None:
    proc = farm.start_rendering("--broker", private_redis.url, frame_cost="0.2")
    try:
        os.kill(private_redis.proc.pid, signal.SIGSTOP)  # answers nothing, refuses nothing
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        out, err, elapsed = timed_signal(proc, signal.SIGTERM, timeout=60)
    finally:
        proc.kill()
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    assert proc.returncode == 143, out + err
    assert elapsed < 1.0, f"took {elapsed:.2f} s after the second signal"
    assert "forced to exit by a second SIGTERM" in out and "FAILED" not in out
    assert not farm.leftovers(timeout=5)


def test_one_cancel_while_the_broker_is_frozen_ends_well_inside_the_notify_period(
        farm: Farm, private_redis: PrivateRedis) -> None:
    """A Redis that answers nothing (a hung host, a partitioned farm Redis) must not hold a
    cancel past the bundle's notify period: after it comes SIGKILL, and the half-written
    frames stay. Flower's row of the run waited 30 s a call on it (~2 min in all)."""
    import yaml

    template = Path(__file__).parents[1] / "openjd_bundle" / "template.yaml"
    (step,) = yaml.safe_load(template.read_text())["steps"]
    notify = step["script"]["actions"]["onRun"]["cancelation"]["notifyPeriodInSeconds"]
    farm.knobs.update(WRITE_TIME="1.0")
    proc = farm.start_rendering("--broker", private_redis.url, frame_cost="0.05")
    try:
        assert wait_for(lambda: mid_write(farm), timeout=30), "no frame caught mid-write"
        os.kill(private_redis.proc.pid, signal.SIGSTOP)  # answers nothing, refuses nothing
        out, err, elapsed = timed_signal(proc, signal.SIGTERM, timeout=4 * notify)
    finally:
        proc.kill()
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    assert proc.returncode == 143 and "CANCELLED by SIGTERM" in out, out + err
    assert elapsed < notify / 2, f"took {elapsed:.1f} s of the {notify} s notify period"
    assert farm.load_summary()["status"] == "cancelled"
    assert bad_files(farm) == [], "half-written frames left behind"
    assert not farm.leftovers(timeout=5)


@pytest.mark.parametrize("step", [rb"SUBSCRIBE", rb"LPUSH"], ids=["subscribe", "chord"])
def test_a_broker_that_stops_answering_while_the_run_starts_holds_no_cancel(
        farm: Farm, private_redis: PrivateRedis, step: bytes) -> None:
    """Frozen as the run subscribes to its events or sends its chord (kombu waits 30 s a
    read, and retries): the cancel that came meanwhile was only seen once the broker
    answered — as the chord went out, never; as it subscribed, after ~40 s, and then
    reported as exit 1 "orchestrator error: network:TimeoutError"."""
    proxy = FreezeProxy(private_redis.port, step)
    proc = farm.start("--broker", proxy.url(), frames="1-40")
    try:
        assert wait_for(proxy.frozen.is_set, timeout=30), f"the run never sent {step!r}"
        time.sleep(0.5)
        out, err, elapsed = timed_signal(proc, signal.SIGTERM, timeout=90)
    finally:
        proc.kill()
        proxy.close()
    assert proc.returncode == 143 and "CANCELLED by SIGTERM" in out, out + err
    assert elapsed < 15, f"took {elapsed:.1f} s after the cancel"
    assert farm.load_summary()["status"] == "cancelled"
    assert not farm.leftovers(timeout=5)


# -- every key expires -------------------------------------------------------------------
def test_keys_made_after_the_last_beat_get_a_ttl_from_the_next_command(
        private_redis: PrivateRedis) -> None:
    from stmpo_celery.broker._liveness import reap_dead_runs

    c = private_redis.client
    c.set("stmpo:deadbeef:celery-task-meta-1", "x")  # a run no registry knows any more
    c.hset("stmpo:runs", "cafe0001", json.dumps({"run": "cafe0001", "host": "elsewhere",
                                                 "beat": time.time()}))
    c.set("stmpo:cafe0001:x:state", "y")  # a live run's key: left to its own beat
    c.set(keys.alive_key("cafe0001"), "1", ex=defaults.RUN_KEY_TTL_S)  # as its beat sets
    reap_dead_runs(c)
    assert 0 < c.ttl("stmpo:deadbeef:celery-task-meta-1") <= defaults.RUN_KEY_TTL_S
    assert c.ttl("stmpo:cafe0001:x:state") == -1
    # its host's clock an hour behind this one's: alive all the same while it beats (the
    # broker's clock expires its alive key; judged by the beat's time it was reaped)
    c.hset("stmpo:runs", "cafe0001", json.dumps({"run": "cafe0001", "host": "elsewhere",
                                                 "beat": time.time() - 3600}))
    assert reap_dead_runs(c) == {}
    c.delete(keys.alive_key("cafe0001"))  # its beats stopped a TTL ago
    assert reap_dead_runs(c) == {"cafe0001": "no heartbeat for 3600 s"}
    assert not c.exists("stmpo:cafe0001:x:state") and not c.hexists("stmpo:runs", "cafe0001")


def _kill_everything(farm: Farm, proc: subprocess.Popen[str]) -> None:
    """SIGKILL the orchestrator and every slot at once: nobody gets to clean up."""
    victims = [p for p in tagged(farm.tag) if p.pid != proc.pid]
    for p in [psutil.Process(proc.pid), *victims]:
        try:
            p.suspend()
        except psutil.Error:
            pass
    for p in [psutil.Process(proc.pid), *victims]:
        try:
            p.kill()
        except psutil.Error:
            pass
    proc.wait(timeout=10)
    assert wait_for(lambda: not tagged(farm.tag), timeout=10)


def _status(farm: Farm, url: str) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-m", "stmpo_celery.cli", "status", "--broker", url,
                          "--once", "--json"], capture_output=True, text=True, timeout=60,
                         env=farm.env(), stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def test_sigkilled_run_is_shown_dead_once_then_gone(farm: Farm,
                                                    private_redis: PrivateRedis) -> None:
    farm.knobs.update(FRAME_COST="0.2")
    proc = farm.start("--broker", private_redis.url, frames="1-40", concurrency=2)
    seen: list[str] = []
    run_id = run_id_of(proc, seen)
    assert wait_for(lambda: farm.journal_frames(), timeout=30)
    _kill_everything(farm, proc)
    assert any(k.startswith(f"stmpo:{run_id}:") for k in private_redis.all_keys())
    first = _status(farm, private_redis.url)
    runs = [r for r in first["runs"] if r["run"] == run_id]
    assert runs and runs[0]["state"] == "dead", first
    assert "is gone" in runs[0]["dead_because"]
    second = _status(farm, private_redis.url)
    assert not [r for r in second["runs"] if r["run"] == run_id], second
    assert {k for k in private_redis.all_keys() if k.startswith("stmpo:")} == set()


def test_sigkilled_run_keys_expire_with_nobody_cleaning(farm: Farm,
                                                        private_redis: PrivateRedis) -> None:
    proc = farm.start_rendering("--broker", private_redis.url, frame_cost="0.2")
    # a beat after the slots took their chunks (keys made since the last beat have no
    # TTL yet; the next stmpo command gives them one: see the test below)
    time.sleep(defaults.HEARTBEAT_INTERVAL_S + defaults.WATCHDOG_INTERVAL_S + 0.5)
    _kill_everything(farm, proc)
    left = private_redis.all_keys()
    assert any(k.startswith("stmpo:") for k in left)
    ttls = {k: private_redis.client.pttl(k) for k in left}
    assert all(0 < t <= defaults.RUN_KEY_TTL_S * 1000 for t in ttls.values()), ttls
    # Nobody refreshes them: a heartbeat later every TTL has only gone down and no key was
    # made, so Redis removes them all within RUN_KEY_TTL_S (its own expiry is not re-tested)
    time.sleep(defaults.HEARTBEAT_INTERVAL_S + 1.0)
    later = {k: private_redis.client.pttl(k) for k in private_redis.all_keys()}
    assert set(later) <= set(ttls), set(later) - set(ttls)
    assert all(0 < t <= ttls[k] - defaults.HEARTBEAT_INTERVAL_S * 1000
               for k, t in later.items()), (ttls, later)


def test_event_that_is_not_utf8_does_not_kill_the_run(farm: Farm,
                                                      private_redis: PrivateRedis) -> None:
    farm.knobs.update(FRAME_COST="0.05")
    proc = farm.start("--broker", private_redis.url, frames="1-24", concurrency=2)
    seen: list[str] = []
    run_id = run_id_of(proc, seen)
    raw = redis.Redis(port=private_redis.port)
    raw.publish(f"stmpo:{run_id}:x:events", b"\xff\xfe{not json")
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, "".join(seen) + out + err
    assert farm.frames_on_disk() == list(range(1, 25))


# -- secrets -----------------------------------------------------------------------------
def _api(port: int, path: str, auth: str | None) -> tuple[int, str]:
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if (
        auth) else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _cmdlines(pids: list[psutil.Process]) -> str:
    out = []
    for p in pids:
        try:
            out.append(" ".join(p.cmdline()))
        except psutil.Error:
            pass
    return "\n".join(out)


def test_no_password_in_flower_api_metrics_or_argv(farm: Farm, tmp_path: Path) -> None:
    farm.knobs.update(STARTUP="0.3", FRAME_COST="0.3")
    port = free_port()
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    proc = farm.start("--flower", f"127.0.0.1:{port}", "--flower-auth", "u:Fl0werPw",
                      env=farm.env(TMPDIR=str(private_tmp)), frames="1-40", concurrency=2)
    try:
        assert wait_for(lambda: farm.journal_frames(), timeout=30)
        spec = next(private_tmp.glob("stmpo-*-*/spec.json"))
        url = json.loads(spec.read_text())["broker_url"]
        embedded_pw = url.split("://:", 1)[1].split("@", 1)[0]
        assert len(embedded_pw) > 10
        assert wait_for(lambda: _api(port, "/api/workers?refresh=1", "u:Fl0werPw")[1].count(
            "broker") >= 2, timeout=20)
        code, body = _api(port, "/api/workers?refresh=1", "u:Fl0werPw")
        assert code == 200 and "hostname" in body
        assert embedded_pw not in body
        assert _api(port, "/metrics", None)[0] == 401
        assert _api(port, "/metrics", "u:Fl0werPw")[0] == 200
        text = _cmdlines(tagged(farm.tag))
        assert "--flower-auth" in text and "Fl0werPw" not in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_broker_password_never_in_argv_or_aerender_environment(farm: Farm) -> None:
    r = PrivateRedis(password="Br0kerPw")
    try:
        farm.knobs.update(STARTUP="0.3", FRAME_COST="0.2")
        env = farm.env(STMPO_BROKER_URL=r.url)
        proc = farm.start("--broker", r.url, frames="1-40", concurrency=2, env=env)
        assert wait_for(lambda: farm.journal_frames(), timeout=30)
        procs = tagged(farm.tag)
        text = _cmdlines(procs)
        assert "--broker" in text and "Br0kerPw" not in text, text
        renderers = [p for p in procs if "fake-aerender" in _cmdlines([p])
                     and "--project" not in _cmdlines([p])  # not the (forked) slots
                     and "stmpo_celery.slot" not in _cmdlines([p])]
        assert renderers
        for p in renderers:
            environ = p.environ()
            assert defaults.BROKER_ENV not in environ
            assert not any("Br0kerPw" in v for v in environ.values())
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert "Br0kerPw" not in out + err
    finally:
        r.stop()


# -- forged directives -------------------------------------------------------------------
def test_newline_in_a_path_cannot_forge_a_directive(farm: Farm) -> None:
    out_dir = farm.tmp / "x\nopenjd_status: FORGED"
    farm.knobs.update(NO_WRITE_FRAME="3")  # exit 0, one frame missing: FAILED names its path
    res = farm.run(output=str(out_dir / "f_[####].png"), frames="1-6", concurrency=1)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FORGED" in res.stdout
    for line in res.stdout.splitlines():
        assert not line.startswith("openjd_status: FORGED"), line


def test_broker_blip_shorter_than_the_grace_does_not_fail_the_run(
        farm: Farm, private_redis: PrivateRedis) -> None:
    # renders well past the pause, whatever the load
    proc = farm.start_rendering("--broker", private_redis.url, frame_cost="0.25")
    try:
        pause_ms = int((defaults.BROKER_LOSS_GRACE_S - 2.5) * 1000)
        assert pause_ms >= 1500
        private_redis.client.execute_command("CLIENT", "PAUSE", str(pause_ms), "ALL")
        out, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 0, out + err
    assert "the broker did not answer for" in out and "it is back" in out
    assert farm.frames_on_disk() == list(range(1, 41))


def test_every_log_of_a_run_is_private(farm: Farm, tmp_path: Path) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    argv = farm.argv(frames="1-8", concurrency=2)
    i = argv.index("--log-dir")
    del argv[i:i + 2]  # the default log root
    res = subprocess.run(argv, capture_output=True, text=True, timeout=90,
                         env=farm.env(TMPDIR=str(private_tmp)), stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    root = private_tmp / f"stmpo-logs-{os.getuid()}"
    assert oct(root.stat().st_mode & 0o777) == "0o700"
    (run_dir,) = list(root.iterdir())
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"
    logs = list(run_dir.iterdir())
    assert any(p.name == "run.log" for p in logs) and any("chunk" in p.name for p in logs)
    for p in logs:
        assert oct(p.stat().st_mode & 0o777) == "0o600", p


def test_cancel_while_flower_starts_does_not_wait_for_it(farm: Farm) -> None:
    farm.knobs.update(FRAME_COST="0.2")
    proc = start_in_own_group(farm, "--flower", f"127.0.0.1:{free_port()}", frames="1-40",
                              concurrency=2)
    try:
        assert wait_for(lambda: [p for p in tagged(farm.tag)
                                 if "flower_main" in _cmdlines([p])], timeout=30)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert not farm.leftovers(timeout=3)
