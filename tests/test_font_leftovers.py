"""stmpo fonts: what a failed, full or killed install leaves behind (nothing), blank
session ids, and what ``stmpo fonts list`` prints — against real files in temporary
folders, with HOME and the XDG folders pointed there.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from fontlib import (
    STMPO,
    dead_process,
    env_for,
    font_dir,
    live,
    make_fonts,
    registry,
    state_dir,
    stmpo,
    stmpo_cli,
)

from stmpo_celery.deadline import _fonts as fonts
from stmpo_celery.errors import BadInput, EnvironmentProblem


# -- what is left behind ---------------------------------------------------------------------
def test_a_failing_copy_deletes_its_part_file(home: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_fonts(tmp_path / "f", A__ttf=b"a", B__otf=b"b")
    real = shutil.copyfile

    def copy(a: Path, b: Path) -> object:
        if Path(a).name == "B.otf":
            Path(b).write_bytes(b"half a fo")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(a, b)

    monkeypatch.setattr(shutil, "copyfile", copy)
    with pytest.raises(EnvironmentProblem) as err:
        fonts.install_fonts(src, fonts.places(), live("s"))
    assert err.value.message == (
        f"cannot install the font B.otf into {font_dir(home)} (No space left on device): free "
        f"space on the disk of {font_dir(home)}, then run again; nothing was installed")
    assert not font_dir(home).exists()  # A.ttf released and deleted, no .part, no folder
    assert registry(home).fonts == {} and registry(home).sessions == {}


def test_a_full_disk_fails_the_install_with_exit_3_and_leaves_nothing(home: Path,
                                                                      tmp_path: Path) -> None:
    resource = pytest.importorskip("resource")
    src = make_fonts(tmp_path / "f", Big__ttf=b"x" * 3_000_000, Small__otf=b"s")

    def limit() -> None:  # as `ulimit -f`: writing past 1 MB fails with "File too large"
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY))

    res = subprocess.run([STMPO, "fonts", "install", "--from", str(src), "--session", "s"],
                         capture_output=True, text=True, env=env_for(home), timeout=60,
                         preexec_fn=limit)
    assert res.returncode == 3, res.stdout + res.stderr
    assert res.stderr.startswith("stmpo: error: cannot install the font Big.ttf into ")
    assert "(File too large): raise this user's file size limit, then run again; nothing " \
        "was installed" in res.stderr and len(res.stderr.splitlines()) == 1
    assert not font_dir(home).exists()
    assert registry(home).fonts == {} and registry(home).sessions == {}


def test_a_killed_install_leaves_nothing_once_removed_and_remove_counts_what_it_deleted(
        home: Path, tmp_path: Path) -> None:
    """Killed while copying the 9th of 20 fonts: its .part stays until the next install or
    remove, which deletes it (its process is gone) and says it removed 8, not 20."""
    src = tmp_path / "f"
    make_fonts(src, **{f"Font{i:02d}__ttf": bytes([i]) * 100 for i in range(20)})
    script = textwrap.dedent("""
        import os, shutil, signal, sys
        from pathlib import Path
        from stmpo_celery.deadline import _fonts as fonts
        real, done = shutil.copyfile, []
        def copy(a, b):
            if len(done) == 8:
                Path(b).write_bytes(b"half a font")
                os.kill(os.getpid(), signal.SIGKILL)
            done.append(a)
            return real(a, b)
        shutil.copyfile = copy
        fonts.install_fonts(Path(sys.argv[1]), fonts.places(),
                            fonts.Session("S", None, None, None, "test"))
    """)
    res = subprocess.run([sys.executable, "-c", script, str(src)], env=env_for(home),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == -9, res.stderr
    parts = [p.name for p in font_dir(home).iterdir() if p.name.endswith(".part")]
    assert len(parts) == 1 and parts[0].startswith(".Font08.ttf.")
    res = stmpo_cli(home, "remove", "--session", "S")
    assert res.returncode == 0, res.stderr
    assert "session S: removed 8 (Font00.ttf, " in res.stdout
    assert not font_dir(home).exists()  # the .part too: the folder went with the last font


def test_what_killed_copies_and_saves_left_is_deleted_unless_their_process_runs(
        home: Path, tmp_path: Path) -> None:
    fd, sd = font_dir(home), state_dir(home)
    fd.mkdir(parents=True)
    sd.mkdir(parents=True)
    pid, started = dead_process()
    dead = [fd / f".A.ttf.{pid}-{round(started * 1000)}.part", fd / f".B.otf.{pid}.part",
            sd / f"registry.json.{pid}.tmp"]
    pl = fonts.places()
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mark = round(psutil.Process(runner.pid).create_time() * 1000)
        running = fd / f".C.ttf.{runner.pid}-{mark}.part"
        for f in [*dead, running]:
            f.write_bytes(b"partial")
        fonts.install_fonts(make_fonts(tmp_path / "f", X__ttf=b"x"), pl, live("s"))
        assert [f for f in dead if f.exists()] == [] and running.exists()
    finally:
        runner.kill()
        runner.wait()
    fonts.remove_fonts(pl, live("s"))
    assert not fd.exists()  # its process gone, the last .part went too, and the folder


def test_a_registry_that_cannot_be_saved_is_one_line_exit_3_and_no_temp_file(
        home: Path, tmp_path: Path) -> None:
    resource = pytest.importorskip("resource")
    src = make_fonts(tmp_path / "f", **{f"A Font With A Long Name {i:03d}__ttf": b"%d" % i
                                       for i in range(500)})

    def limit() -> None:  # the fonts fit, a registry of 500 does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))

    res = subprocess.run([STMPO, "fonts", "install", "--from", str(src), "--session", "s"],
                         capture_output=True, text=True, env=env_for(home), timeout=60,
                         preexec_fn=limit)
    assert res.returncode == 3, res.stdout + res.stderr
    assert res.stderr.startswith(f"stmpo: error: cannot save the font registry "
                                 f"{state_dir(home) / 'registry.json'} (File too large): "
                                 "raise this user's file size limit, then run again\n")
    assert len(res.stderr.splitlines()) == 1 and "Traceback" not in res.stderr
    assert sorted(p.name for p in state_dir(home).iterdir()) == ["registry.lock"]
    assert not font_dir(home).exists()


# -- session ids and output ------------------------------------------------------------------
@pytest.mark.parametrize("blank", ["", " ", "\t"])
@pytest.mark.parametrize("command", ["install", "remove"])
def test_a_blank_session_id_is_refused(home: Path, tmp_path: Path, blank: str,
                                       command: str) -> None:
    src = make_fonts(tmp_path / "f", X__ttf=b"x")
    args = ["--from", str(src)] if command == "install" else []
    with pytest.raises(BadInput, match="--session is blank: give the session id"):
        stmpo(home, command, *args, "--session", blank)
    with pytest.raises(BadInput, match=r"\$STMPO_FONTS_SESSION is blank"):
        stmpo(home, command, *args, STMPO_FONTS_SESSION=blank or " ")
    assert list(home.iterdir()) == []


def test_a_blank_session_id_is_one_line_exit_2(home: Path, tmp_path: Path) -> None:
    src = make_fonts(tmp_path / "f", X__ttf=b"x")
    res = stmpo_cli(home, "install", "--from", str(src), "--session", "")
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith("stmpo: error: --session is blank")
    assert list(home.iterdir()) == []


def test_list_prints_one_line_per_font_and_session_whatever_the_ids(home: Path,
                                                                    tmp_path: Path) -> None:
    fonts.install_fonts(make_fonts(tmp_path / "f", X__ttf=b"x"), fonts.places(),
                        live("evil\nsession s: 0 font(s)"))
    res = stmpo(home, "list")
    assert res.stdout.splitlines() == [
        f"fonts folder: {font_dir(home)}",
        "X.ttf  held by 1 session(s): evil session s: 0 font(s)",
        f"session evil session s: 0 font(s): 1 font(s), running (process {os.getpid()})"]


def test_no_font_cache_is_written_outside_the_font_folder(home: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """fontconfig rescans a font folder whose modification time changed; run as root,
    fc-cache would write caches for each session's folder into /var/cache/fontconfig."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "fc-cache").write_text(f"#!/bin/sh\ntouch {tmp_path / 'ran'}\n")
    (fake / "fc-cache").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ.get('PATH', '')}")
    res = stmpo(home, "install", "--from", str(make_fonts(tmp_path / "f", X__ttf=b"x")),
                "--session", "s")
    assert res.returncode == 0 and (font_dir(home) / "X.ttf").exists()
    stmpo(home, "remove", "--session", "s")
    assert not (tmp_path / "ran").exists()
