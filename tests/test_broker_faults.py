"""Fault injection on the broker with real processes: an embedded or external Redis
killed, restarted empty or with its data, a network cut under the event subscription, and
a firewall dropping idle connections (tests/tcpcut.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis
from conftest import Farm, PrivateRedis, free_port, pings, stmpo_keys, wait_for
from framelib import bad_files

from stmpo_celery.broker import BrokerUrl, keys, watch_client
from stmpo_celery.config import defaults

pytestmark = pytest.mark.slow


def test_embedded_redis_killed_exits_3(farm: Farm) -> None:
    proc = farm.start_rendering(frame_cost="0.2")
    try:
        redis_procs = [p for p in psutil.Process(proc.pid).children()
                       if "redis-server" in " ".join(p.cmdline())]
        assert redis_procs
        t0 = time.monotonic()
        for p in redis_procs:
            p.kill()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 3, out + err
    assert time.monotonic() - t0 < 5
    assert "embedded Redis was lost" in out
    assert not farm.leftovers()


def test_a_broker_lost_after_the_last_frame_fails_nothing(farm: Farm) -> None:
    """Every frame whole on disk, After Effects still quitting (it takes seconds): a
    broker lost then loses only the run's bookkeeping. It failed the task (exit 3), for
    Deadline to render it all again; it is a warning now, and exit 0."""
    farm.knobs.update(QUIT_TIME="4")
    proc = farm.start(frames="1-6", concurrency=2)
    try:
        assert wait_for(lambda: len(farm.journal_frames()) == 6, timeout=60)
        time.sleep(1.0)  # the frames' events reach the run, which checks each file
        next(p for p in psutil.Process(proc.pid).children()
             if "redis-server" in " ".join(p.cmdline())).kill()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert (proc.returncode, farm.load_summary()["status"]) == (0, "ok"), out + err
    assert "embedded Redis was lost after the last frame" in out
    assert farm.frames_on_disk() == list(range(1, 7)) and not bad_files(farm)
    assert not farm.leftovers()


class RestartableRedis:
    """A redis-server of the test's own on one port, started again at will with the same
    persistence (``args``): what an external broker restarted mid-run looks like."""

    def __init__(self, *args: str) -> None:
        from stmpo_celery.broker._redis import find_redis_server

        server = find_redis_server()
        assert server
        self.argv = [server, "--port", str(free_port()), "--bind", "127.0.0.1", *args]
        self.port = int(self.argv[2])
        self.client = redis.Redis(port=self.port, decode_responses=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL)
        wait_for(lambda: pings(self.client), timeout=5)
        return self.proc

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_external_redis_restart_never_hangs(farm: Farm, tmp_path: Path) -> None:
    srv = RestartableRedis("--save", "", "--appendonly", "no")
    proc = farm.start_rendering("--broker", srv.url, frame_cost="0.2")
    try:
        srv.kill()
        srv.start()  # back, but empty: the queue and every result are gone
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=60)
        assert time.monotonic() - t0 < 20
    finally:
        proc.kill()
        srv.kill()
    assert proc.returncode in (0, 3), out + err
    if proc.returncode == 3:
        assert "was lost" in out
    assert not farm.leftovers()


def test_a_run_lost_with_its_broker_shows_how_it_ended_when_the_broker_comes_back(
        farm: Farm, tmp_path: Path) -> None:
    """The broker dies (the run fails, exit 3, its end not written there), then comes
    back from its append-only file with the run still 'rendering': status shows the run
    FAILED for the lost broker, as it ended, not DEAD for a vanished orchestrator."""
    import json

    srv = RestartableRedis("--save", "", "--appendonly", "yes", "--appendfsync", "always",
                           "--dir", str(tmp_path))
    url = srv.url
    proc = farm.start_rendering("--broker", url, frame_cost="0.3")
    try:
        srv.kill()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 3 and "was lost" in out, out + err
        srv.start()  # back from its file: the run's record still says rendering
        c = srv.client
        assert c.hlen(keys.REGISTRY) == 1
        res = subprocess.run([sys.executable, "-m", "stmpo_celery.cli", "status", "--json",
                              "--once", "--broker", url], capture_output=True, text=True,
                             timeout=60, env=farm.env(), stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stderr
        (run,) = json.loads(res.stdout)["runs"]
        assert run["state"] == "failed" and "lost" in str(run["reason"]), run
        assert not stmpo_keys(c), stmpo_keys(c)  # shown once; its keys are gone
    finally:
        proc.kill()
        srv.kill()
    assert not farm.leftovers()


def test_a_broker_restarted_with_its_data_stops_the_run_and_keeps_whole_frames(
        farm: Farm, tmp_path: Path) -> None:
    """`systemctl restart redis`: the server saves, stops and comes back within half a
    second with every key of the run. Events sent while it was down are lost: the run
    must stop (exit 3, quickly), not wait for them for ever, and keep every frame it
    verified whole."""
    from stmpo_celery.aerender._output import file_problem

    srv = RestartableRedis("--dir", str(tmp_path), "--appendonly", "no")
    farm.knobs.update(WRITE_TIME="0.05")
    proc = farm.start_rendering("--broker", srv.url, frame_cost="0.1", frames="1-80")
    try:
        time.sleep(1.0)
        srv.client.shutdown(save=True)
        srv.proc.wait()
        time.sleep(0.3)
        srv.start()  # back with the run's keys
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        srv.kill()
    assert proc.returncode == 3 and "restarted" in out, out + err
    summary = farm.load_summary()
    on_disk = farm.frames_on_disk()
    assert summary["frames"]["rendered"] <= len(on_disk)
    assert all(file_problem(farm.pattern.replace("[####]", f"{f:04d}")) is None
               for f in on_disk)
    assert "written again" not in out  # no whole frame was deleted under the run
    assert not farm.leftovers()


def test_a_network_blip_that_breaks_the_event_connection_stops_the_run(
        farm: Farm, private_redis: PrivateRedis) -> None:
    """Every connection to the broker dropped and refused for a second: the events the
    slots sent meanwhile are gone (Redis keeps none for an absent subscriber), so the run
    stops with exit 3 and leaves nothing behind, rather than wait for ever for a chunk's
    end that was lost."""
    port = free_port()
    relay = subprocess.Popen([sys.executable, str(Path(__file__).with_name("tcpcut.py")),
                              str(port), str(private_redis.port)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert relay.stdout is not None and relay.stdout.readline().strip() == "ready"
        url = private_redis.url.replace(f":{private_redis.port}/", f":{port}/")
        proc = farm.start_rendering("--broker", url, frame_cost="0.1", frames="1-80")
        try:
            time.sleep(0.5)
            relay.send_signal(signal.SIGUSR1)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    finally:
        relay.kill()
        relay.wait()
    assert proc.returncode == 3, out + err
    assert "the connection carrying the slots' events broke" in out
    assert not stmpo_keys(private_redis.client)
    assert not farm.leftovers()


def test_a_slow_broker_gets_every_frame_and_holds_no_slot_back(
        farm: Farm, private_redis: PrivateRedis) -> None:
    """A broker 100 ms away (a far or congested link) and frames faster than that: a
    slot's reporter sends what came while the broker answered as one batch. It sent each
    frame on its own (three round trips), fell further behind with every frame, and after
    30 s dropped the rest: the run ended OK with its progress stuck short of the end, its
    chunks' frame counts short, and each slot idle 30 s at its chunk's end."""
    port = free_port()
    relay = subprocess.Popen([sys.executable, str(Path(__file__).with_name("tcpcut.py")),
                              str(port), str(private_redis.port), "0", "0.05"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert relay.stdout is not None and relay.stdout.readline().strip() == "ready"
        url = private_redis.url.replace(f":{private_redis.port}/", f":{port}/")
        farm.knobs.update(FRAME_COST="0.01")
        res = farm.run("--broker", url, "--no-history", frames="1-300", timeout=180)
    finally:
        relay.kill()
        relay.wait()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "openjd_status: Rendered 300 of 300 frames" in res.stdout, res.stdout[-2000:]
    chunks = farm.load_summary()["chunks"]
    assert [c["frames_done"] for c in chunks] == [c["end"] - c["start"] + 1 for c in chunks]
    assert not stmpo_keys(private_redis.client)
    assert not farm.leftovers()


def test_a_quiet_event_subscription_is_not_dropped_for_idling(
        private_redis: PrivateRedis) -> None:
    """A connection that breaks stops the run, so the orchestrator's event subscription
    must survive a long frame with no event behind a firewall that drops idle connections
    (here after 2 s): it is pinged when quiet. Without the ping it is dropped."""
    from stmpo_celery.broker import BrokerUrl

    port = free_port()
    relay = subprocess.Popen([sys.executable, str(Path(__file__).with_name("tcpcut.py")),
                              str(port), str(private_redis.port), "2.0"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert relay.stdout is not None and relay.stdout.readline().strip() == "ready"
        url = private_redis.url.replace(f":{private_redis.port}/", f":{port}/")
        for ping_s, dropped in ((1.0, False), (0.0, True)):
            sub = BrokerUrl(url).client(timeout=10, ping_s=ping_s).pubsub(
                ignore_subscribe_messages=True)
            sub.subscribe("stmpo:test:events")
            broke = _Reconnects()  # held weakly by redis-py: a bound method, kept here
            assert sub.connection is not None
            sub.connection.register_connect_callback(broke.saw)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 4.0:  # quiet, as during a long frame
                assert sub.get_message(timeout=0.1) is None
            private_redis.client.publish("stmpo:test:events", "after")
            got = wait_for(lambda: sub.get_message(timeout=0.1), timeout=5)  # noqa: B023
            assert bool(broke.seen) == dropped, (ping_s, broke.seen)
            if not dropped:
                assert got and got["data"] == "after"
            sub.close()
    finally:
        relay.kill()
        relay.wait()


class _Reconnects:
    def __init__(self) -> None:
        self.seen: list[object] = []

    def saw(self, connection: object) -> None:
        self.seen.append(connection)


def test_the_watchdog_sees_a_pause_shorter_than_two_of_its_timeouts(
        private_redis: PrivateRedis) -> None:
    """A watchdog contact waits one timeout, once: redis-py's retry sent a command that
    timed out again, waited a second timeout, and a broker paused for less than both
    answered it — the run never said the broker had not answered (and began counting its
    grace a second late)."""
    watch = watch_client(BrokerUrl(private_redis.url))
    assert watch.ping()
    pause = 2 * defaults.WATCHDOG_TIMEOUT_S
    private_redis.client.execute_command("CLIENT", "PAUSE", str(int(pause * 1000)), "ALL")
    time.sleep(pause / 4)  # the retry would start at 3/4 of the pause, and be answered
    t0 = time.monotonic()
    with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
        watch.exists("x")
    assert time.monotonic() - t0 < 1.5 * defaults.WATCHDOG_TIMEOUT_S
    time.sleep(pause)
    assert watch.ping()  # and the next contact after the pause answers
