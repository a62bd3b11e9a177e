"""The portable start method (``STMPO_START_METHOD=spawn``): the process model and broker
transport Windows and macOS use, proven on Linux — slots exec'd (no fork) with their
stdin as the death pipe, the embedded Redis on loopback TCP with a password behind a
guard, no subreaper. The core, fault and cancel suites also run whole in this mode
(``.ci/run``); these tests prove the mode really is the portable one."""

from __future__ import annotations

import os
import stat

import psutil
import pytest
from conftest import Farm, tagged

from stmpo_celery.host import _platform

pytestmark = pytest.mark.slow


def _slot_procs(tag: str) -> list[psutil.Process]:
    return [p for p in tagged(tag) if "stmpo_celery.slot._main" in " ".join(p.cmdline())]


def test_spawn_mode_execs_slots_and_uses_a_loopback_tcp_broker(farm: Farm) -> None:
    proc = farm.start_rendering(env=farm.env(STMPO_START_METHOD="spawn"), frame_cost="0.3")
    try:
        slots = _slot_procs(farm.tag)
        assert len(slots) == 2  # exec'd launchers, children of the orchestrator
        for s in slots:
            assert s.ppid() == proc.pid
            assert stat.S_ISFIFO(os.stat(f"/proc/{s.pid}/fd/0").st_mode)  # stdin death pipe
            assert os.getsid(s.pid) == s.pid  # own session: its tree is one process group
        # the guard (a python whose stdin is a pipe from the orchestrator) and its server
        (guard,) = [p for p in tagged(farm.tag) if "redis-server" in " ".join(p.cmdline())
                    and p.ppid() == proc.pid]
        assert stat.S_ISFIFO(os.stat(f"/proc/{guard.pid}/fd/0").st_mode)
        servers = guard.children()
        assert len(servers) == 1 and servers[0].name() == "redis-server"
        listening = [c for c in servers[0].net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening), listening
        assert not servers[0].net_connections(kind="unix")
        proc.kill()  # the orchestrator dies: slots see EOF on stdin, the guard too
        proc.communicate(timeout=10)
        assert not farm.leftovers(timeout=8)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    log = (farm.logs / "run.log").read_text()
    assert "embedded Redis:" in log and "on 127.0.0.1:" in log and "password" in log


def test_spawn_mode_render_says_what_broker_it_used(farm: Farm) -> None:
    res = farm.run(frames="1-6", env=farm.env(STMPO_START_METHOD="spawn"))
    assert res.returncode == 0, res.stdout + res.stderr
    said = [ln for ln in res.stdout.splitlines() if "embedded Redis:" in ln]
    assert len(said) == 1 and "127.0.0.1:" in said[0] and ":***@" not in said[0]
    assert farm.frames_on_disk() == list(range(1, 7))
    assert not farm.leftovers()


def test_bad_start_method_is_refused_in_one_line(farm: Farm) -> None:
    res = farm.run(frames="1-2", env=farm.env(STMPO_START_METHOD="forkserver"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip().count("\n") == 0 and "STMPO_START_METHOD" in res.stderr
    assert not farm.out.exists() or not any(farm.out.iterdir())
    assert not farm.leftovers(timeout=1)


def test_start_method_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_platform.START_METHOD_ENV, raising=False)
    assert _platform.start_method() == ("fork" if _platform.OS == "linux" else "spawn")
    monkeypatch.setenv(_platform.START_METHOD_ENV, "spawn")
    assert _platform.start_method() == "spawn" and _platform.portable()
    assert not _platform.can_fork_slots() and not _platform.unix_socket_broker()
    assert not _platform.use_linux_extras() and not _platform.become_subreaper()
    assert _platform.check_start_method() is None
    monkeypatch.setenv(_platform.START_METHOD_ENV, "vfork")
    assert "vfork" in (_platform.check_start_method() or "")
