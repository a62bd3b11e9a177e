"""The host service (`stmpo host up|down`): start, refusals, restarts and stopping."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from conftest import Farm, PrivateRedis, free_port, wait_for
from hostlib import host_env, host_up, stmpo

from stmpo_celery.broker import keys

pytestmark = pytest.mark.slow


def test_host_up_that_fails_leaves_no_redis_behind(farm: Farm, tmp_path: Path) -> None:
    """Flower cannot listen: `host up` fails, and the Redis it had just started is stopped
    (a half-up service would be found by the next render and used)."""
    import socket

    host_dir = tmp_path / "hostsvc"
    env = host_env(farm, host_dir)
    port, fport = free_port(), free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", fport))
        busy.listen()
        up = stmpo("host", "up", "--port", str(port), "--flower", f"127.0.0.1:{fport}",
                   env=env)
    assert up.returncode == 3, up.stdout + up.stderr
    assert not (host_dir / "broker.url").exists()
    assert not host_dir.exists()  # made for this start: its redis.conf held the password
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_connect_timeout=1).ping()
    assert "nothing was running" in stmpo("host", "down", env=env).stdout
    assert not farm.leftovers()


def test_host_up_refuses_a_port_where_another_redis_answers(farm: Farm, tmp_path: Path) -> None:
    """A Redis without a password answers any password: `host up` must not take a foreign
    server for the one it started (every render on the host would go there)."""
    from stmpo_celery.broker import find_redis_server

    binary = find_redis_server()
    assert binary is not None
    port = free_port()
    other = subprocess.Popen([str(binary), "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host_dir = tmp_path / "hostsvc"
    try:
        client = redis.Redis(port=port, socket_connect_timeout=1)
        assert wait_for(lambda: _pings(client), timeout=10)
        up = stmpo("host", "up", "--port", str(port), env=host_env(farm, host_dir))
        assert up.returncode == 3, up.stdout + up.stderr
        assert f"another Redis (pid {other.pid}) answers on 127.0.0.1:{port}" in up.stderr
        assert not (host_dir / "broker.url").exists() and not (host_dir / "redis.pid").exists()
        assert not host_dir.exists()  # made for nothing: its redis.conf held the password
        assert client.get(keys.HOST_SERVICE) is None
    finally:
        other.kill()
        other.wait(10)
    assert not farm.leftovers()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_host_redis_restarted_keeps_its_password_and_gets_a_flower_that_sees_it(
        farm: Farm, tmp_path: Path) -> None:
    """Redis of the host service died (OOM, reboot of the service): `host up` starts it
    again with the same password — URLs copied to other hosts keep working — and replaces
    the Flower that was connected to the dead one."""
    import psutil

    host_dir = tmp_path / "hostsvc"
    env, port, fport, up = host_up(farm, host_dir)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        url = (host_dir / "broker.url").read_text()
        old_flower = int((host_dir / "flower.pid").read_text())
        redis_pid = int((host_dir / "redis.pid").read_text())
        psutil.Process(redis_pid).kill()
        assert wait_for(lambda: not _alive(redis_pid), timeout=10)
        again = stmpo("host", "up", "--port", str(port), "--flower", f"127.0.0.1:{fport}",
                      env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert (host_dir / "broker.url").read_text() == url  # the same password
        new_flower = int((host_dir / "flower.pid").read_text())
        assert new_flower != old_flower and not _alive(old_flower)
        assert f"Flower stopped (pid {old_flower})" in again.stdout, again.stdout
        assert redis.Redis.from_url(url.strip()).ping()
    finally:
        down = stmpo("host", "down", "--force", env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not farm.leftovers()


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_host_up_in_the_foreground_stops_cleanly_on_sighup(farm: Farm, tmp_path: Path) -> None:
    """`host up --foreground` (systemd, or a terminal that closes) on SIGHUP: it ended with
    129 and left its broker URL and pid files, naming a Redis that was gone."""
    host_dir = tmp_path / "hostsvc"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stmpo_celery.cli", "host", "up", "--port",
                             str(port), "--foreground"], env=host_env(farm, host_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None  # up, and its stop handlers in place (a SIGHUP
        # before them cancels the start instead, and undoes it)
        assert any("serving in the foreground" in line for line in proc.stdout), proc.poll()
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, out + err
    assert not [p.name for p in host_dir.iterdir() if p.suffix in (".url", ".pid")]
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_connect_timeout=1).ping()


def test_host_down_refuses_while_its_redis_does_not_answer(farm: Farm, tmp_path: Path) -> None:
    """A Redis that does not answer for a few seconds (busy, swapped out) cannot say
    whether runs use it: `host down` skipped the check and stopped it under a live
    render. It refuses instead, and stops it once it answers (or with --force)."""
    import os

    host_dir = tmp_path / "hostsvc"
    env = host_env(farm, host_dir)
    up = stmpo("host", "up", "--port", str(free_port()), env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    redis_pid = int((host_dir / "redis.pid").read_text())
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        down = stmpo("host", "down", env=env)
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    assert down.returncode == 3, down.stdout + down.stderr
    assert "does not answer" in down.stderr and len(down.stderr.strip().splitlines()) == 1
    assert _alive(redis_pid)
    assert stmpo("host", "down", env=env).returncode == 0
    assert wait_for(lambda: not _alive(redis_pid), timeout=10)


def test_a_service_started_in_another_process_space_is_not_stopped_from_here(
        farm: Farm, tmp_path: Path, private_redis: PrivateRedis) -> None:
    """A host folder shared with another container or machine whose service still
    answers: its pids mean nothing here, so ``host down`` (which would find no process,
    say "nothing was running" and delete its broker file under its renders) and ``host
    up`` (a second Redis, the broker file overwritten) refuse, exit 3. Once nothing
    answers (the other side rebooted), ``host down`` cleans up as usual."""
    host_dir = tmp_path / "shared-host"
    host_dir.mkdir()
    (host_dir / "broker.url").write_text(private_redis.url + "\n")
    (host_dir / "space.json").write_text(json.dumps({"boot": "another-machine"}))
    env = host_env(farm, host_dir)
    down = stmpo("host", "down", env=env)
    up = stmpo("host", "up", "--port", str(free_port()), env=env)
    for res in (down, up):
        assert res.returncode == 3, res.stdout + res.stderr
        assert "another process space" in res.stderr and "Traceback" not in res.stderr
    assert (host_dir / "broker.url").read_text().strip() == private_redis.url
    private_redis.stop()
    down = stmpo("host", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert not (host_dir / "broker.url").exists() and not (host_dir / "space.json").exists()


def test_host_up_refuses_another_flower_password_than_the_one_flower_runs_with(
        farm: Farm, tmp_path: Path) -> None:
    """`host up --flower-auth` while the host's Flower runs was dropped in silence ("Flower
    already running", exit 0): the caller believed Flower asked for the new password,
    while it asked for the old one (or none). The same password, or none given, is fine;
    the password itself is not kept, only a salted hash."""
    host_dir = tmp_path / "hostsvc"
    env = host_env(farm, host_dir)
    port, fport = free_port(), free_port()
    flower = ["host", "up", "--port", str(port), "--flower", f"127.0.0.1:{fport}"]
    try:
        up = stmpo(*flower, "--flower-auth", "alice:first-Secret", env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "first-Secret" not in (host_dir / "flower.json").read_text()
        same = stmpo(*flower, "--flower-auth", "alice:first-Secret", env=env)
        assert same.returncode == 0 and "Flower already running" in same.stdout, same.stderr
        assert stmpo(*flower, env=env).returncode == 0  # nothing asked of its password
        others: list[tuple[list[str], dict[str, str]]] = [
            (["--flower-auth", "alice:second"], env),
            ([], {**env, "STMPO_FLOWER_AUTH": "bob:first-Secret"})]
        for args, other_env in others:
            res = stmpo(*flower, *args, env=other_env)
            assert res.returncode == 2, res.stdout + res.stderr
            assert "with another password (or none)" in res.stderr
            assert "'stmpo host down' first" in res.stderr
    finally:
        down = stmpo("host", "down", "--force", env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not farm.leftovers()
