"""Fault injection with real processes: crashes, hangs, dead slots, dead Redis, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import redis
from conftest import SYSTEM_REDIS, Farm, pings, stmpo_keys, tagged, wait_for

pytestmark = pytest.mark.slow


def _slot_pids(farm: Farm) -> list[psutil.Process]:
    out = []
    for p in tagged(farm.tag):
        try:
            if p.name().startswith("stmpo-slot"):
                out.append(p)
        except psutil.Error:
            pass
    return out


def test_crash_once_then_retry_renders_only_missing_frames(farm: Farm) -> None:
    once = farm.tmp / "once"
    once.mkdir()
    farm.knobs.update(CRASH_FRAME="6", ONCE_DIR=str(once))
    res = farm.run(frames="1-10", concurrency=1)
    assert res.returncode == 0, res.stdout + res.stderr
    assert farm.frames_on_disk() == list(range(1, 11))
    counts = Counter(farm.journal_frames())
    assert all(counts[f] == 1 for f in range(1, 6)), counts  # never rendered twice
    assert counts[6] == 1 and farm.launches() == 2
    assert "retrying" in res.stdout
    s = farm.load_summary()
    assert s["exit_code"] == 0 and s["chunks"][0]["attempts"] == 1
    # the summary keeps the first attempt: its frames, its log and why it was retried
    first = s["chunks"][0]["history"]
    assert len(first) == 1 and first[0]["frames"] == "1-10" and first[0]["attempt"] == 0, first
    assert first[0]["log"] and os.path.isfile(first[0]["log"]) and first[0]["reason"], first
    assert s["chunks"][0]["frames"] == "6-10" and s["chunks"][0]["log"] != first[0]["log"]
    assert os.path.isfile(s["chunks"][0]["log"])  # the retry's own launch log
    assert not farm.leftovers()


def test_crash_every_time_fails_after_retries(farm: Farm) -> None:
    farm.knobs.update(CRASH_EXIT="7", CRASH_FRAME="3")
    res = farm.run("--retries", "2", frames="1-6", concurrency=1)
    assert res.returncode == 1
    assert farm.launches() == 3
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("stmpo: FAILED")][-1]
    assert "exited with code 7" in line and "after 2 retries" in line
    assert not farm.leftovers()


def _slot_hit_mid_render(farm: Farm, hit: Callable[[psutil.Process], None], *extra: str,
                         frames: str, after: int) -> tuple[psutil.Process, str]:
    """A 2-slot render whose first slot gets ``hit`` once ``after`` frames are done; the
    run must still end with exit 0. Returns the slot and the run's output."""
    proc = farm.start(*extra, frames=frames, concurrency=2)
    try:
        assert wait_for(lambda: len(farm.journal_frames()) >= after, timeout=30)
        victim = _slot_pids(farm)[0]
        hit(victim)
        out, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 0, out + err
    return victim, out


def test_slot_killed_mid_chunk_is_replaced_and_run_completes(farm: Farm) -> None:
    farm.knobs.update(FRAME_COST="0.15")
    _, out = _slot_hit_mid_render(farm, psutil.Process.kill, frames="1-20", after=3)
    assert "died" in out and "re-enqueued" in out
    assert farm.frames_on_disk() == list(range(1, 21))
    assert not farm.leftovers()


def test_a_stopped_slot_is_killed_and_replaced_and_the_run_completes(farm: Farm) -> None:
    """A slot that stops (SIGSTOP here; a file system hung under it in production) cannot
    report itself: the orchestrator sees its state go silent, kills it, and its frames
    are rendered by the replacement (the run never hangs on it)."""
    farm.knobs.update(FRAME_COST="0.3")
    victim, out = _slot_hit_mid_render(farm, psutil.Process.suspend, "--stall-timeout", "8",
                                       "--schedule", "static", frames="1-24", after=2)
    assert f"(pid {victim.pid}) has said nothing for" in out, out
    assert farm.frames_on_disk() == list(range(1, 25)) and not farm.load_summary()[
        "frames"]["missing"]
    assert not farm.leftovers()


def test_a_slot_dying_past_its_retries_fails_naming_the_chunk_log(farm: Farm) -> None:
    farm.knobs.update(FRAME_COST="0.15")
    proc = farm.start("--retries", "0", frames="1-20", concurrency=1)
    try:
        assert wait_for(lambda: len(farm.journal_frames()) >= 2, timeout=30)
        _slot_pids(farm)[0].kill()
        out, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 1, out + err
    assert "died" in out
    log = next(ln for ln in out.splitlines() if ln.startswith("stmpo:   log: "))
    assert Path(log.split("log: ", 1)[1]).is_file()  # the renderer's log up to the death
    assert not farm.leftovers()


def test_hang_is_detected_and_retried(farm: Farm) -> None:
    once = farm.tmp / "once"
    once.mkdir()
    farm.knobs.update(HANG_FRAME="4", ONCE_DIR=str(once))
    res = farm.run("--stall-timeout", "1.5", frames="1-8", concurrency=1)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "stalled" in res.stdout
    assert farm.frames_on_disk() == list(range(1, 9))
    assert not farm.leftovers()


def test_slow_but_busy_frame_is_not_killed(farm: Farm) -> None:
    farm.knobs.update(BUSY_FRAME="3:4")
    res = farm.run("--stall-timeout", "1.5", "--retries", "0", frames="1-5", concurrency=1)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "stalled" not in res.stdout
    assert farm.launches() == 1
    assert not farm.leftovers()


def test_chunk_timeout_is_a_hard_cap(farm: Farm) -> None:
    farm.knobs.update(BUSY_FRAME="2:30")
    res = farm.run("--chunk-timeout", "2", "--retries", "0", frames="1-3", concurrency=1)
    assert res.returncode == 1
    assert "--chunk-timeout" in res.stdout
    assert not farm.leftovers()



def test_renderer_ignoring_sigterm_is_still_gone_after_cancel(farm: Farm) -> None:
    farm.knobs.update(IGNORE_SIGTERM="1")
    proc = farm.start_rendering(frame_cost="0.3")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 143
    assert not farm.leftovers(timeout=3)


def test_orchestrator_crash_still_cleans_up(farm: Farm, ext_redis: redis.Redis) -> None:
    before = stmpo_keys(ext_redis)
    farm.knobs.update(FRAME_COST="0.1")
    env = farm.env(STMPO_INJECT_FAULT="orchestrator-crash")
    res = farm.run("--broker", SYSTEM_REDIS, frames="1-20", env=env)
    assert res.returncode == 1
    assert "orchestrator error" in res.stdout and "Traceback" not in res.stdout + res.stderr
    assert not farm.leftovers()
    assert stmpo_keys(ext_redis) - before == set()


def test_missing_frame_after_exit_0_is_caught(farm: Farm) -> None:
    farm.knobs.update(NO_WRITE_FRAME="4")
    res = farm.run("--retries", "0", frames="1-6", concurrency=1)
    assert res.returncode == 1
    assert "missing on disk" in res.stdout
    s = farm.load_summary()
    assert s["frames"]["missing_spec"] == "4"
    # Deadline's monitor counted only frames whole on disk: never 100%, never "6 of 6"
    progress = [float(ln.split()[1]) for ln in res.stdout.splitlines()
                if ln.startswith("openjd_progress: ")]
    assert progress and max(progress) == pytest.approx(500 / 6, abs=0.05), progress
    assert "Rendered 6 of 6" not in res.stdout and "Rendered 5 of 6" in res.stdout


def test_empty_frame_is_not_a_frame_and_is_rerendered(farm: Farm) -> None:
    once = farm.tmp / "once"
    once.mkdir()
    farm.knobs.update(EMPTY_FRAME="3")
    res = farm.run("--retries", "1", frames="1-5", concurrency=1)
    # the simulator writes frame 3 empty every time: retried once, then reported missing
    assert res.returncode == 1
    assert Counter(farm.journal_frames())[3] >= 1
    assert farm.load_summary()["frames"]["missing_spec"] == "3"


def test_spawn_delay_staggers_only_first_launches(farm: Farm) -> None:
    farm.knobs.update(STARTUP="0.1", FRAME_COST="0.01")
    res = farm.run("--spawn-delay", "0.8", "--schedule", "fixed", "--chunk-size", "2",
                   frames="1-12", concurrency=2)
    assert res.returncode == 0, res.stdout + res.stderr
    chunks = [c for c in farm.load_summary()["chunks"] if c["status"] == "done"]
    first = {slot: min(c["t0"] for c in chunks if c["slot"] == slot) for slot in (0, 1)}
    # the first launches stand one delay apart, whichever slot came up first
    early, late = sorted(first, key=first.__getitem__)
    assert first[late] - first[early] >= 0.65  # 0.8 s apart, less scheduling noise
    later = sorted(c["t0"] for c in chunks if c["slot"] == early)[1:]
    # the first slot is never delayed again: gated, its next launch would wait a delay
    # after the other slot's first launch (what it may take to start is load, not gating)
    assert later and later[0] - first[late] < 0.65


def test_a_slot_killed_while_waiting_its_spawn_delay_has_its_chunk_rendered(
        farm: Farm) -> None:
    farm.knobs.update(STARTUP="0.1", FRAME_COST="0.05")
    proc = farm.start("--spawn-delay", "3", frames="1-20", concurrency=2)
    try:
        def waiting_slot() -> psutil.Process | None:
            slots = _slot_pids(farm)
            busy = [s for s in slots if s.children()]
            idle = [s for s in slots if not s.children()]
            return idle[0] if len(slots) == 2 and len(busy) == 1 and idle else None

        slot = wait_for(waiting_slot, timeout=30)
        assert slot, "no slot was ever seen waiting at the gate"
        time.sleep(0.3)  # its chunk is claimed: it waits for its turn to launch
        slot.kill()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out + err
    assert "died" in out and "re-enqueued" in out, out
    assert farm.frames_on_disk() == list(range(1, 21))
    assert not farm.leftovers()


def test_password_never_appears_in_logs_or_summary(farm: Farm, tmp_path: Path) -> None:
    from stmpo_celery.broker._redis import find_redis_server

    server = find_redis_server()
    assert server
    sock = tmp_path / "r.sock"
    srv = subprocess.Popen([server, "--port", "0", "--unixsocket", str(sock), "--requirepass",
                            "Pw9SecretZ", "--save", ""], stdout=subprocess.DEVNULL)
    try:
        import redis as r

        wait_for(lambda: pings(r.Redis(unix_socket_path=str(sock), password="Pw9SecretZ")),
                 timeout=5)
        res = farm.run("--broker", f"redis+socket://:Pw9SecretZ@{sock}", frames="1-6")
        assert res.returncode == 0, res.stdout + res.stderr
        texts = [res.stdout, res.stderr, farm.summary.read_text()]
        texts += [p.read_text(errors="replace") for p in farm.logs.iterdir()]
        assert all("Pw9SecretZ" not in t for t in texts)
        assert ":***@" in farm.summary.read_text()
    finally:
        srv.kill()
        srv.wait()


def test_hostile_names_pass_through_intact(farm: Farm, tmp_path: Path) -> None:
    weird = tmp_path / "dir with spaces; $(touch pwned) 'q' \"dq\" é"
    weird.mkdir()
    project = weird / "shot, v2 ü.aep"
    project.write_text("aep")
    comp = "Comp \"final\"; $(rm -rf /) `x` ü\\n"
    dump = tmp_path / "argv.json"
    env = farm.env(STMPO_FAKE_ARGV_DUMP=str(dump))
    argv = farm.argv(frames="1-3", concurrency=1, comp=comp,
                     output=str(weird / "out, (1) ü" / "f_[####].png"))
    argv[argv.index("--project") + 1] = str(project)
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    import json

    got = json.loads(dump.read_text())
    assert got[got.index("-comp") + 1] == comp
    assert got[got.index("-project") + 1] == str(project)
    assert not (Path.cwd() / "pwned").exists() and not (weird / "pwned").exists()
    assert len(list((weird / "out, (1) ü").glob("f_*.png"))) == 3



def test_an_idle_slot_killed_again_and_again_is_replaced_and_the_run_goes_on(
        farm: Farm, ext_redis: redis.Redis) -> None:
    """Only a slot that never got as far as taking tasks counts toward the start-up limit
    (a slot dying twice so stops the run, exit 3): a replacement that started and had
    nothing to do, killed again and again, is replaced again and again."""
    import json

    farm.knobs.update(FRAME_COST="0.05", HEAVY="13-24x25")  # the second block: ~15 s
    sub = ext_redis.pubsub(ignore_subscribe_messages=True)
    sub.psubscribe("stmpo:*:x:events")
    proc = farm.start("--broker", SYSTEM_REDIS, "--schedule", "static",
                      frames="1-24", concurrency=2)
    run: str | None = None

    def next_event(kind: str, **match: object) -> dict[str, object]:
        nonlocal run
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            msg = sub.get_message(timeout=0.2)
            if msg is None:
                continue
            ev = json.loads(msg["data"])
            channel = msg["channel"].decode() if isinstance(msg["channel"], bytes) else str(
                msg["channel"])
            if run is None and ev["t"] == "slot-ready" and tagged(farm.tag) and any(
                    p.pid == ev["pid"] for p in tagged(farm.tag)):
                run = channel  # this test's run (other runs may share the server)
            if channel == run and ev["t"] == kind and all(ev.get(k) == v
                                                          for k, v in match.items()):
                return dict(ev)
        pytest.fail(f"no {kind} {match} within 20 s")

    try:
        done = next_event("chunk-done")  # one slot finished its block: idle from now on
        slot = int(str(done["slot"]))
        for p in _slot_pids(farm):
            if p.name() == f"stmpo-slot{slot}":
                p.kill()
        for _ in range(2):  # each replacement starts, has nothing to do, and is killed
            ready = next_event("slot-ready", slot=slot)
            psutil.Process(int(str(ready["pid"]))).kill()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        sub.close()
    assert proc.returncode == 0, out + err
    assert out.count(f"slot {slot} (pid") == 3 and "while idle; replaced" in out
    assert farm.frames_on_disk() == list(range(1, 25))
    assert not farm.leftovers()
