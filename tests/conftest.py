"""Shared fixtures: real `stmpo render` runs with the aerender simulator.

Every process a test starts carries ``STMPO_TEST_TAG=<uuid>`` in its environment
(children inherit it: slots, aerender, AfterFX, redis-server), so a test can prove
that nothing of its run is left, however the run ended.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from stmpo_celery.broker._redis import find_redis_server

BIN = Path(sys.executable).parent
FAKE = str(BIN / "stmpo-fake-aerender")
#: The system Redis (the external-broker case): a database of its own for each parallel
#: test worker (gw0 -> 0, gw1 -> 1), so no worker's "no key left" check sees another's.
SYSTEM_DB = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
SYSTEM_REDIS = f"redis://127.0.0.1:6379/{SYSTEM_DB}"

#: fixtures of the Wine lane (winpy, wfarm) and of the farm (farm_redis, rig)
pytest_plugins = ["winelib", "farmlib"]


def pytest_configure(config: pytest.Config) -> None:
    """Compile the package's bytecode once (the controller, before any worker starts), as
    a wheel install does: with ``PYTHONDONTWRITEBYTECODE`` set, an editable checkout
    would compile every module again in each of the thousands of processes the tests
    start (orchestrators, spawned slots, simulators)."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller did it
        return
    import compileall

    import stmpo_celery

    compileall.compile_dir(str(Path(stmpo_celery.__file__).parent), quiet=1)


def tagged(tag: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("STMPO_TEST_TAG") == tag and proc.status() != "zombie":
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def orphan_redis(temp: str | None = None) -> list[psutil.Process]:
    """Embedded redis-servers whose orchestrator is gone (redis rewrites its environ,
    so the test tag cannot find it: look for a run's socket or working folder — a TCP
    server's command line names only its port — and a dead parent), of runs whose folder
    is in ``temp`` (the temp dir the renders used: a test with its own leaves its orphans
    to itself)."""
    mark = os.path.join(temp or tempfile.gettempdir(), "stmpo-")
    out = []
    for p in psutil.process_iter():
        try:
            cmd = " ".join(p.cmdline())
            if "redis-server" not in cmd:
                continue
            ours = mark in cmd or mark in p.cwd()
            if ours and (p.ppid() in (0, 1) or not psutil.pid_exists(p.ppid())):
                out.append(p)
        except psutil.Error:
            continue
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pings(client: object) -> bool:
    """Whether a Redis client's server answers (any failure: no)."""
    try:
        return bool(client.ping())  # type: ignore[attr-defined]
    except Exception:
        return False


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, step: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def kill_tagged(tag: str) -> None:
    for p in tagged(tag):
        try:
            p.kill()
        except psutil.Error:
            pass


def system_redis() -> redis.Redis | None:
    client = redis.Redis.from_url(SYSTEM_REDIS, socket_connect_timeout=1, decode_responses=True)
    try:
        client.ping()
    except redis.RedisError:
        return None
    return client


def stmpo_keys(client: redis.Redis) -> set[str]:
    return set(client.scan_iter(match="stmpo:*", count=1000)) | {
        k for k in client.scan_iter(match="*kombu*", count=1000)}


@dataclass
class Farm:
    """A temp project, an output folder and helpers to run `stmpo` against them."""

    tmp: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)
    knobs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.project = self.tmp / "shot.aep"
        self.project.write_text(f"aep {self.tag}")  # unique: no history shared by tests
        self.out = self.tmp / "renders"
        self.pattern = str(self.out / "shot_[####].png")
        self.journal = self.tmp / "journal.txt"
        self.summary = self.tmp / "summary.json"
        self.logs = self.tmp / "logs"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("STMPO_BROKER_URL", None)
        env.update(STMPO_TEST_TAG=self.tag, STMPO_FAKE_STARTUP="0.2",
                   STMPO_FAKE_FRAME_COST="0.01", STMPO_FAKE_JOURNAL=str(self.journal),
                   STMPO_HISTORY_DIR=str(self.tmp / "history"),
                   PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
        env.update({f"STMPO_FAKE_{k}": v for k, v in self.knobs.items()})
        env.update(extra)
        return env

    def argv(self, *extra: str, frames: str = "1-24", comp: str | None = "Main Comp",
             output: str | None = None, concurrency: int | None = 2) -> list[str]:
        args = [sys.executable, "-m", "stmpo_celery.cli", "render", "--project",
                str(self.project), "--frames", frames, "--output", output or self.pattern,
                "--aerender", FAKE, "--summary", str(self.summary), "--log-dir", str(self.logs),
                "--progress", "openjd"]
        if comp is not None:
            args += ["--comp", comp]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        # an option is given once (stmpo refuses it twice): the caller's own replaces ours
        given = {a.partition("=")[0] for a in extra if a.startswith("--")}
        head, pairs = args[:4], args[4:]
        for i in range(0, len(pairs), 2):
            if pairs[i] not in given:
                head += pairs[i:i + 2]
        return head + list(extra)

    def run(self, *extra: str, timeout: float = 90, env: dict[str, str] | None = None,
            **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*extra, **kw), capture_output=True, text=True,
                              timeout=timeout, env=env or self.env(), stdin=subprocess.DEVNULL)

    def start(self, *extra: str, env: dict[str, str] | None = None,
              **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*extra, **kw), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env or self.env(),
                                stdin=subprocess.DEVNULL)

    def start_rendering(self, *extra: str, frame_cost: str, frames: str = "1-40",
                        concurrency: int = 2, env: dict[str, str] | None = None,
                        ) -> subprocess.Popen[str]:
        """A render started and caught rendering: its first frame is done."""
        self.knobs.update(FRAME_COST=frame_cost)
        proc = self.start(*extra, frames=frames, concurrency=concurrency, env=env)
        if not wait_for(lambda: self.journal_frames(), timeout=30):
            proc.kill()
            proc.communicate()
            pytest.fail("the render never started")
        return proc

    def frames_on_disk(self) -> list[int]:
        if not self.out.exists():
            return []
        return sorted(int(p.stem.split("_")[-1]) for p in self.out.glob("shot_*.png")
                      if p.stat().st_size > 0)

    def journal_frames(self) -> list[int]:
        if not self.journal.exists():
            return []
        return [int(line.split()[1]) for line in self.journal.read_text().splitlines()
                if line.startswith("frame ")]

    def launches(self) -> int:
        if not self.journal.exists():
            return 0
        return sum(1 for line in self.journal.read_text().splitlines()
                   if line.startswith("launch "))

    def load_summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.summary.read_text())
        return data

    def leftovers(self, timeout: float = 5.0) -> list[psutil.Process]:
        """Processes of this run still alive after ``timeout`` (should be none)."""
        temp = self.env().get("TMPDIR")
        gone = wait_for(lambda: not tagged(self.tag) and not orphan_redis(temp),
                        timeout=timeout)
        return [] if gone else tagged(self.tag) + orphan_redis(temp)


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    f = Farm(tmp_path)
    try:
        yield f
    finally:
        kill_tagged(f.tag)


@pytest.fixture
def ext_redis() -> redis.Redis:
    client = system_redis()
    if client is None:
        pytest.skip("no Redis on 127.0.0.1:6379 for the external-broker case")
    return client


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME, with no session variable of Deadline, OpenJD or stmpo fonts."""
    from fontlib import SESSION_VARS

    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for name in SESSION_VARS:
        monkeypatch.delenv(name, raising=False)
    return h


class PrivateRedis:
    """A redis-server of the test's own on a TCP port: an 'external' broker no other
    test shares (its keys and registry are this test's alone)."""

    def __init__(self, password: str | None = None) -> None:
        server = find_redis_server()
        assert server
        self.port = free_port()
        self.password = password
        args = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no"]
        if password:
            args += ["--requirepass", password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port, password=password, decode_responses=True)
        assert wait_for(self._pings, timeout=5)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _pings(self) -> bool:
        return pings(self.client)

    def all_keys(self) -> set[str]:
        return set(self.client.scan_iter(match="*", count=1000))

    def stop(self) -> None:
        with_cont = self.proc.poll() is None
        if with_cont:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    r = PrivateRedis()
    try:
        yield r
    finally:
        r.stop()
