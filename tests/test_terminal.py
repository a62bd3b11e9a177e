"""What a person at a terminal sees: real `stmpo render` runs in a pseudo-terminal.

The run's stdout and stderr are a pty, so the product takes its terminal path (the bar),
exactly as in tmux; the screen text is rebuilt from the byte stream (a ``\\r`` redraw
keeps only what follows it, escape sequences dropped).
"""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Farm, wait_for

from stmpo_celery.orchestrator._progress import Progress
from stmpo_celery.orchestrator._report import final_block, plan_lines, resume_command

pytestmark = pytest.mark.slow
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MARKER = "After Effects error"


class PtyRun:
    def __init__(self, farm: Farm, *extra: str, frames: str, concurrency: int,
                 env: dict[str, str] | None = None) -> None:
        argv = farm.argv(*extra, "--progress", "auto", frames=frames, concurrency=concurrency)
        master, slave = pty.openpty()
        os.set_blocking(master, False)
        env = dict(env or farm.env())
        env.update(COLUMNS="160", LINES="40", TERM="xterm")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                                     env=env, close_fds=True)
        os.close(slave)
        self.master = master
        self.raw = b""

    def pump(self, timeout: float = 0.1) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                while chunk := os.read(self.master, 65536):
                    self.raw += chunk
            except (BlockingIOError, OSError):
                pass

    def wait(self, timeout: float = 90) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.pump()
        code = self.proc.wait(timeout=5)
        for _ in range(5):
            self.pump(0.05)
        os.close(self.master)
        return code

    def screen(self) -> list[str]:
        text = ANSI.sub("", self.raw.decode("utf-8", errors="replace"))
        return [ln.split("\r")[-1].rstrip() for ln in text.replace("\r\n", "\n").split("\n")]


def _block(lines: list[str], head: str) -> list[str]:
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"stmpo: {head}"))
    return [ln for ln in lines[start:] if ln.strip()]


def _argv_of(resume: str) -> list[str]:
    words = shlex.split(resume)
    assert words[0] == "stmpo"
    return [sys.executable, "-m", "stmpo_celery.cli", *words[1:]]


def test_four_slot_fail_fast_prints_one_cause_log_missing_frames_and_resume(
        farm: Farm) -> None:
    farm.knobs.update(FAIL_FRAME="13", FRAME_COST="0.15", STARTUP="0.3")
    run = PtyRun(farm, "--schedule", "static", frames="1-40", concurrency=4)
    assert run.wait() == 1
    lines = run.screen()
    text = "\n".join(lines)
    block = _block(lines, "FAILED")
    assert len(block) < 8, block
    assert text.count(MARKER) == 1, text  # the root cause, once: not per stopped sibling
    assert text.count("FAILED") == 1, text
    assert block[0].startswith("stmpo: FAILED: chunk 1 (frames 11-20"), block
    log = next(ln for ln in block if ln.startswith("stmpo:   log: ")).split("log: ", 1)[1]
    assert Path(log).is_file() and MARKER in Path(log).read_text()
    summary = farm.load_summary()
    missing = next(ln for ln in block if ln.startswith("stmpo:   missing: "))
    assert missing.split("missing: ", 1)[1].split(" ")[0] == summary["frames"]["missing_spec"]
    assert any(ln.startswith("stmpo:   stopped: ") and "other chunk" in ln for ln in block), block
    resume = next(ln for ln in block if ln.startswith("stmpo:   resume: ")).split(
        "resume: ", 1)[1]
    assert "--project" in resume and "--frames 1-40" in resume
    assert not farm.leftovers()

    # the printed command really resumes: it renders only what was missing
    farm.knobs.pop("FAIL_FRAME")
    before = farm.frames_on_disk()
    res = subprocess.run(_argv_of(resume), capture_output=True, text=True, timeout=90,
                         env=farm.env(), stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    assert farm.frames_on_disk() == list(range(1, 41))
    again = farm.load_summary()["frames"]
    assert again["skipped"] == len(before) and again["rendered"] == 40 - len(before)


def test_cancel_says_cancelled_not_failed(farm: Farm) -> None:
    farm.knobs.update(FRAME_COST="0.2", STARTUP="0.2")
    run = PtyRun(farm, frames="1-200", concurrency=2)

    def rendering() -> list[int]:
        run.pump()
        return farm.frames_on_disk()

    assert wait_for(rendering, timeout=30)
    run.proc.send_signal(signal.SIGINT)
    code = run.wait()
    text = "\n".join(run.screen())
    assert code == 130, text
    assert "FAILED" not in text, text
    block = _block(run.screen(), "CANCELLED")
    assert block[0].startswith("stmpo: CANCELLED by Ctrl-C (SIGINT)"), block
    assert any("resume: stmpo render" in ln for ln in block), block
    assert not farm.leftovers()


def test_no_fail_fast_last_lines_keep_the_cause(farm: Farm) -> None:
    farm.knobs.update(FAIL_FRAME="5")
    run = PtyRun(farm, "--no-fail-fast", "--schedule", "static", frames="1-24",
                 concurrency=2)
    assert run.wait() == 1
    block = _block(run.screen(), "FAILED")
    assert MARKER in block[0] and "chunk 0" in block[0], block
    assert any(ln.startswith("stmpo:   missing: 5-12") for ln in block), block


def test_the_bar_shows_elapsed_slots_and_a_recent_eta(farm: Farm) -> None:
    farm.knobs.update(FRAME_COST="0.1", STARTUP="0.5", MISSING_FONTS="1")
    run = PtyRun(farm, "--schedule", "static", frames="1-40", concurrency=2)
    assert run.wait() == 0
    lines = run.screen()
    raw = ANSI.sub("", run.raw.decode(errors="replace"))
    bars = [b for b in raw.replace("\n", "\r").split("\r") if b.startswith("[")]
    assert any(" elapsed " in b and " s0 " in b and " s1 " in b and "/20" in b
               and "ETA " in b and "ETA --" not in b for b in bars), bars[-5:]
    plan = [ln for ln in lines if ln.startswith("stmpo: plan:")]
    assert 2 <= len(plan) <= 4, plan
    assert "missing fonts" in lines[-1] or any(
        "warning:" in ln and "missing fonts" in ln for ln in _block(lines, "OK")), lines[-6:]


# -- pure wording ----------------------------------------------------------------


class _Rec:
    def __init__(self, index: int, slot: int, reason: str = "", log: str = "") -> None:
        self.index, self.slot, self.reason, self.log = index, slot, reason, log
        self.frames, self.start, self.end = f"{index * 10 + 1}-{index * 10 + 10}", 0, 0


def test_final_block_wording() -> None:
    root = _Rec(1, 2, "aerender reported: aerender ERROR: boom", "/l/c1.log")
    kw: dict[str, Any] = dict(cancelled_by=None, reason="x", fail_fast=True, requested=40,
                              skipped=0, elapsed_s=3.0, warnings=["missing fonts"],
                              resume="stmpo render --frames 1-40")
    block = final_block(ok=False, failures=[root], stopped=[_Rec(0, 0), _Rec(2, 1), _Rec(3, 3)],
                        missing=[13, 14, 15, 30], **kw)
    assert block == [
        "FAILED: chunk 1 (frames 11-20, slot 2): aerender reported: aerender ERROR: boom",
        "  log: /l/c1.log",
        "  stopped: 3 other chunks on slots 0, 1, 3 (fail-fast)",
        "  missing: 13-15,30 (4 of 40 frame(s)); the 36 on disk are kept and running "
        "again renders only these",
        "  resume: stmpo render --frames 1-40",
        "  warning: missing fonts",
    ]
    kw["cancelled_by"] = "SIGTERM"
    cancel = final_block(ok=False, failures=[], stopped=[_Rec(0, 0)], missing=[5], **kw)
    assert cancel[0].startswith("CANCELLED by SIGTERM") and "FAILED" not in "".join(cancel)
    assert "  stopped: 1 chunk on slot 0 (cancel)" in cancel
    # no chunk failed (the broker was lost): the chunks stopped with the run, not fail-fast
    kw["cancelled_by"] = None
    lost = final_block(ok=False, failures=[], stopped=[_Rec(0, 0), _Rec(1, 1)], missing=[5],
                       **{**kw, "reason": "the broker stopped answering"})
    assert lost[:2] == ["FAILED: the broker stopped answering",
                        "  stopped: 2 chunks on slots 0, 1 (the run stopped)"], lost
    kw["warnings"] = ["WARNING:After Effects warning: Project has missing fonts"]
    ok = final_block(ok=True, failures=[], stopped=[], missing=[], **kw)
    assert ok[-1] == "  warning: After Effects warning: Project has missing fonts", ok
    # a run that was to replace the frames there names the ones it did not: with
    # --skip-existing, a file from before it would be kept (and the two flags together
    # are refused as one option given twice)
    assert resume_command(["render", "--frames=1-4", "--no-skip-existing", "--output", "a b",
                           "--task", "2/3"], skip_existing=False, missing=[2, 3]) == (
        "stmpo render --no-skip-existing --output 'a b' --frames 2-3")
    assert resume_command(["render", "--frames", "1-4"], missing=[2]) == (
        "stmpo render --frames 1-4")


def test_plan_is_three_lines_unless_verbose() -> None:
    from stmpo_celery.config._options import RenderOptions
    from stmpo_celery.host._hostplan import make_plan, other_host

    o = RenderOptions(project="p.aep", frames="1-240", output="o_[#].png")
    plan = make_plan(o, list(range(1, 241)), True, other_host(64, 256), None)
    shown, logged = plan_lines(plan, verbose=False)
    assert 2 <= len(shown) <= 4 and logged == plan.lines()
    assert sum("bound by" in ln for ln in shown) == 1
    assert not any(re.search(r"\b(ram|cpu) 0\b", ln) for ln in shown), shown
    assert plan_lines(plan, verbose=True)[0] == plan.lines()


def test_eta_comes_from_the_recent_rate() -> None:
    class Sink:
        def directive(self, *_a: Any) -> None: ...

    p = Progress(Sink(), 100, tty=False)  # type: ignore[arg-type]
    import stmpo_celery.orchestrator._progress as mod

    t = [1000.0]
    real = mod.time.monotonic
    mod.time.monotonic = lambda: t[0]
    try:
        p.t0 = 960.0  # 40 s of launching before the first frame
        for i in range(1, 21):
            t[0] = 1000.0 + i * 0.5  # then 2 frames/s
            p.set_done(i)
        assert p.rate() == pytest.approx(2.0, rel=0.1)
        eta = p.eta()
        assert eta is not None and 35 <= eta <= 45  # 80 frames at 2 f/s, not at 20/50 s
    finally:
        mod.time.monotonic = real


def test_the_resume_command_never_shows_a_password() -> None:
    from stmpo_celery.orchestrator._report import resume_command

    line = resume_command(["render", "--broker", "redis://:Secret1@h:6379/0",
                           "--flower-auth", "wr:Secret2", "--flower-auth=wr:Secret3",
                           "--frames", "1-10"])
    assert "Secret" not in line and "--frames 1-10" in line
    assert "$STMPO_BROKER_URL" in line and "$STMPO_FLOWER_AUTH" in line  # how to give them
    plain = resume_command(["render", "--broker", "redis://h:6379/0"])
    assert "--broker redis://h:6379/0" in plain and "$" not in plain


def test_the_last_bar_says_how_the_run_ended_not_an_eta() -> None:
    class Sink:
        def __init__(self) -> None:
            self.out: list[str] = []
            self._echo = None
            self.on_clear = None

        def directive(self, *_a: Any) -> None: ...

        def raw(self, text: str) -> None:
            self.out.append(text)

    sink = Sink()
    p = Progress(sink, 100, tty=True)  # type: ignore[arg-type]
    for i in range(1, 11):
        p.set_done(i)
    p.slots = {0: "3/50", 1: "7/50"}
    p.close("failed")
    last = [t for t in sink.out if t.startswith("\r")][-1]
    assert "10/100" in last and "failed" in last, last
    assert "ETA" not in last and "s0 " not in last, last  # nothing is coming; slots are gone
