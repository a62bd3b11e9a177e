"""The platform layer is the only place that asks which OS it runs on or calls an OS-only
API: every other module must run unchanged on Linux, Windows and macOS."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import stmpo_celery

PKG = Path(stmpo_celery.__file__).parent
LAYER = PKG / "host"

#: attribute chains that ask which OS this is
OS_QUESTIONS = {"sys.platform", "os.name", "platform.system", "platform.platform",
                "sys.getwindowsversion", "platform.mac_ver", "platform.win32_ver"}
#: calls that exist on one OS only (Linux, POSIX or Windows)
OS_ONLY = {"sched_setaffinity", "sched_getaffinity", "prctl", "fork", "forkpty", "setsid",
           "setpgid", "getpgid", "killpg", "setpgrp", "getsid", "WinDLL", "windll",
           "get_last_error", "GenerateConsoleCtrlEvent", "waitstatus_to_exitcode"}
#: Popen keywords that are POSIX-only or Windows-only
OS_ONLY_KWARGS = {"preexec_fn", "start_new_session", "pass_fds", "process_group",
                  "creationflags", "startupinfo"}
#: calls that behave differently per OS: Windows refuses to replace a file another process
#: holds open (use host.replace_file, which waits for the reader)
OS_DIFFERENT = {"os.replace", "os.rename"}
OS_ONLY_MODULES = {"msvcrt", "winreg", "fcntl", "termios", "resource", "_winapi", "pwd", "grp"}

#: known, reviewed exceptions: (module, name) -> why it is portable
ALLOWED = {
    # a forked child's waitpid status: only reached when the layer forked the slot
    ("orchestrator/_pool.py", "waitstatus_to_exitcode"),
}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def violations(path: Path, rel: str | None = None) -> list[str]:
    rel = rel or path.relative_to(PKG).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        what = None
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted in OS_QUESTIONS | OS_DIFFERENT:
                what = dotted
            elif node.attr in OS_ONLY:
                what = node.attr
        elif isinstance(node, ast.Name) and node.id in OS_ONLY:
            what = node.id
        elif isinstance(node, ast.keyword) and node.arg in OS_ONLY_KWARGS:
            what = f"{node.arg}="
        elif isinstance(node, ast.Import):
            what = next((a.name for a in node.names if a.name.split(".")[0]
                         in OS_ONLY_MODULES | {"platform"}), None)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in OS_ONLY_MODULES | {"platform"}:
                what = node.module
            elif node.module in ("os", "sys"):
                names = {a.name for a in node.names}
                what = next(iter(names & (OS_ONLY | {"platform", "name", "replace",
                                                     "rename"})), None)
        if what and (rel, what.rstrip("=")) not in ALLOWED:
            found.append(f"{rel}:{getattr(node, 'lineno', '?')}: {what}")
    return found


def test_no_os_question_or_os_only_call_outside_the_platform_layer() -> None:
    files = [p for p in PKG.rglob("*.py") if LAYER not in p.parents]
    assert len(files) > 40  # the scan really covers the package
    bad = [v for p in sorted(files) for v in violations(p)]
    assert not bad, "OS-specific code outside stmpo_celery/host/:\n" + "\n".join(bad)


def test_the_scan_catches_each_kind_of_violation(tmp_path: Path) -> None:
    """The check itself can fail: each forbidden form is caught in a module outside host/."""
    sample = tmp_path / "probe.py"
    sample.write_text(
        "import os, sys, subprocess\nimport msvcrt\nfrom os import fork\n"
        "if sys.platform == 'win32': pass\n"
        "if os.name == 'nt': pass\n"
        "os.sched_setaffinity(0, {0})\nos.setsid()\nos.killpg(1, 9)\n"
        "os.replace('a', 'b')\n"
        "subprocess.Popen(['x'], start_new_session=True, preexec_fn=None, pass_fds=(3,))\n",
        encoding="utf-8")
    found = " ".join(violations(sample, "slot/probe.py"))
    for what in ("msvcrt", "fork", "sys.platform", "os.name", "sched_setaffinity", "setsid",
                 "killpg", "start_new_session=", "preexec_fn=", "pass_fds=", "os.replace"):
        assert what in found, (what, found)


@pytest.mark.parametrize(("path", "found"), [
    ("C:\\r\\dir \\shot_[####].png", ("dir ", "ends with a dot or a space")),
    ("C:\\r\\CON\\shot.png", ("CON", "device name CON")),
    ("C:\\r\\aux.txt\\shot.png", ("aux.txt", "device name AUX")),
    ("D:/r/a<b/shot.png", ("a<b", "holds '<'")),
    ("\\\\?\\C:\\r\\x.\\s.png", ("x.", "ends with a dot")),
    ("\\\\farm\\renders$\\shot\\s_[####].png", None),  # server and share are not names
    ("\\\\?\\UNC\\farm\\share\\s.png", None),
    ("C:\\r\\..\\shot\\s.png", None),
])
def test_names_windows_cannot_create_are_found_in_windows_paths(
        path: str, found: tuple[str, str] | None) -> None:
    from stmpo_celery.host._windows import name_problem_in

    hit = name_problem_in(path)
    if found is None:
        assert hit is None, hit
    else:
        assert hit is not None and hit[0] == found[0] and found[1] in hit[1], hit


def test_commands_printed_to_paste_are_quoted_for_this_os_shell(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from stmpo_celery.host import _platform, shell_join

    words = ["stmpo", "render", "--comp", "Main Comp", "--output", "C:\\r\\it's_[####].png"]
    monkeypatch.setattr(_platform, "OS", "linux")
    assert shell_join(words) == ("stmpo render --comp 'Main Comp' --output "
                                 "'C:\\r\\it'\"'\"'s_[####].png'")
    monkeypatch.setattr(_platform, "OS", "windows")  # cmd.exe takes single quotes literally
    assert shell_join(words) == ('stmpo render --comp "Main Comp" --output '
                                 "C:\\r\\it's_[####].png")


def test_a_replace_on_windows_waits_for_the_reader_then_gives_up(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The retry rule of host.replace_file (the real refusal is the Wine lane's
    test_wine_concurrent_reviews_lose_no_note): on Windows a refused replace is tried
    again until the reader lets go, up to its wait; elsewhere the refusal is a real one
    and raised at once."""
    import os
    import time

    from stmpo_celery.host import _paths, _platform

    src, dst = tmp_path / "new", tmp_path / "old"
    refusals = [0]
    real = os.replace

    def held(a: object, b: object, n: int) -> None:  # the reader lets go after n tries
        if refusals[0] < n:
            refusals[0] += 1
            raise PermissionError(13, "Access denied")
        real(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(_platform, "OS", "windows")
    src.write_text("new")
    monkeypatch.setattr(_paths.os, "replace", lambda a, b: held(a, b, 4))
    _paths.replace_file(src, dst)
    assert dst.read_text() == "new" and refusals[0] == 4
    src.write_text("newer")
    refusals[0] = 0
    monkeypatch.setattr(_paths.os, "replace", lambda a, b: held(a, b, 10**6))
    t0 = time.monotonic()
    with pytest.raises(PermissionError):
        _paths.replace_file(src, dst, wait=0.3)
    assert 0.3 <= time.monotonic() - t0 < 1.5 and dst.read_text() == "new"
    monkeypatch.setattr(_platform, "OS", "linux")
    refusals[0] = 0
    with pytest.raises(PermissionError):
        _paths.replace_file(src, dst)
    assert refusals[0] == 1
