"""stmpo fonts: which process holds a session, sessions of other process spaces, a
registry a newer stmpo wrote, and names no code page holds — with real processes and a
private HOME."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from fontlib import STMPO, env_for, font_dir, make_fonts, state_dir

from stmpo_celery.deadline import _fontleases as leases
from stmpo_celery.errors import EnvironmentProblem

#: the innermost process prints the holder it finds; the middle one either passes its own
#: command line on (a Windows venv's python.exe redirector, a trampoline) or is a shell
#: running a script with options before it (``bash -e script``)
_PROBE = textwrap.dedent("""
    import os, subprocess, sys
    if os.environ.get("PROBE_DEPTH", "0") == "0":
        os.environ["PROBE_DEPTH"] = "1"
        sys.exit(subprocess.call([sys.executable, *sys.argv]))  # the same arguments
    from stmpo_celery.deadline._fontleases import holder_process
    h = holder_process()
    print(h.pid if h else 0, flush=True)
""")


def _agent_runs(argv: list[str], tmp_path: Path) -> tuple[int, int]:
    """A long-lived "worker agent" process runs ``argv``; (agent pid, holder found)."""
    agent = textwrap.dedent(f"""
        import subprocess, sys
        out = subprocess.run({argv!r}, capture_output=True, text=True, cwd={str(tmp_path)!r})
        print(out.stdout.strip() or out.stderr, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", agent], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=60)
    return proc.pid, int(out.strip().splitlines()[-1])


def test_the_holder_is_never_a_process_of_the_action_itself(tmp_path: Path) -> None:
    """A Windows venv's Scripts\\python.exe starts the real python.exe with the same
    arguments and ends with it; so does ``bash -e script``: taken for the session's
    holder, they made the next session delete a live session's fonts mid-render."""
    probe = tmp_path / "probe.py"
    probe.write_text(_PROBE)
    agent, holder = _agent_runs([sys.executable, str(probe)], tmp_path)
    assert holder == agent  # the pass-on interpreter was skipped
    script = tmp_path / "action.sh"
    script.write_text(f"PROBE_DEPTH=1 {sys.executable} {probe}\n")
    agent, holder = _agent_runs(["bash", "-e", str(script)], tmp_path)
    assert holder == agent  # the one-shot shell was skipped


def test_a_holder_started_after_the_session_folder_is_part_of_the_action() -> None:
    """Where the OS keeps a folder's creation time (Windows, macOS), every ancestor that
    started after the session folder was made belongs to this action."""
    me = psutil.Process()
    parent = me.parent()
    assert parent is not None
    assert leases.holder_process(me) is not None
    found = leases.holder_process(me, started_before=parent.create_time() - 1)
    assert found is None or found.create_time() <= parent.create_time() - 1


def test_a_session_of_another_process_space_is_never_judged_from_here() -> None:
    """A network home folder or a container sharing HOME: the registry holds sessions
    whose pids mean nothing here; pid 1 "exited" and their fonts were deleted mid-render."""
    from stmpo_celery.broker.keys import host_name
    from stmpo_celery.host import process_space

    gone = psutil.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = {"pid": gone.pid, "create_time": 1.0, "workdir": None,
            "host": host_name(), "space": process_space()}
    assert leases.session_ended(here) is not None  # here: judged, and over
    for other in ({**here, "host": "another-host"},
                  {**here, "space": {**process_space(), "boot": "another-boot"}}):
        assert leases.session_ended(other) is None
    old = {k: v for k, v in here.items() if k not in ("host", "space")}
    assert leases.session_ended(old) is not None  # a record from before: as before


def test_a_registry_a_newer_stmpo_wrote_is_left_alone(home: Path, tmp_path: Path) -> None:
    """Two queues' venvs pin different stmpo versions on one host: the older one dropped
    the entries it did not know and deleted a live session's font."""
    src = make_fonts(tmp_path / "job", Brand__ttf=b"brand")
    env = env_for(home, STMPO_FONTS_SESSION="live")
    assert subprocess.run([STMPO, "fonts", "install", "--from", str(src)], env=env,
                          capture_output=True, timeout=60).returncode == 0
    reg = state_dir(home) / "registry.json"
    data = json.loads(reg.read_text())
    data["version"] = leases.REGISTRY_VERSION + 1
    reg.write_text(json.dumps(data))
    before = reg.read_bytes()
    other = make_fonts(tmp_path / "job2", Other__ttf=b"other")
    res = subprocess.run([STMPO, "fonts", "install", "--from", str(other)], text=True,
                         env=env_for(home, STMPO_FONTS_SESSION="other"),
                         capture_output=True, timeout=60)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "written by a newer stmpo" in res.stderr and "Traceback" not in res.stderr
    assert reg.read_bytes() == before
    assert (font_dir(home) / "Brand.ttf").exists()
    with pytest.raises(EnvironmentProblem):
        leases.Registry.load(reg)


def test_a_font_name_no_code_page_holds_is_said_in_utf8(home: Path, tmp_path: Path) -> None:
    """The OpenJD runtime reads an action's output as UTF-8; Windows writes a pipe in its
    ANSI code page, which has no Japanese: install and remove crashed after their work."""
    src = make_fonts(tmp_path / "job", **{"Schrift-äß-日本__ttf": b"jp"})
    env = {**env_for(home, STMPO_FONTS_SESSION="u1"), "PYTHONIOENCODING": "cp1252"}
    for verb in (["install", "--from", str(src)], ["remove"]):
        res = subprocess.run([STMPO, "fonts", *verb], env=env, capture_output=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr.decode("utf-8", "replace")
        assert "Schrift-äß-日本" in res.stdout.decode("utf-8"), res.stdout


def test_a_font_windows_cannot_load_is_the_jobs_fault_exit_2(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AddFontResourceExW refusing a font whose header looked whole failed the session
    with exit 3 and "free space on the disk ... or make it writable": the file is at
    fault, not the host. Nothing stays installed either way."""
    from stmpo_celery.deadline import _fonts as fonts
    from stmpo_celery.errors import BadInput
    from stmpo_celery.host import FontNotLoadable

    src = make_fonts(tmp_path / "f", A__ttf=b"a", Broken__ttf=b"x")
    real = fonts._place_file

    def place(s: Path, dest: Path, platform: str) -> None:
        real(s, dest, platform)
        if dest.name == "Broken.ttf":
            raise FontNotLoadable(0, f"AddFontResourceExW failed for {dest}")

    monkeypatch.setattr(fonts, "_place_file", place)
    with pytest.raises(BadInput, match="Windows cannot load the font Broken.ttf"):
        fonts.install_fonts(src, fonts.places(), leases.current_session("s"))
    assert not (font_dir(home) / "A.ttf").exists()
    assert not (font_dir(home) / "Broken.ttf").exists()
    reg = leases.Registry.load(state_dir(home) / "registry.json")
    assert reg.sessions == {}


def test_a_font_left_open_at_its_last_remove_is_put_back_in_use_not_copied_over(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows: a font still open (a viewer) when its last session removed it stays,
    pending deletion; the next session bringing it tried to copy over the open file and
    failed with exit 3 ("Access denied"), though the right font was already in place."""
    import errno
    import shutil

    from fontlib import live

    from stmpo_celery.deadline import _fonts as fonts

    src = make_fonts(tmp_path / "f", Held__ttf=b"held")
    fonts.install_fonts(src, fonts.places(), live("o1"))
    installed = font_dir(home) / "Held.ttf"

    def still_open(path: Path, platform: str) -> bool:
        raise PermissionError(errno.EACCES, "The process cannot access the file", str(path))

    monkeypatch.setattr(fonts, "_delete_file", still_open)  # open all along (a viewer)
    fonts.remove_fonts(fonts.places(), live("o1"))
    assert installed.exists()
    assert leases.Registry.load(state_dir(home) / "registry.json").fonts[
        "held.ttf"].get("pending_delete") is True
    real = shutil.copyfile

    def refuse_open_target(a: str, b: str) -> str:
        if Path(b).parent == installed.parent:  # the open file cannot be replaced
            raise PermissionError(errno.EACCES, "Access denied", b)
        return real(a, b)

    monkeypatch.setattr(shutil, "copyfile", refuse_open_target)
    out = fonts.install_fonts(src, fonts.places(), live("o2"))
    assert out.installed == ["Held.ttf"] and installed.exists()
    reg = leases.Registry.load(state_dir(home) / "registry.json")
    assert reg.holders("held.ttf") == ["o2"] and "pending_delete" not in reg.fonts["held.ttf"]
