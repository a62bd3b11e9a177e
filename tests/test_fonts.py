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
    dead_process,
    env_for,
    font,
    font_dir,
    live,
    make_fonts,
    me,
    registry,
    state_dir,
    stmpo,
    stmpo_cli,
)

from stmpo_celery.deadline import _fonts as fonts
from stmpo_celery.deadline._fonts import Places, Session
from stmpo_celery.errors import EnvironmentProblem
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


# -- fonts that are not ours, and names taken ------------------------------------------------
def test_a_different_font_installed_outside_stmpo_is_never_overwritten(home: Path,
                                                                       tmp_path: Path) -> None:
    """On macOS and Windows fonts go to the user's own font folder: a file there stmpo did
    not install is the user's, never replaced nor deleted (a warning; the render uses it)."""
    user_fonts = home / "Library" / "Fonts"
    user_fonts.mkdir(parents=True)
    (user_fonts / "Theirs.ttf").write_bytes(b"installed by hand")
    (user_fonts / "same.otf").write_bytes(font(".otf", b"identical"))
    pl = Places(user_fonts, state_dir(home), "darwin")
    src = make_fonts(tmp_path / "f", Theirs__ttf=b"the job's version", SAME__otf=b"identical")
    out = fonts.install_fonts(src, pl, live("s"))
    assert out.conflicts == [f"Theirs.ttf: a different font file of this name is already "
                             f"installed outside stmpo ({user_fonts / 'Theirs.ttf'}); not "
                             "overwritten, the render uses it"]
    assert out.present == ["SAME.otf"] and out.installed == []
    assert (user_fonts / "Theirs.ttf").read_bytes() == b"installed by hand"
    fonts.remove_fonts(pl, live("s"))
    assert (user_fonts / "Theirs.ttf").read_bytes() == b"installed by hand"  # not ours: kept
    assert (user_fonts / "same.otf").exists()


def test_a_different_font_of_one_name_held_by_another_session_is_refused(
        home: Path, tmp_path: Path) -> None:
    """Two jobs with different fonts of one file name on one host: the second would render
    with the first's font, and lose it when the first session removes it. It is refused
    before anything is installed; once the first session has ended it installs."""
    pl = fonts.places()
    a = make_fonts(tmp_path / "a", Logo__ttf=b"version 1")
    b = make_fonts(tmp_path / "b", Logo__ttf=b"version 2", Other__otf=b"o")
    fonts.install_fonts(a, pl, live("A"))
    with pytest.raises(EnvironmentProblem) as err:
        fonts.install_fonts(b, pl, live("B"))
    assert err.value.message == (
        "the font Logo.ttf cannot be installed: this host's stmpo fonts folder already holds "
        f"a different font file of that name ({font_dir(home) / 'Logo.ttf'}), in use by "
        "session A: render this job on another host, or on this one once that session has "
        "ended; nothing was installed")
    assert sorted(p.name for p in font_dir(home).iterdir()) == ["Logo.ttf"]  # none of B's
    assert list(registry(home).sessions) == ["A"]
    assert (font_dir(home) / "Logo.ttf").read_bytes() == font(".ttf", b"version 1")
    removed = fonts.remove_fonts(pl, live("A"))
    assert removed is not None and removed.deleted == ["Logo.ttf"]
    assert fonts.install_fonts(b, pl, live("B")).installed == ["Logo.ttf", "Other.otf"]
    assert (font_dir(home) / "Logo.ttf").read_bytes() == font(".ttf", b"version 2")


def test_the_refusal_of_a_taken_name_is_one_line_exit_3(home: Path, tmp_path: Path) -> None:
    j1 = make_fonts(tmp_path / "j1", Brand__ttf=b"ONE")
    j2 = make_fonts(tmp_path / "j2", Brand__ttf=b"TWO")
    assert stmpo_cli(home, "install", "--from", str(j1), "--session", "S1").returncode == 0
    res = stmpo_cli(home, "install", "--from", str(j2), "--session", "S2")
    assert res.returncode == 3, res.stdout + res.stderr
    assert res.stderr.startswith("stmpo: error: the font Brand.ttf cannot be installed: ")
    assert "in use by session S1: render this job on another host" in res.stderr
    assert len(res.stderr.splitlines()) == 1 and "Traceback" not in res.stderr
    assert list(registry(home).sessions) == ["S1"]
    res = stmpo_cli(home, "remove", "--session", "S1")
    assert "removed 1 (Brand.ttf)" in res.stdout and not font_dir(home).exists()


def test_a_name_held_only_by_a_session_that_ended_is_free(home: Path, tmp_path: Path) -> None:
    """The ended session's font goes first, so the next job's font of that name installs."""
    pl = fonts.places()
    pid, started = dead_process()
    fonts.install_fonts(make_fonts(tmp_path / "a", Logo__ttf=b"version 1"), pl,
                        Session("gone", pid, started, None, "test"))
    out = fonts.install_fonts(make_fonts(tmp_path / "b", Logo__ttf=b"version 2"), pl,
                              live("B"))
    assert out.reclaimed[0].startswith("session gone ended without removing its fonts")
    assert out.installed == ["Logo.ttf"] and out.conflicts == []
    assert (font_dir(home) / "Logo.ttf").read_bytes() == font(".ttf", b"version 2")
    assert registry(home).holders("logo.ttf") == ["B"]


def test_an_unreadable_registry_is_kept_aside_and_stmpos_folder_stays_stmpos(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The files in stmpo's folder are never taken for fonts installed outside stmpo: a
    different font of one's name is refused, the same font is taken over (and removed
    with the session that took it). The unreadable registry is kept, not overwritten."""
    pl = fonts.places()
    fonts.install_fonts(make_fonts(tmp_path / "a", Brand__ttf=b"one", Logo__otf=b"logo"), pl,
                        live("A"))
    broken = '{"version":1,"fonts":'
    reg_path = state_dir(home) / "registry.json"
    reg_path.write_text(broken)
    capsys.readouterr()
    res = stmpo(home, "list")  # without the lock: says so, moves nothing
    assert "is unreadable" in res.stderr and "the next stmpo fonts install or remove keeps " \
        "it aside" in res.stderr
    assert reg_path.read_text() == broken

    with pytest.raises(EnvironmentProblem) as err:
        fonts.install_fonts(make_fonts(tmp_path / "b", Brand__ttf=b"two"), pl, live("B"))
    assert "already holds a different font file of that name" in err.value.message
    assert "recorded by no session (its record was lost" in err.value.message
    (aside,) = state_dir(home).glob("registry.json.unreadable-*")
    assert aside.read_text() == broken
    warning = capsys.readouterr().err
    assert "is unreadable (" in warning and f"kept as {aside}, starting a new one" in warning
    assert len(warning.splitlines()) == 1

    out = fonts.install_fonts(make_fonts(tmp_path / "c", Logo__otf=b"logo"), pl, live("C"))
    assert out.adopted == ["Logo.otf"] and out.present == [] and out.installed == []
    removed = fonts.remove_fonts(pl, live("C"))
    assert removed is not None and removed.deleted == ["Logo.otf"]
    assert sorted(p.name for p in font_dir(home).iterdir()) == ["Brand.ttf"]


def test_sessions_with_the_same_font_of_one_name_share_it(home: Path, tmp_path: Path) -> None:
    pl = fonts.places()
    fonts.install_fonts(make_fonts(tmp_path / "a", Logo__ttf=b"same"), pl, live("A"))
    out = fonts.install_fonts(make_fonts(tmp_path / "b", LOGO__TTF=b"same"), pl, live("B"))
    assert out.shared == ["LOGO.TTF"] and registry(home).holders("logo.ttf") == ["A", "B"]


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
    assert winfonts.value_name(Path("C:/f/Brand.otf")) == "Brand.otf [stmpo] (OpenType)"
    # one label per file: Foo.ttf and Foo.ttc (both TrueType) were one value
    assert winfonts.value_name(Path("C:/f/Foo.ttf")) != winfonts.value_name(Path("C:/f/Foo.ttc"))
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
