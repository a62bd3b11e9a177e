"""`stmpo status` against live runs, alone and on the host service's Redis and Flower."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from conftest import BIN, SYSTEM_REDIS, Farm, PrivateRedis, free_port, tagged, wait_for
from hostlib import host_up, stmpo

from stmpo_celery.broker import keys
from stmpo_celery.config import defaults
from stmpo_celery.host import process_space

pytestmark = pytest.mark.slow
SLOW = {"STARTUP": "0.3", "FRAME_COST": "0.2"}


def run_id_of(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    for line in iter(proc.stdout.readline, ""):
        if line.startswith("stmpo: run "):
            return line.split()[2]
    raise AssertionError("no run line")


def status_json(env: dict[str, str], *extra: str) -> dict[str, Any]:
    res = stmpo("status", "--json", "--once", *extra, env=env)
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def find_run(snap: dict[str, Any], run_id: str) -> dict[str, Any] | None:
    return next((r for r in snap["runs"] if r["run"] == run_id), None)


def test_status_json_once_shows_a_live_embedded_run(farm: Farm) -> None:
    farm.knobs.update(SLOW, FRAME_COST="0.4")  # ~8 s: several status calls fit under load
    proc = farm.start("--schedule", "fixed", "--chunk-size", "6", frames="1-36", concurrency=2)
    run_id = run_id_of(proc)
    env = farm.env()

    def rendering() -> dict[str, Any] | None:
        run = find_run(status_json(env), run_id)
        if run and run["frames_done"] > 0 and any(
                s["state"] == "rendering" and s["done"] > 0 for s in run["slots"]):
            return run
        return None

    run = wait_for(rendering, timeout=30, step=0.3)
    assert run, status_json(env)
    assert run["frames"] == 36 and run["host"] == keys.host_name()
    assert run["project"] == str(farm.project) and run["comp"] == "Main Comp"
    assert run["state"] == "rendering" and run["frames_spec"] == "1-36"
    text = stmpo("status", "--once", env=env).stdout
    assert f"run {run_id} RENDERING: shot.aep / Main Comp f1-36:" in text, text
    assert "slot0" in text and "slot1" in text

    def with_eta() -> dict[str, Any] | None:
        r = find_run(status_json(env), run_id)
        return r if r and r["eta_s"] is not None else None

    timed = wait_for(with_eta, timeout=20, step=0.3)
    assert timed and 0 < timed["eta_s"] < 60, timed
    assert [s["node"] for s in run["slots"]] == [keys.node_name(0, run_id),
                                               keys.node_name(1, run_id)]
    busy = next(s for s in run["slots"] if s["state"] == "rendering")
    assert busy["total"] == 6 and 0 < busy["done"] <= 6 and busy["label"].startswith("f")
    assert run["queue_length"] >= 1  # chunks not yet taken
    assert proc.wait(timeout=60) == 0
    assert find_run(status_json(env), run_id) is None  # gone with the run
    assert not farm.leftovers()


def test_host_mode_one_redis_one_flower_two_runs_that_never_cross(
        farm: Farm, tmp_path: Path) -> None:
    host_dir = tmp_path / "hostsvc"
    env, port, fport, up = host_up(farm, host_dir)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        broker_file = host_dir / "broker.url"
        assert oct(broker_file.stat().st_mode & 0o777) == "0o600"
        url = broker_file.read_text().strip()
        assert "@127.0.0.1:" in url and url.split("@")[0].count(":") == 2  # has a password
        assert str(port) in url and url not in up.stdout
        # up again asking for another port or Flower address: refused, not ignored
        for args in (["--port", str(port + 1)], ["--flower", f"127.0.0.1:{fport + 1}"]):
            again = stmpo("host", "up", *args, env=env)
            assert again.returncode == 2 and "already runs" in again.stderr, again.stderr
        assert stmpo("host", "up", "--port", str(port), env=env).returncode == 0
        os.environ["STMPO_HOST_DIR"] = str(host_dir)
        try:
            from stmpo_celery.monitor._hostdir import discover_broker

            assert discover_broker() == url
        finally:
            del os.environ["STMPO_HOST_DIR"]
        client = redis.Redis.from_url(url, decode_responses=True)

        a, b = Farm(tmp_path / "a"), Farm(tmp_path / "b")
        procs, ids = [], []
        for f in (a, b):
            f.knobs.update(SLOW)
            f.tag = farm.tag  # one tag: the fixture kills whatever is left
            run_env = f.env(STMPO_BROKER_URL=url)
            p = f.start("--schedule", "fixed", "--chunk-size", "4", frames="1-16",
                        concurrency=2, env=run_env)
            procs.append(p)
            ids.append(run_id_of(p))

        seen: set[str] = set()

        def both_listed() -> bool:
            snap = status_json(env)  # no --broker: found through the host directory
            for i in ids:
                r = find_run(snap, i)
                if r and r["frames_done"] > 0 and r["broker"] == "host service":
                    seen.add(i)
            return seen == set(ids)

        assert wait_for(both_listed, timeout=30, step=0.3), status_json(env)
        for p in procs:
            assert p.wait(timeout=60) == 0
        ended = status_json(env)  # runs that ended on the host broker stay listed a while
        for i in ids:
            r = find_run(ended, i)
            assert r and r["state"] == "done" and r["frames_done"] == 16, ended
            assert r["eta_s"] is None and r["comp"] == "Main Comp" and r["ended"], r
        tasks = _host_flower_tasks(fport)
        workers = {t["worker"] for t in tasks.values() if t.get("worker")}
        for run_id in ids:  # the host Flower saw the slots of both runs
            assert {keys.node_name(0, run_id), keys.node_name(1, run_id)} <= workers
        for t in tasks.values():  # every chunk ran on a slot of its own run
            if t.get("name") == "stmpo.render_chunk" and t.get("worker"):
                assert t["worker"].split(".")[1].split("@")[0] in (t.get("kwargs") or ""), t
                assert (t.get("args") or "").startswith("('shot.aep', 'Main Comp', '"), t
        assert sorted(a.frames_on_disk()) == sorted(b.frames_on_disk()) == list(range(1, 17))
        left = set(client.scan_iter(match="*", count=1000))
        assert not {k for k in left for i in ids if i in k}, left  # no key of either run
        assert not any("kombu" in k and not k.startswith("stmpo:????????:") for k in left)
    finally:
        down = stmpo("host", "down", "--force", env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not (host_dir / "broker.url").exists()
    assert (host_dir / "redis.conf").exists()  # the password persists for the next `up`
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    assert not farm.leftovers()


def _host_flower_tasks(port: int) -> dict[str, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/tasks")
    with urllib.request.urlopen(req, timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


def test_host_flower_refuses_open_bind_without_auth(tmp_path: Path) -> None:
    env = dict(os.environ, STMPO_HOST_DIR=str(tmp_path / "h"), PATH=f"{BIN}:{os.environ['PATH']}")
    env.pop("STMPO_FLOWER_AUTH", None)
    res = stmpo("host", "up", "--port", str(free_port()), "--flower", "0.0.0.0:5555", env=env)
    assert res.returncode == 2 and "--flower-auth" in res.stderr
    assert not (tmp_path / "h" / "broker.url").exists()


def test_run_state_and_dead_runs() -> None:
    from stmpo_celery.monitor._status import run_state, what

    me, here = keys.host_name(), process_space()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = {"state": "rendering", "pid": os.getpid(), "host": me, "space": here}
    assert run_state(live, me) == "rendering"
    assert run_state(dict(live, pid=gone.pid), me) == "dead"
    assert run_state(dict(live, pid=gone.pid, host="other"), me) == "rendering"
    # a container or a clone of this host's name: its pid is not looked up here
    assert run_state(dict(live, pid=gone.pid, space={**here, "boot": "another"}), me) \
        == "rendering"
    assert run_state({"state": "done", "ended": 1.0, "pid": gone.pid, "host": me}, me) == "done"
    assert run_state({"state": "failed", "ended": 1.0}, me) == "failed"
    assert what({"project": "/p/shot.aep", "comp": "Main"}) == "shot.aep / Main"
    assert what({"project": "/p/shot.aep", "rqindex": 2}) == "shot.aep / render queue item 2"


def test_another_hosts_run_is_timed_by_its_own_clock(private_redis: PrivateRedis) -> None:
    """A run on a host whose clock is ten minutes ahead: its slots' last words and its
    start are stamped by that clock. Measured against this host's, its live slots read
    as silent for minutes when this clock was the ahead one, and never silent here."""
    import time

    from stmpo_celery.monitor._status import read_run

    now = time.time()
    ahead = now + 600  # the run's host's clock
    c = private_redis.client
    c.hset(keys.state_key("skew0001"), mapping={
        "slot0": json.dumps({"slot": 0, "state": "rendering", "updated": ahead - 1}),
        "slot1": json.dumps({"slot": 1, "state": "rendering", "updated": ahead - 60})})
    entry = {"run": "skew0001", "host": "h2", "frames": 10, "started": ahead - 30,
             "beat": ahead}
    run = read_run(c, entry, "--broker", now)
    assert [s["silent_s"] for s in run["slots"]] == [None, 60.0]
    assert run["elapsed_s"] == 30.0


def test_status_gives_keys_of_an_unregistered_run_a_ttl(farm: Farm,
                                                         ext_redis: redis.Redis) -> None:
    """A run killed with all its processes may have created keys after its last beat
    (no TTL yet) and left no registry entry: `stmpo status` on that broker gives them
    one, as a render does, instead of leaving them forever."""
    key = keys.prefix("0dead0ff") + "x:state"
    ext_redis.hset(key, "slot0", "{}")
    try:
        assert ext_redis.ttl(key) == -1
        status_json(farm.env(), "--broker", SYSTEM_REDIS)
        assert 0 < ext_redis.ttl(key) <= 30
    finally:
        ext_redis.delete(key)


@contextlib.contextmanager
def _render_on_host(farm: Farm, tmp_path: Path, frames: str) -> Iterator[
        tuple[dict[str, str], int, str, subprocess.Popen[str], str]]:
    """A host service (Redis and Flower) and a slow render on it: (env, Flower port,
    broker URL, the render, its run id). The service goes down after, and nothing of the
    render may be left."""
    host_dir = tmp_path / "hostsvc"
    env, _port, fport, up = host_up(farm, host_dir)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        url = (host_dir / "broker.url").read_text().strip()
        farm.knobs.update(SLOW)
        proc = farm.start(frames=frames, concurrency=2, env=farm.env(STMPO_BROKER_URL=url))
        yield env, fport, url, proc, run_id_of(proc)
    finally:
        down = stmpo("host", "down", "--force", env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not farm.leftovers()


def test_a_run_whose_orchestrator_is_killed_is_listed_dead_and_ends_in_flower(
        farm: Farm, tmp_path: Path) -> None:
    """kill -9 of the orchestrator alone: its orphaned slots clean up, and the run stays
    visible as dead (not gone from `stmpo status`, not PROGRESS forever in Flower)."""
    with _render_on_host(farm, tmp_path, "1-16") as (env, fport, url, proc, run_id):
        assert wait_for(lambda: farm.journal_frames(), timeout=30)
        proc.kill()
        proc.communicate(timeout=10)

        def slots_gone() -> bool:  # (the host's Redis and Flower carry the tag too)
            return not [p for p in tagged(farm.tag) if _named(p, "stmpo-slot", "aerender",
                                                              "AfterFX")]

        assert wait_for(slots_gone, timeout=5)
        r = find_run(status_json(env), run_id)
        assert r is not None and r["state"] == "dead", status_json(env)
        text = stmpo("status", "--once", env=env).stdout
        assert f"run {run_id} on " in text and "DEAD (None)" not in text, text
        assert "DEAD (its orchestrator" in text, text
        tasks = _host_flower_tasks(fport)

        def row_failed() -> bool:
            rows = [t for t in _host_flower_tasks(fport).values()
                    if t.get("name") == "stmpo.run" and run_id in (t.get("kwargs") or "")]
            return bool(rows) and rows[0]["state"] == "FAILURE"

        assert wait_for(row_failed, timeout=10, step=0.3), tasks
        chunks = [t for t in _host_flower_tasks(fport).values()
                  if t.get("name") == "stmpo.render_chunk" and run_id in (t.get("kwargs") or "")]
        assert chunks and all(t["state"] in ("REVOKED", "SUCCESS") for t in chunks), chunks
        # every slot mourns, but the run failed once; no node is left with a task active
        nodes = _host_flower_nodes(fport, run_id)
        assert wait_for(lambda: not any(w["status"] or w.get("active")
                                        for w in _host_flower_nodes(fport, run_id)),
                        timeout=10), nodes
        orchestrator = [w for w in nodes if str(w["hostname"]).startswith("orchestrator")]
        assert orchestrator and orchestrator[0].get("task-failed") == 1, orchestrator


def _host_flower_nodes(port: int, run_id: str) -> list[dict[str, Any]]:
    """Flower's workers of one run (slots and the orchestrator's node), as its page has them."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/workers?json=1")
    with urllib.request.urlopen(req, timeout=5) as resp:
        data = json.loads(resp.read())["data"]
    return [w for w in data if run_id in str(w.get("hostname"))]


def test_a_run_killed_with_all_its_slots_ends_in_flower_with_nobody_asking(
        farm: Farm, tmp_path: Path) -> None:
    """kill -9 of the orchestrator and its slots at once (Deadline's terminate, an OOM
    kill): no slot is left to mourn, so the run's warden ends its rows in the host's
    Flower — the run FAILED, chunks REVOKED, every node offline with no task active —
    and removes its keys, without a `stmpo status` or another render."""
    import psutil

    with _render_on_host(farm, tmp_path, "1-40") as (env, fport, url, proc, run_id):
        assert wait_for(lambda: len(farm.journal_frames()) >= 2, timeout=30)
        assert wait_for(lambda: len(_host_flower_nodes(fport, run_id)) == 3, timeout=10)
        run = psutil.Process(proc.pid)
        for p in [run, *(c for c in run.children() if c.name().startswith("stmpo-slot"))]:
            p.kill()
        # not reaped yet: a zombie until its parent (here: this test) gets round to it

        def ended() -> bool:
            mine = [t for t in _host_flower_tasks(fport).values()
                    if run_id in (t.get("kwargs") or "") or run_id in str(t.get("worker"))]
            rows = [t for t in mine if t.get("name") == "stmpo.run"]
            chunks = [t for t in mine if t.get("name") == "stmpo.render_chunk"]
            nodes = _host_flower_nodes(fport, run_id)
            return (bool(rows) and rows[0]["state"] == "FAILURE" and bool(chunks)
                    and all(t["state"] in ("REVOKED", "SUCCESS") for t in chunks)
                    and bool(nodes) and not any(w["status"] or w.get("active") for w in nodes))

        # the warden may wait WARDEN_WAIT_S for a folder still locked (a loaded host)
        assert wait_for(ended, timeout=defaults.WARDEN_WAIT_S + 10, step=0.5), (
            _host_flower_tasks(fport), _host_flower_nodes(fport, run_id))
        proc.communicate(timeout=10)
        client = redis.Redis.from_url(url)
        assert wait_for(lambda: not list(client.scan_iter(match=f"stmpo:{run_id}:*")),
                        timeout=10)
        nodes = _host_flower_nodes(fport, run_id)
        orchestrator = [w for w in nodes if str(w["hostname"]).startswith("orchestrator")]
        assert orchestrator and orchestrator[0].get("task-failed", 0) <= 1, nodes


def test_a_cancelled_run_leaves_no_node_with_a_task_active_in_flower(
        farm: Farm, tmp_path: Path) -> None:
    """A slot's heartbeat says ``active: 1``; when a cancel or a failure stops it, its
    node goes offline with none (Flower's Active card added up tasks nobody ran)."""

    with _render_on_host(farm, tmp_path, "1-40") as (env, fport, url, proc, run_id):
        assert wait_for(lambda: any(w.get("active") for w in _host_flower_nodes(fport, run_id)),
                        timeout=30)  # a slot's heartbeat with its chunk
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        assert wait_for(lambda: not any(w["status"] or w.get("active")
                                        for w in _host_flower_nodes(fport, run_id)),
                        timeout=10), _host_flower_nodes(fport, run_id)


def _named(p: psutil.Process, *prefixes: str) -> bool:
    """Whether ``p`` is one of those processes; one that has exited meanwhile is not."""
    try:
        return p.name().startswith(prefixes)
    except psutil.Error:
        return False


def test_status_once_fails_when_the_host_service_does_not_answer(farm: Farm,
                                                                tmp_path: Path) -> None:
    """A frozen host service (a port that accepts and never answers: a hung host, a
    stopped process) must not read as "no runs" with exit 0: a script calling
    ``--once`` would take the runs on it for gone. The snapshot still prints, with the
    problem, and the command exits 3 with one line naming it."""
    import socket

    with socket.socket() as frozen:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(8)  # connections complete in the backlog; nothing ever answers
        host_dir = tmp_path / "host"
        host_dir.mkdir()
        (host_dir / "broker.url").write_text(f"redis://127.0.0.1:{frozen.getsockname()[1]}/0")
        env = farm.env(STMPO_HOST_DIR=str(host_dir), TMPDIR=str(tmp_path))
        env.pop("STMPO_BROKER_URL", None)
        text = stmpo("status", "--once", env=env)
        as_json = stmpo("status", "--json", "--once", env=env)
    assert text.returncode == 3, text.stdout + text.stderr
    assert "warning: cannot read" in text.stdout and "host service" in text.stdout
    assert text.stderr.count("\n") == 1 and "not shown" in text.stderr
    assert "Traceback" not in text.stderr
    assert as_json.returncode == 3, as_json.stderr
    snap = json.loads(as_json.stdout)
    assert snap["runs"] == [] and len(snap["problems"]) == 1


def test_status_lists_ended_runs_newest_first_and_skips_damaged_records(
        private_redis: PrivateRedis) -> None:
    """After a busy hour the newest ended run must not sit somewhere in the middle (the
    records were listed by their random run ids), and a record damaged by hand (not
    JSON, or JSON that is not a record) is left out rather than ending status in a
    traceback."""
    from stmpo_celery.broker import BrokerUrl
    from stmpo_celery.monitor._status import Source, snapshot

    client = private_redis.client
    now = time.time()
    for run, age in (("aaaa0001", 30), ("ffff0002", 10), ("0000aaa3", 20)):
        client.hset(keys.ENDED, run, json.dumps({
            "run": run, "host": "render01", "project": "p.aep", "comp": "C", "frames": 4,
            "frames_done": 4, "state": "done", "started": now - age - 5, "ended": now - age}))
    client.hset(keys.ENDED, "junk0001", "not json")
    client.hset(keys.ENDED, "junk0002", "5")
    snap = snapshot([Source(BrokerUrl(private_redis.url), "--broker")])
    assert [r["run"] for r in snap["runs"]] == ["ffff0002", "0000aaa3", "aaaa0001"]
    assert snap["problems"] == []
