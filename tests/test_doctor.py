"""`stmpo doctor`: one line per check, exit 3 when a check fails, a reason for OpenJD."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAKE

STMPO = [sys.executable, "-m", "stmpo_celery.cli", "doctor"]


def doctor(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ, STMPO_FAKE_STARTUP="0.1", **env)
    e.pop("STMPO_BROKER_URL", None)
    return subprocess.run([*STMPO, *args], capture_output=True, text=True, timeout=60, env=e,
                          stdin=subprocess.DEVNULL)


def test_a_healthy_host_passes_every_check(tmp_path: Path) -> None:
    res = doctor("--aerender", FAKE, "--output-dir", str(tmp_path / "out"), "--min-ram-gb", "0.1")
    assert res.returncode == 0, res.stdout + res.stderr
    names = [ln.split()[1].rstrip(":") for ln in res.stdout.splitlines()]
    assert names == ["aerender", "broker", "pinning", "ram", "disk", "licence"]
    assert "aerender version" in res.stdout  # it really ran aerender -version
    assert "openjd_fail" not in res.stdout


def test_a_failing_check_exits_3_and_tells_openjd_why(tmp_path: Path) -> None:
    res = doctor("--aerender", "/nonexistent/aerender", "--broker", "redis://127.0.0.1:1/0")
    assert res.returncode == 3
    assert res.stdout.splitlines()[0].startswith("FAIL aerender:")
    fail = [ln for ln in res.stdout.splitlines() if ln.startswith("openjd_fail: ")]
    assert len(fail) == 1 and "aerender" in fail[0] and "broker" in fail[0]
    assert "2 check(s) failed" in res.stderr


def test_not_enough_disk_or_ram_fails(tmp_path: Path) -> None:
    res = doctor("--aerender", FAKE, "--output-dir", str(tmp_path), "--min-disk-gb", "1e9",
                 "--min-ram-gb", "1e9")
    assert res.returncode == 3
    assert "FAIL ram:" in res.stdout and "FAIL disk:" in res.stdout


def test_broker_check_names_the_broker_renders_will_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {"STMPO_HOST_DIR": str(tmp_path / "host")}
    up = subprocess.run([sys.executable, "-m", "stmpo_celery.cli", "host", "up", "--port", port],
                        capture_output=True, text=True, timeout=60,
                        env=dict(os.environ, **env), stdin=subprocess.DEVNULL)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        res = doctor("--aerender", FAKE, "--min-ram-gb", "0.1", **env)
        line = next(ln for ln in res.stdout.splitlines() if " broker:" in ln)
        assert line.split()[:2] == ["ok", "broker:"] and "host service" in line and port in line
        assert "embedded" not in line
    finally:
        subprocess.run([sys.executable, "-m", "stmpo_celery.cli", "host", "down", "--force"],
                       capture_output=True, timeout=60, env=dict(os.environ, **env))
    res = doctor("--aerender", FAKE, "--min-ram-gb", "0.1", **env)
    line = next(ln for ln in res.stdout.splitlines() if " broker:" in ln)
    assert "embedded redis-server" in line, line


def test_a_program_that_is_not_aerender_fails_the_check(tmp_path: Path) -> None:
    for prog in ("/bin/false", "/bin/true"):
        res = doctor("--aerender", prog, "--output-dir", str(tmp_path / "out"))
        assert res.returncode == 3, res.stdout
        assert res.stdout.splitlines()[0].startswith("FAIL aerender:")
        assert "is not aerender" in res.stdout


def test_an_aerender_that_hangs_fails_and_leaves_no_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its launcher and what it started are killed: a real one starts AfterFX."""
    import psutil

    from stmpo_celery.monitor import _doctor

    marker = f"stmpo-doctor-hang-{os.getpid()}"
    script = tmp_path / "aerender"
    script.write_text(f"#!/bin/sh\n'{sys.executable}' -c 'import time; time.sleep(100)' "
                      f"{marker} &\nwait\n")
    script.chmod(0o755)
    monkeypatch.setattr(_doctor, "AERENDER_VERSION_WAIT_S", 0.5)
    check = _doctor.check_aerender(str(script))
    assert not check.ok and "did not answer" in check.detail
    left = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(
        p.info["cmdline"] or [])]
    assert not left, left


def test_an_aerender_whose_launcher_leaves_a_process_on_its_pipe_is_answered_at_once(
        tmp_path: Path) -> None:
    """The launcher prints its version and exits, but what it started lives on holding the
    output pipe (AfterFX behind a dialog): doctor does not wait on that pipe — a
    session's HostCheck would hang — and kills what was left."""
    import time

    import psutil

    from stmpo_celery.monitor import _doctor

    marker = f"stmpo-doctor-orphan-{os.getpid()}"
    script = tmp_path / "aerender"
    script.write_text(f"#!/bin/sh\necho 'aerender version 24.6x1'\n"
                      f"'{sys.executable}' -c 'import time; time.sleep(100)' {marker} &\n")
    script.chmod(0o755)
    t0 = time.monotonic()
    check = _doctor.check_aerender(str(script))
    assert check.ok and "24.6x1" in check.detail, check
    assert time.monotonic() - t0 < 10
    left = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(
        p.info["cmdline"] or [])]
    assert not left, left


def test_doctor_json_is_json_even_when_a_check_fails() -> None:
    """Scripts parse --json most when the host is bad: the openjd_fail line, for a
    session's log, must not follow the JSON on stdout."""
    import json

    res = doctor("--aerender", "/nonexistent/aerender", "--json")
    assert res.returncode == 3
    checks = json.loads(res.stdout)
    assert [c["name"] for c in checks if not c["ok"]][:1] == ["aerender"]


def test_an_output_folder_under_a_file_fails_the_disk_check(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    res = doctor("--aerender", FAKE, "--output-dir", str(tmp_path / "f" / "out"))
    assert res.returncode == 3
    assert any(ln.startswith("FAIL disk:") and "is not a folder" in ln
               for ln in res.stdout.splitlines()), res.stdout


def test_a_negative_threshold_is_refused_not_passed() -> None:
    """A threshold below zero would pass every host: it is bad input."""
    for flag in ("--min-disk-gb", "--min-ram-gb"):
        res = doctor("--aerender", FAKE, flag, "-1")
        assert res.returncode == 2 and f"'--{flag[2:]}': '-1' is below 0" in res.stderr
        assert len(res.stderr.splitlines()) == 1


def test_the_ram_check_uses_the_budget_the_render_plans_with(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """9.5 GB free of 10 GB is not room for a 9 GB aerender: the render plans with 80%
    of the total at most, and would start no slot."""
    from types import SimpleNamespace

    from stmpo_celery.monitor import _doctor

    gib = 2**30
    monkeypatch.setattr(_doctor.psutil, "virtual_memory",
                        lambda: SimpleNamespace(total=10 * gib, available=9.5 * gib))
    check = _doctor.check_ram(9.0)
    assert not check.ok and "8.0 GB" in check.detail and "need 9 GB" in check.detail
    assert _doctor.check_ram(7.5).ok
