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
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from stmpo_celery.cli._main import cli
from stmpo_celery.deadline import _fonts as fonts
from stmpo_celery.deadline._fonts import Places, Registry, Session
from stmpo_celery.host import _winfonts as winfonts

BIN = Path(sys.executable).parent
STMPO = str(BIN / "stmpo")
_SESSION_VARS = ("DEADLINE_SESSION_ID", "OPENJD_SESSION_WORKING_DIR", "STMPO_FONTS_SESSION",
                 "XDG_DATA_HOME", "XDG_STATE_HOME")


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for name in _SESSION_VARS:
        monkeypatch.delenv(name, raising=False)
    return h


def font_dir(home: Path) -> Path:
    return home / ".local" / "share" / "fonts" / "stmpo"


def state_dir(home: Path) -> Path:
    return home / ".local" / "state" / "stmpo" / "fonts"


_MAGIC = {".ttf": b"\x00\x01\x00\x00", ".otf": b"OTTO", ".ttc": b"ttcf", ".pfb": b"\x80\x01",
          ".pfm": b"\x00\x01"}


def font(name: str, body: bytes) -> bytes:
    """A font file's content (``name`` or just its extension): how its kind starts, then
    ``body`` (tells fonts apart)."""
    return _MAGIC.get(Path("f" + name).suffix.lower(), b"") + body


def make_fonts(folder: Path, **files: bytes) -> Path:
    """Font files named ``Name__ext`` holding :func:`font` of the given bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = folder / name.replace("__", ".")
        path.write_bytes(font(path.name, data))
    return folder


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SESSION_VARS}
    env.update(HOME=str(home), PYTHONIOENCODING="utf-8", **extra)
    return env


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def stmpo(home: Path, *args: str, **extra: str) -> Result:
    """``stmpo fonts ARGS`` run in this process (fast); see :func:`stmpo_cli` for the real one."""
    env: dict[str, str | None] = {k: None for k in _SESSION_VARS}
    env.update(HOME=str(home), **extra)
    res = CliRunner().invoke(cli, ["fonts", *args], env=env, catch_exceptions=False)
    return Result(res.exit_code, res.stdout, res.stderr)


def stmpo_cli(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """The real ``stmpo fonts ARGS`` command in a process of its own."""
    return subprocess.run([STMPO, "fonts", *args], capture_output=True, text=True,
                          encoding="utf-8", env=env_for(home, **extra), timeout=60)


def me() -> Session:
    p = psutil.Process()
    return Session("unused", p.pid, p.create_time(), None, "test")


def live(key: str) -> Session:
    s = me()
    return Session(key, s.pid, s.create_time, None, "test")


def registry(home: Path) -> Registry:
    return Registry.load(state_dir(home) / "registry.json")


# -- nothing attached ------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["", "   ", "empty", "notfonts"])
def test_no_fonts_attached_is_one_line_exit_0_and_changes_nothing(home: Path, tmp_path: Path,
                                                                   source: str) -> None:
    (tmp_path / "empty").mkdir()
    make_fonts(tmp_path / "notfonts", readme__txt=b"hello")
    arg = str(tmp_path / source) if source.strip() else source
    res = (stmpo_cli if source == "" else stmpo)(home, "install", "--from", arg)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert len(res.stdout.splitlines()) == 1
    assert res.stdout.startswith("stmpo fonts: no fonts attached")
    assert list(home.iterdir()) == []  # no font folder, no registry


def test_a_fonts_folder_missing_on_the_worker_fails_the_session(home: Path,
                                                                 tmp_path: Path) -> None:
    """A submitter names a fonts folder only when it holds fonts: missing on the worker,
    the fonts did not arrive, and a render would use substitutes."""
    res = stmpo_cli(home, "install", "--from", str(tmp_path / "fonts"))
    assert res.returncode == 3, res.stdout + res.stderr
    assert res.stderr.startswith(f"stmpo: error: the job's fonts folder {tmp_path / 'fonts'} "
                                 "does not exist on this host")
    assert len(res.stderr.splitlines()) == 1 and list(home.iterdir()) == []


def test_a_file_given_as_the_fonts_folder_is_refused(home: Path, tmp_path: Path) -> None:
    (tmp_path / "f.ttf").write_bytes(b"x")
    res = stmpo_cli(home, "install", "--from", str(tmp_path / "f.ttf"))
    assert res.returncode == 2 and "is a file" in res.stderr, res.stdout + res.stderr
    assert len(res.stderr.splitlines()) == 1 and list(home.iterdir()) == []


@pytest.mark.parametrize(("name", "data", "why"), [
    ("Fake.ttf", b"hello, this is text", "is not a TrueType/OpenType font"),
    ("Empty.otf", b"", "is empty"),
    ("Set.ttc", b"\x00\x01\x00\x00 one font", "is not a TrueType/OpenType collection"),
    ("Type1.pfb", b"%!PS-AdobeFont-1.0 (a .pfa renamed)", "is not a PostScript Type 1 font"),
    ("Type1.pfm", b"<html>404</html>", "is not PostScript font metrics"),
    ("Old.fnt", b"<html>404</html>", "is not a Windows raster font"),
    ("Mac.dfont", b"<html><body>404 Not Found</body></html>", "is not a Mac font suitcase"),
])
def test_a_file_that_is_not_the_font_it_claims_is_refused_before_anything_is_installed(
        home: Path, tmp_path: Path, name: str, data: bytes, why: str) -> None:
    src = make_fonts(tmp_path / "f", Good__otf=b"g")
    (src / name).write_bytes(data)
    res = stmpo_cli(home, "install", "--from", str(src), "--session", "s")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith(f"stmpo: error: the font file {src / name} {why}")
    assert "nothing was installed" in res.stderr and len(res.stderr.splitlines()) == 1
    assert list(home.iterdir()) == []  # no font folder, no registry


def test_what_macos_leaves_beside_fonts_is_passed_over(home: Path, tmp_path: Path) -> None:
    """AppleDouble files (``._Name.ttf``) and a ``__MACOSX`` folder from a zip are not fonts:
    neither refused nor installed."""
    src = make_fonts(tmp_path / "f", Brand__ttf=b"b")
    (src / "._Brand.ttf").write_bytes(b"\x00\x05\x16\x07Mac OS X        ")
    (src / "__MACOSX").mkdir()
    (src / "__MACOSX" / "._Brand.ttf").write_bytes(b"\x00\x05\x16\x07Mac OS X        ")
    res = stmpo_cli(home, "install", "--from", str(src), "--session", "s")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in font_dir(home).iterdir()) == ["Brand.ttf"]


def test_real_font_files_pass_the_check() -> None:
    """The check refuses nothing a real font file of each kind starts with."""
    found = {}
    for root in (Path("/usr/share/fonts"), Path("/usr/share/groff"), Path("/usr/share/wine")):
        for p in sorted(root.rglob("*")) if root.is_dir() else []:
            if p.suffix.lower() in fonts.FONT_EXTENSIONS and p.is_file():
                found.setdefault(p.suffix.lower(), p)
    if not found:
        pytest.skip("no font files on this machine")
    assert {ext: fonts.font_problem(p) for ext, p in found.items()} == dict.fromkeys(found)


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
                                                      "create_time": s.create_time - 100}) or "")
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


def test_a_font_folder_that_cannot_be_written_fails_with_exit_3_and_holds_nothing(
        home: Path, tmp_path: Path) -> None:
    blocker = font_dir(home)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the font folder should be")
    src = make_fonts(tmp_path / "f", A__ttf=b"a", B__otf=b"b")
    res = stmpo_cli(home, "install", "--from", str(src), "--session", "s")
    assert res.returncode == 3, res.stdout + res.stderr
    assert res.stderr.startswith("stmpo: error: cannot install the font A.ttf into ")
    assert "Traceback" not in res.stderr
    assert registry(home).sessions == {} and registry(home).fonts == {}


@pytest.mark.parametrize("text", [
    '{"fonts": {}, "sessions": {"a": "str"}}',
    '{"fonts": [], "sessions": "x"}',
    '{"fonts": {"k": {"path": 5}}, "sessions": {"s": {"fonts": [1]}}}',
    '{"fonts": 5, "sessions": null}',
    '[1, 2]',
])
def test_a_registry_of_the_wrong_shape_is_one_warning_not_a_traceback(
        home: Path, tmp_path: Path, text: str) -> None:
    state_dir(home).mkdir(parents=True)
    (state_dir(home) / "registry.json").write_text(text)
    src = make_fonts(tmp_path / "f", Brand__ttf=b"b")
    for args in (["list"], ["install", "--from", str(src), "--session", "s"],
                 ["remove", "--session", "s"]):
        res = stmpo_cli(home, *args)
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr
    assert registry(home).sessions == {} and registry(home).fonts == {}
