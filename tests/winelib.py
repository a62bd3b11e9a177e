"""The Wine lane's harness: a Windows CPython under Wine with this checkout installed
(``winpy``), a render folder driven through it (``wfarm``), and the Windows processes of
one test. A pytest plugin of conftest.py (its fixtures reach every module); used by
test_wine.py (renders) and test_wine_os.py (Windows APIs)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from conftest import SYSTEM_REDIS, system_redis, wait_for

REPO = Path(__file__).resolve().parents[1]
WINE_ROOT = Path(os.environ.get("WINE_ROOT", "/var/tmp/stmpo-wine"))
PYDIR = WINE_ROOT / "py311"
REDIS_URL = SYSTEM_REDIS


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


@pytest.fixture(scope="session")
def winpy(tmp_path_factory: pytest.TempPathFactory) -> WinPython:
    """The Windows Python with this checkout installed (once for the lane: parallel test
    workers share the first one's install, under a lock)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the base all workers share
    with open(root / "winpy.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / "winpy-site"
        if (done / "installed").is_file():
            return WinPython(Path(done.joinpath("installed").read_text()))
        py = _install(tmp_path_factory)
        done.mkdir(exist_ok=True)
        done.joinpath("installed").write_text(str(py.target))
        return py


def _install(tmp_path_factory: pytest.TempPathFactory) -> WinPython:
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
