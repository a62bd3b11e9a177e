"""The Windows APIs stmpo calls, run for real under Wine (see test_wine.py for how):
Job Objects that kill a whole tree in one call, a slot's renderer job that reaches an
AfterFX whose launcher died, per-user font install and removal."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import pytest
from conftest import wait_for
from winelib import WinPython, win, wine_procs

pytestmark = [pytest.mark.wine, pytest.mark.slow, pytest.mark.timeout(400)]


def test_wine_job_object_kills_a_tree_in_one_call(winpy: WinPython) -> None:
    """A slot stand-in whose child joined the job after assignment dies with it, by
    TerminateJobObject and by closing the job's last handle (KILL_ON_JOB_CLOSE) — also a
    renderer whose launcher already died ("orphan"), which no tree walk can find on
    Windows (no reparenting: its parent pid names a dead process)."""
    driver = textwrap.dedent("""
        import json, subprocess, sys, time, psutil
        from stmpo_celery.host._platform import RunJob, slot_popen_kwargs
        CHILD = ("import subprocess, sys, time; sys.stdin.readline(); "
                 "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                 "print(p.pid, flush=True); "
                 "time.sleep(0 if sys.argv[1] == 'orphan' else 60)")
        result = {}
        for how in ("terminate", "close", "orphan"):
            job = RunJob()
            assert job.job is not None, job.problem
            c = subprocess.Popen([sys.executable, "-c", CHILD, how], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, **slot_popen_kwargs())
            job.assign(c)
            c.stdin.write("go\\n"); c.stdin.flush()
            grandchild = int(c.stdout.readline())
            if how == "orphan":
                c.wait(timeout=30)
                assert psutil.pid_exists(grandchild)
                assert not any(p.pid == grandchild
                               for p in psutil.Process().children(recursive=True))
            job.kill_all() if how == "terminate" else job.close()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (
                    psutil.pid_exists(c.pid) or psutil.pid_exists(grandchild)):
                time.sleep(0.05)
            result[how] = [psutil.pid_exists(c.pid), psutil.pid_exists(grandchild)]
            job.close()
        print(json.dumps(result))
    """)
    tag = uuid.uuid4().hex
    proc = winpy.popen(["-c", driver], winpy.env(tag))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"terminate": [False, False], "close": [False, False],
                      "orphan": [False, False]}, result
    assert wait_for(lambda: not wine_procs(tag), timeout=10)


def test_wine_slot_kills_an_orphaned_renderer(winpy: WinPython) -> None:
    """A slot's kill of its aerender also kills an AfterFX whose launcher already died:
    on Windows only the slot's renderer Job Object can still reach it."""
    driver = textwrap.dedent("""
        import json, subprocess, sys, time, psutil
        from stmpo_celery.slot import _launch
        CHILD = ("import subprocess, sys; sys.stdin.readline(); "
                 "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                 "print(p.pid, flush=True)")
        c = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        _launch.RENDERERS.get().assign(c)
        c.stdin.write("go\\n"); c.stdin.flush()
        orphan = int(c.stdout.readline())
        c.wait(timeout=30)
        before = psutil.pid_exists(orphan)
        _launch.kill_renderer()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and psutil.pid_exists(orphan):
            time.sleep(0.05)
        print(json.dumps([before, psutil.pid_exists(orphan), _launch.RENDERERS.get().problem]))
    """)
    tag = uuid.uuid4().hex
    proc = winpy.popen(["-c", driver], winpy.env(tag))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert json.loads(out.strip().splitlines()[-1]) == [True, False, None], out
    assert wait_for(lambda: not wine_procs(tag), timeout=10)


def test_wine_per_user_font_install_and_removal(winpy: WinPython, tmp_path: Path) -> None:
    """The per-user font path of job fonts: copy into %LOCALAPPDATA%'s font folder, HKCU
    registry value, AddFontResourceExW; then undone so the file can be deleted."""
    fonts = sorted(Path("/usr/share/fonts").rglob("*.ttf")) + sorted(
        Path("/usr/share/wine").rglob("*.ttf"))
    if not fonts:
        pytest.skip("no TrueType font on this machine to install")
    driver = textwrap.dedent(f"""
        import json, shutil, uuid, winreg
        from pathlib import Path
        from stmpo_celery.host import _winfonts as wf
        folder = wf.user_font_dir()
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"stmpo-test-{{uuid.uuid4().hex[:8]}}.ttf"
        shutil.copyfile({win(fonts[0])!r}, dest)
        def value():
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, wf.FONTS_KEY) as key:
                try:
                    return winreg.QueryValueEx(key, wf.value_name(dest))[0]
                except FileNotFoundError:
                    return None
        def legacy(data=None):
            with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, wf.FONTS_KEY, 0,
                                    winreg.KEY_ALL_ACCESS) as key:
                name = wf.legacy_value_name(dest)
                if data is not None:
                    winreg.SetValueEx(key, name, 0, winreg.REG_SZ, data)
                try:
                    return winreg.QueryValueEx(key, name)[0]
                except FileNotFoundError:
                    return None
        wf.register(dest)
        wf.broadcast_font_change()
        registered = value()
        legacy(str(dest))  # an earlier version's label of this very file
        wf.unregister(dest)
        legacy_gone = legacy() is None
        wf.register(dest)
        legacy("C:\\elsewhere\\other.ttc")  # a label of the same stem, another font's
        wf.unregister(dest)
        other_kept = legacy() == "C:\\elsewhere\\other.ttc"
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, wf.FONTS_KEY, 0,
                            winreg.KEY_SET_VALUE) as key:
            winreg.DeleteValue(key, wf.legacy_value_name(dest))
        dest.unlink()
        print(json.dumps([str(dest), registered, value(), dest.exists(), legacy_gone,
                          other_kept]))
    """)
    proc = winpy.popen(["-c", driver], winpy.env(uuid.uuid4().hex))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    dest, registered, after, exists, legacy_gone, other_kept = json.loads(
        out.strip().splitlines()[-1])
    assert "\\AppData\\Local\\Microsoft\\Windows\\Fonts\\stmpo-test-" in dest, dest
    assert registered == dest and after is None and not exists
    # the stem-only label of earlier versions goes with its own font, never with another's
    assert legacy_gone and other_kept


def test_wine_concurrent_reviews_lose_no_note(
        winpy: WinPython, tmp_path: Path) -> None:
    """Windows' side of the review lock: six Windows processes review one version at once
    (msvcrt locks; the lock file is kept there: deleting it let two reviewers in at once)
    while a reader keeps opening version.json for 0.3 s at a time (a `versions list`, a
    virus scanner: Windows refuses to replace a file that is open) and versions are
    listed as fast as they can be (none may read as "unreadable" while a review replaces
    the manifest); every note is kept and nothing else is left in the version folder. A
    manifest held open for longer than a replace waits gets one line and exit 3. The
    premise is checked first: a plain replace of the file fails while it is held."""
    import hashlib

    from stmpo_celery.aerender._fakeframes import frame_bytes

    vdir = tmp_path / "shot" / "v001"
    vdir.mkdir(parents=True)
    png = frame_bytes(str(vdir / "f_0001.png"), 1)
    (vdir / "f_0001.png").write_bytes(png)
    (vdir / "version.json").write_text(json.dumps({
        "status": "pending-review", "history": [],
        "frames": [{"frame": 1, "file": "f_0001.png", "size": len(png),
                    "sha256": hashlib.sha256(png).hexdigest()}]}))
    driver = textwrap.dedent(f"""
        import os, subprocess, sys, threading, time
        manifest = {win(vdir / "version.json")!r}
        with open(manifest, "rb"):  # the premise: Windows refuses to replace an open file
            open(manifest + ".x", "wb").close()
            try:
                os.replace(manifest + ".x", manifest)
                sys.exit("replaced under a reader")
            except PermissionError:
                os.unlink(manifest + ".x")
        stop = threading.Event()
        def reader():
            while not stop.is_set():
                with open(manifest, "rb"):
                    time.sleep(0.3)
                time.sleep(0.05)
        from pathlib import Path
        from stmpo_celery.farm._versions import list_versions
        listed = []
        def lister():  # what versions list says meanwhile, as fast as it can
            while not stop.is_set():
                listed.extend(v["status"] for v in list_versions(Path({win(tmp_path / "shot")!r})))
        threads = [threading.Thread(target=reader), threading.Thread(target=lister)]
        for t in threads:
            t.start()
        procs = [subprocess.Popen([sys.executable, "-m", "stmpo_celery.cli", "versions",
                                   "reject", {win(tmp_path / "shot")!r}, "v001", "--note",
                                   f"n{{i}}"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for i in range(6)]
        codes = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
        stop.set()
        for t in threads:
            t.join()
        bad = [c for c in codes if c[0] != 0] + sorted(set(listed) - {{"rejected",
                                                                      "pending-review"}})
        # held longer than a replace waits: one line and exit 3, the manifest unchanged
        with open(manifest, "rb"):
            held = subprocess.run([sys.executable, "-m", "stmpo_celery.cli", "versions",
                                   "approve", {win(tmp_path / "shot")!r}, "v001"],
                                  capture_output=True, text=True, timeout=60)
        if held.returncode != 3 or len(held.stderr.strip().splitlines()) != 1:
            bad.append(("held", held.returncode, held.stderr))
        print("ok" if not bad and listed else bad)
    """)
    proc = winpy.popen(["-c", driver], winpy.env(uuid.uuid4().hex))
    out, err = proc.communicate(timeout=200)
    assert proc.returncode == 0 and out.strip().endswith("ok"), out + err
    manifest = json.loads((vdir / "version.json").read_text())
    assert manifest["status"] == "rejected"  # the held approval changed nothing
    assert sorted(h["note"] for h in manifest["history"]) == [f"n{i}" for i in range(6)]
    assert sorted(p.name for p in vdir.iterdir()) == [".stmpo-review.lock", "f_0001.png",
                                                       "version.json"]


def test_wine_state_files_held_open_are_still_removed_and_read(
        winpy: WinPython, tmp_path: Path) -> None:
    """Windows refuses to delete or replace a file another process holds open: an
    in-flight ledger and an output lock closed while a reader holds them for 0.5 s are
    still removed once it lets go (nothing is left beside the output: a leftover ledger
    would make the next run delete these whole frames), and an output lock read while
    its run refreshes it is never taken for a dead one."""
    out = tmp_path / "out"
    out.mkdir()
    driver = textwrap.dedent(f"""
        import threading, time
        from stmpo_celery.orchestrator._outlock import acquire, locks
        from stmpo_celery.plan import OutputPattern
        from stmpo_celery.slot._ledger import Ledger
        pattern = OutputPattern({win(out / "f_[####].png")!r})
        def hold(path, seconds):
            fh = open(path, "rb")
            threading.Timer(seconds, fh.close).start()
        led = Ledger(pattern, "r1", 0, [1, 2, 3])
        led.open()
        hold(led.path, 0.5)
        led.done(1)  # a replace that waits for the reader
        hold(led.path, 0.5)
        led.close()
        lock, _ = acquire(pattern, [1, 2, 3], "r1")
        stop, seen = threading.Event(), []
        def refresh():
            while not stop.is_set():
                lock.refresh(force=True)
        t = threading.Thread(target=refresh)
        t.start()
        for _ in range(300):
            seen.extend(info.get("run") for _, info, _ in locks(lock.path.parent))
        stop.set()
        t.join()
        hold(lock.path, 0.5)
        lock.release()
        time.sleep(0.6)
        print(sorted(set(map(str, seen))))
    """)
    proc = winpy.popen(["-c", driver], winpy.env(uuid.uuid4().hex))
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, stdout + err
    assert stdout.strip().splitlines()[-1] == "['r1']", stdout + err  # always read as live
    assert not (out / ".stmpo").exists() or not list((out / ".stmpo").iterdir()), \
        list((out / ".stmpo").iterdir())


def test_wine_ctrl_break_cancels_any_command_and_runs_its_cleanup(
        winpy: WinPython, tmp_path: Path) -> None:
    """OpenJD cancels a Windows action with CTRL_BREAK: a command other than render (a
    farm submit copying a project) runs its cleanup, says so in one line and exits 143,
    under a Windows CPython (SIGBREAK raised in process: Wine cannot deliver it)."""
    marker = tmp_path / "half-copied.aep"
    driver = textwrap.dedent(f"""
        import os, signal, time
        from stmpo_celery.cli import _main

        @_main.cli.command("copying")
        def copying() -> None:
            with open({win(marker)!r}, "w") as fh:
                fh.write("partial")
            try:
                signal.raise_signal(signal.SIGBREAK)
                time.sleep(10)
            except BaseException:
                os.unlink({win(marker)!r})
                raise

        _main.main(["copying"])
    """)
    proc = winpy.popen(["-c", driver], winpy.env(uuid.uuid4().hex))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, out + err
    assert err.strip().splitlines() == ["stmpo: CANCELLED by CTRL_BREAK (SIGBREAK)"], err
    assert not marker.exists()


def test_wine_output_locks_judge_windows_processes(winpy: WinPython, tmp_path: Path) -> None:
    """The output lock's judgement of another run, with Windows processes: the lock of a
    live run refuses (named), a pid that now belongs to another process (its start time
    differs) or a process that has exited is reclaimed, ``--output-lock-wait`` takes the
    lock once its holder exits, and a guard left by a run killed inside it is taken over
    once stale."""
    out = tmp_path / "out"
    out.mkdir()
    driver = textwrap.dedent(f"""
        import json, os, subprocess, sys, time
        from stmpo_celery.broker.keys import host_name
        from stmpo_celery.errors import BadInput
        from stmpo_celery.host._proc import process_space, start_time
        from stmpo_celery.orchestrator._outlock import GUARD_STALE_S, acquire
        from stmpo_celery.plan import OutputPattern
        from stmpo_celery.slot._ledger import state_dir
        pattern = OutputPattern({win(out / "f_[####].png")!r})
        folder = state_dir(pattern)
        folder.mkdir(parents=True, exist_ok=True)
        def holder(seconds):
            p = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({{seconds}})"])
            while start_time(p.pid) is None:
                time.sleep(0.05)
            return p
        def plant(run, pid, started, frames):
            (folder / f"run-{{run}}.lock").write_text(json.dumps({{
                "run": run, "host": host_name(), "pid": pid, "space": process_space(),
                "started": started, "pattern": pattern.raw, "frames": frames,
                "time": time.time()}}))
        def take(frames, run, wait=0.0):
            t0 = time.monotonic()
            try:
                lock, _ = acquire(pattern, frames, run, wait)
            except BadInput as exc:
                return ["refused", "live0001" in exc.message, round(time.monotonic() - t0, 1)]
            lock.release()
            return ["taken", None, round(time.monotonic() - t0, 1)]
        res = {{}}
        live = holder(60)
        plant("live0001", live.pid, start_time(live.pid), "1-5")
        res["live"] = take([1, 2, 3], "me000001")
        plant("reus0002", live.pid, start_time(live.pid) - 1000.0, "11-15")
        res["reused"] = take([11, 12], "me000002")
        ending = holder(1.5)
        plant("endi0003", ending.pid, start_time(ending.pid), "21-25")
        res["wait"] = take([21], "me000003", wait=30.0)
        live.kill()
        live.wait()
        res["exited"] = take([1, 2, 3], "me000004")
        guard = folder / "guard"
        folder.mkdir(parents=True, exist_ok=True)  # the last release removed it
        guard.mkdir()
        old = time.time() - GUARD_STALE_S - 30
        os.utime(guard, (old, old))
        res["stale_guard"] = take([31], "me000005")
        from stmpo_celery.host import no_space  # Windows' own "no room" errors
        res["no_space"] = [no_space(OSError(0, "x", None, w)) for w in (39, 112, 1295, 5)]
        print(json.dumps(res))
    """)
    proc = winpy.popen(["-c", driver], winpy.env(uuid.uuid4().hex))
    stdout, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, stdout + err
    res = json.loads(stdout.strip().splitlines()[-1])
    assert res["live"][:2] == ["refused", True], res
    assert res["reused"][0] == "taken" and res["exited"][0] == "taken", res
    assert res["wait"][0] == "taken" and 0.5 <= res["wait"][2] < 20, res
    assert res["stale_guard"][0] == "taken" and res["stale_guard"][2] < 5, res
    assert res["no_space"] == [True, True, True, False], res  # access denied (5) is not
    assert not (out / ".stmpo").exists() or not list((out / ".stmpo").iterdir()), \
        list((out / ".stmpo").iterdir())
