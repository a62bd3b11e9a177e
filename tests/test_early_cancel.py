"""Cancels before a run takes over its signals, for render and every other command:
raised once, kept when Python would drop the raise, the command's cleanup run, its code
and (render) its summary (in process, or one short process)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest


def test_a_cancel_wrapped_by_the_import_it_cut_short_is_still_a_cancel() -> None:
    """A cancel raised while a class is built mid-import (kombu's, in CI) comes out as a
    RuntimeError from __set_name__: render and main still see the cancel behind it."""
    from stmpo_celery.cli._render_start import _EarlyCancel

    class Cut:
        def __set_name__(self, owner: type, name: str) -> None:
            raise _EarlyCancel.Cancelled(signal.SIGTERM)

    with pytest.raises(BaseException) as info:
        type("Built", (), {"logger": Cut()})
    cancel = _EarlyCancel.found_in(info.value)
    assert cancel is not None and cancel.code == 143
    assert _EarlyCancel.found_in(RuntimeError("not a cancel")) is None


def test_a_cancel_whose_raise_an_at_fork_hook_swallowed_is_not_lost() -> None:
    """SIGTERM while the embedded Redis is started: the handler runs inside logging's
    at-fork hook, whose exceptions Python ignores ("Exception ignored in _releaseLock"):
    the render went on to the end and exited 0. The cancel is kept: raised again at the
    next checkpoint, or handed to the run."""
    from types import SimpleNamespace

    from stmpo_celery.cli._render_start import _EarlyCancel

    early = _EarlyCancel()
    try:
        early.handle(signal.SIGTERM, None)
    except _EarlyCancel.Cancelled:
        pass  # what an at-fork hook does with it
    with pytest.raises(_EarlyCancel.Cancelled) as info:
        early.check()
    assert info.value.code == 143
    run = SimpleNamespace(cancel_signal=None)
    early.attach(run)
    assert run.cancel_signal == signal.SIGTERM
    _EarlyCancel().check()  # nothing received: nothing raised


def test_a_cancel_inside_loggings_at_fork_hook_is_kept_for_later_not_raised_there() -> None:
    """A signal while a helper process is started can land in logging's at-fork hook,
    where Python prints a raise as "Exception ignored" with its traceback and drops it:
    the early-cancel handler keeps it (``check`` raises it right after) and raises
    anywhere else."""
    import logging
    import sys
    import types

    from stmpo_celery.cli._render_start import _EarlyCancel

    hook = getattr(logging, "_releaseLock", None) or logging._afterFork  # type: ignore[attr-defined]
    early = _EarlyCancel()
    early.handle(signal.SIGINT, types.SimpleNamespace(f_code=hook.__code__))  # no raise
    assert early.pending == signal.SIGINT
    with pytest.raises(_EarlyCancel.Cancelled):
        early.check()
    early.handle(signal.SIGTERM, sys._getframe())  # a second signal: the cleanup runs on


def test_a_second_signal_does_not_cut_the_first_cancels_cleanup_short() -> None:
    """A second SIGTERM while a farm submit removed its half-copied project (the first
    cancel's cleanup) raised again in the middle of it: the copy stayed behind."""
    from stmpo_celery.cli._render_start import _EarlyCancel

    early = _EarlyCancel()
    cleaned = []
    with pytest.raises(_EarlyCancel.Cancelled) as first:
        try:
            early.handle(signal.SIGTERM, None)
        except BaseException:
            early.handle(signal.SIGTERM, None)  # lands during the cleanup: not raised
            early.handle(signal.SIGHUP, None)
            cleaned.append(True)
            raise
    assert cleaned and first.value.code == 143


def test_a_cancel_inside_an_imports_lock_callback_or_below_it_is_kept_not_raised() -> None:
    """Seen in CI: Ctrl-C landed in the weakref callback that frees an import's module
    lock (importlib), where a raise is printed as "Exception ignored" with a traceback.
    A frame called from such code counts too: the raise would reach it and be dropped."""
    import types

    from stmpo_celery.cli._render_start import _EarlyCancel

    cb = compile("pass", "<frozen importlib._bootstrap>", "exec").replace(co_name="cb")
    inner = types.SimpleNamespace(f_code=(lambda: None).__code__,
                                  f_back=types.SimpleNamespace(f_code=cb, f_back=None))
    for frame in (types.SimpleNamespace(f_code=cb), inner):
        early = _EarlyCancel()
        early.handle(signal.SIGINT, frame)  # no raise
        assert early.pending == signal.SIGINT
        with pytest.raises(_EarlyCancel.Cancelled):
            early.check()


@pytest.mark.parametrize("where", ["while the command line is parsed", "before render's body"])
def test_a_cancel_before_render_takes_it_still_writes_the_summary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A SIGHUP that lands before ``render``'s own handling (click still parsing, or the
    first lines of render) ended with 129 and "CANCELLED by" but no ``--summary``: the
    file the README promises, and that a wrapper reads for the outcome (seen in CI)."""
    from stmpo_celery.cli import _main
    from stmpo_celery.cli._render_start import _EarlyCancel

    if where == "before render's body":
        real_install = _EarlyCancel.install.__func__  # type: ignore[attr-defined]
        calls: list[int] = []

        def install(cls: type[_EarlyCancel]) -> _EarlyCancel:
            early: _EarlyCancel = real_install(cls)
            calls.append(1)
            if len(calls) == 2:  # render's own call, just before its try
                os.kill(os.getpid(), signal.SIGHUP)
            return early

        monkeypatch.setattr(_EarlyCancel, "install", classmethod(install))
    else:
        real_main = _main.cli.main

        def parse(*args: Any, **kw: Any) -> Any:
            os.kill(os.getpid(), signal.SIGHUP)
            return real_main(*args, **kw)

        monkeypatch.setattr(_main.cli, "main", parse)
    summary = tmp_path / "run.json"
    with pytest.raises(SystemExit) as info:
        _main.main(["render", "--project", str(tmp_path / "p.aep"), "--comp", "c",
                    "--frames", "1-8", "--output", str(tmp_path / "o_[####].png"),
                    "--summary=" + str(summary)])
    assert info.value.code == 129
    doc = json.loads(summary.read_text())
    assert doc["exit_code"] == 129 and doc["status"] == "cancelled", doc
    assert "SIGHUP" in doc["reason"]
    assert _EarlyCancel.current is None


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_kill_that_is_a_cancel_runs_any_commands_cleanup(
        tmp_path: Path, sig: int, code: int) -> None:
    """SIGTERM ended a command other than render outright: a farm submit killed while it
    copied the project left the partial copy and an empty shot folder, and nothing could
    remove them. Now it runs the command's cleanup and ends with one line and its code."""
    import subprocess
    import sys

    marker = tmp_path / "half-copied.aep"
    code_text = f"""
import os, signal, time, click
from stmpo_celery.cli import _main

@_main.cli.command("copying")
def copying() -> None:
    with open({str(marker)!r}, "w") as fh:
        fh.write("partial")
    try:
        os.kill(os.getpid(), {int(sig)})
        time.sleep(10)
    except BaseException:
        os.unlink({str(marker)!r})
        raise

_main.main(["copying"])
"""
    res = subprocess.run([sys.executable, "-c", code_text], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == code, res.stderr
    assert res.stderr.strip().splitlines() == [f"stmpo: CANCELLED by {signal.Signals(sig).name}"]
    assert not marker.exists()


def test_render_run_by_another_command_takes_sigint_too() -> None:
    """Every command takes SIGTERM/SIGHUP as a cancel but leaves Ctrl-C to Python; a
    render run by one (stmpo demo) must take SIGINT as well, or a Ctrl-C between its
    embedded Redis start and the run's own handlers left that Redis running."""
    from stmpo_celery.cli._render_start import _EarlyCancel

    before = signal.getsignal(signal.SIGINT)
    early = _EarlyCancel.install(keep_sigint=True)
    try:
        assert signal.getsignal(signal.SIGINT) is before
        assert signal.getsignal(signal.SIGTERM) == early.handle
        assert _EarlyCancel.install() is early  # render's own call
        assert signal.getsignal(signal.SIGINT) == early.handle
    finally:
        early.uninstall()
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_cancel_while_stmpo_loads_still_writes_the_renders_summary(
        tmp_path: Path, sig: int, code: int) -> None:
    """A cancel while stmpo's own modules load (~0.1 s here, 1.3 s under Wine, longer on
    a Windows host that scans what Python imports) ended the process with its code but
    no ``--summary``, which every cancel promises; SIGTERM (OpenJD's cancel) killed it
    outright."""
    import subprocess
    import sys

    from stmpo_celery.cli._render_start import write_cancelled_early

    summary = tmp_path / "s.json"
    code_text = f"""
import os, signal, sys
sys.argv = ["stmpo", "render", "--frames", "1-8", "--summary", {str(summary)!r}]
import stmpo_celery.cli as cli
assert signal.getsignal({int(sig)}) is cli._loading_cancelled
os.kill(os.getpid(), {int(sig)})
"""
    res = subprocess.run([sys.executable, "-c", code_text], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == code, res.stderr
    assert res.stdout.startswith("stmpo: CANCELLED by ") and not res.stderr, res
    doc = json.loads(summary.read_text())
    assert doc["exit_code"] == code and doc["status"] == "cancelled", doc
    assert signal.Signals(sig).name in doc["reason"]
    later = tmp_path / "later.json"  # the summary of a cancel a moment later: same keys
    write_cancelled_early(str(later), None, signal.Signals(sig).name, code, 0.0)
    other = json.loads(later.read_text())
    assert doc.keys() == other.keys() and doc["frames"].keys() == other["frames"].keys()
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("module", ["stmpo_celery/errors.py", "stmpo_celery/cli/_cancelled.py",
                                    "stmpo_celery/config/__init__.py", "click/core.py"])
def test_a_ctrl_c_in_the_middle_of_any_module_stmpo_loads_is_a_cancel(
        tmp_path: Path, module: str) -> None:
    """CI saw a Ctrl-C land while ``cli._cancelled`` loaded, before the loading-time
    handler was installed: Python's KeyboardInterrupt traceback. The handler now comes
    before any of stmpo's imports, and a cancel inside the very modules it needs waits
    the few ms until they have loaded. The Ctrl-C is raised at the first line of
    ``module``'s body, as the launcher (``stmpo``) imports the command line."""
    import subprocess
    import sys

    summary = tmp_path / "s.json"
    code_text = f"""
import signal, sys
sys.argv = ["stmpo", "render", "--frames", "1-8", "--summary", {str(summary)!r}]
fired = []

def at_first_line(frame, event, arg):
    if event == "line" and not fired:
        fired.append(1)
        signal.raise_signal(signal.SIGINT)
    return None

def tracer(frame, event, arg):
    name = frame.f_code.co_filename.replace("\\\\", "/")
    if frame.f_code.co_name == "<module>" and name.endswith({module!r}):
        return at_first_line
    return None

sys.settrace(tracer)
from stmpo_celery.cli import main
sys.settrace(None)
print("not cancelled", fired)
"""
    res = subprocess.run([sys.executable, "-c", code_text], capture_output=True, text=True,
                         timeout=30)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 130, res
    assert res.stdout == ("stmpo: CANCELLED by Ctrl-C (SIGINT) before the render started: "
                          "nothing was rendered\n")
    doc = json.loads(summary.read_text())
    assert doc["exit_code"] == 130 and doc["status"] == "cancelled", doc
    # the frames were not read yet: not known, and never "0 missing"
    assert doc["frames"]["requested"] is None and doc["frames"]["missing"] is None, doc


def test_a_cancel_after_the_frames_were_read_counts_them_all_missing(tmp_path: Path) -> None:
    """The summary of a cancel before the run but after ``prepare`` names the requested
    frames, all missing; before them it said ``requested: 0, missing: 0``."""
    from types import SimpleNamespace

    from stmpo_celery.cli._render_start import write_cancelled_early

    prep = SimpleNamespace(frames=[1, 2, 3, 7], run_id="r1",
                           pattern=SimpleNamespace(raw="/o/f_[####].png"))
    path = tmp_path / "s.json"
    write_cancelled_early(str(path), prep, "SIGTERM", 143, 0.0)
    frames = json.loads(path.read_text())["frames"]
    assert (frames["requested"], frames["missing"], frames["rendered"]) == (4, 4, 0)
    assert frames["requested_spec"] == frames["missing_spec"] == "1-3,7"
    write_cancelled_early(str(path), None, "SIGTERM", 143, 0.0)
    frames = json.loads(path.read_text())["frames"]
    assert frames["requested"] is None and frames["missing"] is None
