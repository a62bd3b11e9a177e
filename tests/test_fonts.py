"""stmpo fonts: per-session installs that concurrent sessions share, with stale holds reclaimed.

Everything runs against real files in temporary folders, with HOME and the XDG folders
pointed there, through the functions and through the real ``stmpo`` command.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from fontlib import (
    BIN,
    STMPO,
    env_for,
    font,
    font_dir,
    live,
    make_fonts,
    me,
    registry,
    stmpo,
    stmpo_cli,
)

from stmpo_celery.deadline import _fonts as fonts
from stmpo_celery.deadline._fonts import Places
from stmpo_celery.host import _winfonts as winfonts


def test_remove_without_any_install_is_a_no_op(home: Path) -> None:
    res = stmpo_cli(home, "remove")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ("stmpo fonts: no fonts were installed on this host by stmpo: "
                                  "nothing to remove")
    assert list(home.iterdir()) == []


# -- install and remove ----------------------------------------------------------------------
def test_install_then_remove_through_the_cli(home: Path, tmp_path: Path) -> None:
    src = make_fonts(tmp_path / "job fonts, ü", **{"Brand Sans, Bold__ttf": b"A" * 100,
                                                   "Héading__otf": b"B" * 50})
    make_fonts(src / "sub", Type1__pfb=b"C" * 10, Type1__pfm=b"D" * 10, notes__txt=b"x")
    res = stmpo_cli(home, "install", "--from", str(src), "--session", "s1")
    assert res.returncode == 0, res.stderr
    installed = sorted(p.name for p in font_dir(home).iterdir())
    assert installed == ["Brand Sans, Bold.ttf", "Héading.otf", "Type1.pfb", "Type1.pfm"]
    assert (font_dir(home) / "Héading.otf").read_bytes() == font(".otf", b"B" * 50)
    assert "session s1: installed 4" in res.stdout
    listing = stmpo(home, "list", "--json")
    data = json.loads(listing.stdout)
    assert sorted(data["sessions"]["s1"]["fonts"]) == ["brand sans, bold.ttf", "héading.otf",
                                                       "type1.pfb", "type1.pfm"]
    res = stmpo_cli(home, "remove", "--session", "s1")
    assert res.returncode == 0, res.stderr
    assert "session s1: removed 4" in res.stdout
    assert not font_dir(home).exists()  # the folder stmpo made goes with its last font
    assert registry(home).fonts == {} and registry(home).sessions == {}


def test_two_sessions_share_a_font_and_the_first_remove_keeps_it(home: Path,
                                                                  tmp_path: Path) -> None:
    a = make_fonts(tmp_path / "a", Shared__ttf=b"same", OnlyA__ttf=b"a")
    b = make_fonts(tmp_path / "b", Shared__ttf=b"same", OnlyB__otf=b"b")
    assert stmpo(home, "install", "--from", str(a), "--session", "A").returncode == 0
    res = stmpo(home, "install", "--from", str(b), "--session", "B")
    assert res.returncode == 0, res.stderr
    assert "1 already installed by another session, now shared (Shared.ttf)" in res.stdout
    assert registry(home).holders("shared.ttf") == ["A", "B"]

    res = stmpo(home, "remove", "--session", "A")
    assert res.returncode == 0, res.stderr
    assert "removed 1 (OnlyA.ttf)" in res.stdout
    assert "kept 1 still used by other sessions (Shared.ttf)" in res.stdout
    assert sorted(p.name for p in font_dir(home).iterdir()) == ["OnlyB.otf", "Shared.ttf"]

    res = stmpo(home, "remove", "--session", "B")
    assert "removed 2" in res.stdout
    assert not font_dir(home).exists()


def test_session_id_comes_from_the_deadline_and_openjd_environment(home: Path,
                                                                   tmp_path: Path) -> None:
    src = make_fonts(tmp_path / "f", X__ttf=b"x")
    work = tmp_path / "OpenJD" / "session-1"
    work.mkdir(parents=True)
    res = stmpo(home, "install", "--from", str(src), OPENJD_SESSION_WORKING_DIR=str(work))
    assert res.returncode == 0 and "session openjd-" in res.stdout
    res = stmpo(home, "install", "--from", str(src), DEADLINE_SESSION_ID="session-abc",
                OPENJD_SESSION_WORKING_DIR=str(work))
    assert "session session-abc:" in res.stdout
    assert len(registry(home).holders("x.ttf")) == 2
    # remove finds each session by the same variables
    stmpo(home, "remove", DEADLINE_SESSION_ID="session-abc", OPENJD_SESSION_WORKING_DIR=str(work))
    assert (font_dir(home) / "X.ttf").exists()
    res = stmpo(home, "remove", OPENJD_SESSION_WORKING_DIR=str(work))
    assert "removed 1 (X.ttf)" in res.stdout
    assert not (font_dir(home) / "X.ttf").exists()


def test_many_sessions_at_once_keep_the_registry_consistent(home: Path, tmp_path: Path) -> None:
    # threads open the lock file each on its own, so they exclude each other like processes
    pl = fonts.places()
    src = make_fonts(tmp_path / "f", Common__ttf=b"c" * 4096, Other__otf=b"o")
    keys = [f"s{i}" for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(len(keys)) as pool:
        list(pool.map(lambda k: fonts.install_fonts(src, pl, live(k)), keys))
    assert sorted(registry(home).holders("common.ttf")) == keys
    with concurrent.futures.ThreadPoolExecutor(len(keys)) as pool:
        list(pool.map(lambda k: fonts.remove_fonts(pl, live(k)), keys[1:]))
    assert registry(home).holders("common.ttf") == ["s0"]
    assert (font_dir(home) / "Common.ttf").read_bytes() == font(".ttf", b"c" * 4096)
    fonts.remove_fonts(pl, live("s0"))
    assert not font_dir(home).exists()


# -- sessions that ended without remove ------------------------------------------------------
def test_a_killed_sessions_fonts_are_reclaimed_by_the_next_session(home: Path,
                                                                   tmp_path: Path) -> None:
    dead = make_fonts(tmp_path / "dead", Leaked__ttf=b"l", Shared__ttf=b"s")
    live_src = make_fonts(tmp_path / "live", Shared__ttf=b"s")
    # The install runs under a short-lived parent (like a session runtime that is then
    # killed): that parent is the session's holder, and it is gone right after.
    argv = [STMPO, "fonts", "install", "--from", str(dead)]
    runner = f"import subprocess, sys; sys.exit(subprocess.run({argv!r}).returncode)"
    res = subprocess.run([sys.executable, "-c", runner], env=env_for(home),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    (dead_key,) = registry(home).sessions
    holder = registry(home).sessions[dead_key]["pid"]
    assert dead_key.startswith("pid-") and not psutil.pid_exists(holder)
    assert (font_dir(home) / "Leaked.ttf").exists()

    res = stmpo_cli(home, "install", "--from", str(live_src), "--session", "next")
    assert res.returncode == 0, res.stderr
    assert f"session {dead_key} ended without removing its fonts" in res.stdout
    assert f"its process {holder} has exited" in res.stdout
    assert not (font_dir(home) / "Leaked.ttf").exists()  # nobody holds it: deleted
    assert (font_dir(home) / "Shared.ttf").exists()  # the new session holds it
    assert list(registry(home).sessions) == ["next"]


def test_a_session_whose_openjd_folder_is_gone_is_reclaimed_by_remove(home: Path,
                                                                      tmp_path: Path) -> None:
    src = make_fonts(tmp_path / "f", Gone__ttf=b"g")
    work = tmp_path / "OpenJD" / "s"
    work.mkdir(parents=True)
    assert stmpo(home, "install", "--from", str(src),
                 OPENJD_SESSION_WORKING_DIR=str(work)).returncode == 0
    shutil.rmtree(work)
    res = stmpo(home, "remove", "--session", "someone-else")
    assert res.returncode == 0
    assert "ended without removing its fonts (its session folder" in res.stdout
    assert not (font_dir(home) / "Gone.ttf").exists()


def test_session_ended_checks_pid_reuse_and_keeps_live_sessions() -> None:
    s = me()
    assert fonts.session_ended({"pid": s.pid, "create_time": s.create_time}) is None
    assert "another process" in (fonts.session_ended({"pid": s.pid,
                                                      "create_time": (s.create_time or 0) - 100})
                                 or "")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert "has exited" in (fonts.session_ended({"pid": proc.pid}) or "")
    assert fonts.session_ended({"pid": None}) is None


def test_holder_skips_launchers_and_one_shot_shells(tmp_path: Path) -> None:
    # stmpo <- sh -c <- python (this test's child, the "runtime"): the holder is python
    script = textwrap.dedent("""
        import json, subprocess, sys
        out = subprocess.run(["sh", "-c", sys.argv[1] + " -c 'import json, os, psutil; "
            "from stmpo_celery.deadline._fontleases import holder_process; "
            "print(json.dumps(holder_process().pid))'"], capture_output=True, text=True)
        print(json.dumps({"holder": json.loads(out.stdout), "me": __import__("os").getpid()}))
    """)
    res = subprocess.run([sys.executable, "-c", script, sys.executable], capture_output=True,
                         text=True, timeout=60)
    data = json.loads(res.stdout)
    assert data["holder"] == data["me"]


# -- fonts that are not ours ------------------------------------------------------------------
def test_a_different_font_of_the_same_name_is_never_overwritten(home: Path,
                                                                tmp_path: Path) -> None:
    fd = font_dir(home)
    fd.mkdir(parents=True)
    (fd / "Theirs.ttf").write_bytes(b"installed by hand")
    (fd / "same.otf").write_bytes(font(".otf", b"identical"))
    src = make_fonts(tmp_path / "f", Theirs__ttf=b"the job's version", SAME__otf=b"identical")
    res = stmpo(home, "install", "--from", str(src), "--session", "s")
    assert res.returncode == 0
    assert "warning: Theirs.ttf: a different font file of this name is already installed" \
        in res.stderr
    assert "not overwritten" in res.stderr
    assert "1 already installed outside stmpo, used as they are (SAME.otf)" in res.stdout
    assert (fd / "Theirs.ttf").read_bytes() == b"installed by hand"
    stmpo(home, "remove", "--session", "s")
    assert (fd / "Theirs.ttf").read_bytes() == b"installed by hand"  # not ours: kept
    assert (fd / "same.otf").exists()


def test_sessions_with_different_fonts_of_one_name_do_not_disturb_each_other(
        home: Path, tmp_path: Path) -> None:
    pl = fonts.places()
    a = make_fonts(tmp_path / "a", Logo__ttf=b"version 1")
    b = make_fonts(tmp_path / "b", Logo__ttf=b"version 2")
    fonts.install_fonts(a, pl, live("A"))
    out = fonts.install_fonts(b, pl, live("B"))
    assert out.conflicts and "another session installed a different font" in out.conflicts[0]
    assert (font_dir(home) / "Logo.ttf").read_bytes() == font(".ttf", b"version 1")
    assert fonts.remove_fonts(pl, live("B")) is not None
    # B held nothing
    assert (font_dir(home) / "Logo.ttf").read_bytes() == font(".ttf", b"version 1")
    removed = fonts.remove_fonts(pl, live("A"))
    assert removed is not None and removed.deleted == ["Logo.ttf"]


def test_installing_twice_in_one_session_holds_once(home: Path, tmp_path: Path) -> None:
    pl = fonts.places()
    src = make_fonts(tmp_path / "f", Once__ttf=b"o")
    fonts.install_fonts(src, pl, live("A"))
    fonts.install_fonts(src, pl, live("A"))
    assert registry(home).holders("once.ttf") == ["A"]
    (font_dir(home) / "Once.ttf").unlink()  # deleted behind stmpo's back: put back
    fonts.install_fonts(src, pl, live("A"))
    assert (font_dir(home) / "Once.ttf").exists()


def test_the_openjd_fonts_environment_installs_for_the_session_only(home: Path,
                                                                    tmp_path: Path) -> None:
    src = make_fonts(tmp_path / "attached, fonts", Job__ttf=b"j")
    job_font = str(font_dir(home) / "Job.ttf")
    template = tmp_path / "t.yaml"
    template.write_text(textwrap.dedent(f"""
        specificationVersion: jobtemplate-2023-09
        name: fonts
        parameterDefinitions:
        - name: FontsDir
          type: PATH
          default: ""
        jobEnvironments:
        - name: Fonts
          script:
            actions:
              onEnter:
                command: stmpo
                args: [fonts, install, --from, "{{{{Param.FontsDir}}}}"]
              onExit:
                command: stmpo
                args: [fonts, remove]
        steps:
        - name: Check
          script:
            actions:
              onRun:
                command: {sys.executable}
                args: ["-c", "import os, sys; sys.exit(0 if os.path.exists({job_font!r}) else 5)"]
    """))
    env = env_for(home, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    res = subprocess.run([str(BIN / "openjd"), "run", str(template), "--step", "Check",
                          "-p", f"FontsDir={src}"], capture_output=True, text=True,
                         encoding="utf-8", env=env, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "stmpo fonts: session openjd-" in res.stdout and "installed 1 (Job.ttf)" in res.stdout
    assert "removed 1 (Job.ttf)" in res.stdout
    assert not (font_dir(home) / "Job.ttf").exists()
    assert registry(home).sessions == {}


# -- platforms --------------------------------------------------------------------------------
def test_places_per_platform(tmp_path: Path) -> None:
    env = {"HOME": "/home/u", "XDG_DATA_HOME": "/data", "XDG_STATE_HOME": "/state"}
    assert fonts.places(env, "linux") == Places(Path("/data/fonts/stmpo"),
                                                Path("/state/stmpo/fonts"), "linux",
                                                own_font_dir=True)
    assert fonts.places({"HOME": "/home/u"}, "linux").font_dir == Path(
        "/home/u/.local/share/fonts/stmpo")
    mac = fonts.places({"HOME": "/Users/u"}, "darwin")
    assert mac.font_dir == Path("/Users/u/Library/Fonts")
    win = fonts.places({"LOCALAPPDATA": "C:/Users/u/AppData/Local"}, "win32")
    assert win.font_dir == Path("C:/Users/u/AppData/Local/Microsoft/Windows/Fonts")
    assert win.state_dir == Path("C:/Users/u/AppData/Local/stmpo/fonts")
    assert not mac.own_font_dir and not win.own_font_dir  # the OS's folders: never removed


def test_windows_module_is_import_safe_and_pure_parts_work(tmp_path: Path) -> None:
    assert winfonts.value_name(Path("C:/f/Brand.otf")) == "Brand [stmpo] (OpenType)"
    assert winfonts.value_name(Path("C:/f/Brand.pfb")) is None
    pfm = tmp_path / "T1.pfm"
    pfm.write_bytes(b"m")
    assert winfonts.resource_name(pfm) is None  # its .pfb is missing
    (tmp_path / "T1.pfb").write_bytes(b"b")
    assert winfonts.resource_name(pfm) == f"{pfm}|{tmp_path / 'T1.pfb'}"
    if sys.platform != "win32":
        with pytest.raises(OSError):
            winfonts.register(pfm)
        winfonts.broadcast_font_change()  # a no-op off Windows
