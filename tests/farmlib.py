"""The farm on one machine for the tests: its Redis (an embedded redis-server), real
`stmpo farm worker` processes, submissions of the shipped job bundle, and Flower's view
of it (see test_farm.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from conftest import BIN, FAKE, kill_tagged, tagged, wait_for

from stmpo_celery.broker._redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "openjd_bundle"


@pytest.fixture(scope="module")
def farm_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    run_dir = tmp_path_factory.mktemp("farm-redis")
    os.chmod(run_dir, 0o700)
    server = EmbeddedRedis(run_dir)
    server.start()
    server.wait_ready()
    try:
        yield server.url.url
    finally:
        server.stop()


class Rig:
    """A farm on this machine: its Redis, job folder, project, workers."""

    def __init__(self, tmp: Path, url: str) -> None:
        self.tmp, self.url = tmp, url
        self.tag = uuid.uuid4().hex
        self.project = tmp / "proj" / "shot 1.aep"
        self.project.parent.mkdir(parents=True)
        self.project.write_text("original project\n")
        self.shot = tmp / "shots" / "sh010"
        self.temp = tmp / "temp"  #: the workers' TMPDIR (their OpenJD session folders)
        self.temp.mkdir()
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.client = redis.Redis.from_url(url.replace("redis+socket://", "unix://"),
                                           decode_responses=True)
        self.client.flushdb()

    def env(self, **fake: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("STMPO_") and k != "AERENDER_PATH"}
        env.update(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                   STMPO_TEST_TAG=self.tag, STMPO_FARM_URL=self.url,
                   STMPO_FARM_DIR=str(self.tmp / "farm"), STMPO_HOST_DIR=str(self.tmp / "host"),
                   STMPO_FAKE_STARTUP="0.1", STMPO_FAKE_FRAME_COST="0.02",
                   STMPO_FAKE_ARGV_DUMP=str(self.tmp / "argv.json"),
                   TMPDIR=str(self.temp))
        env.update({f"STMPO_FAKE_{k}": v for k, v in fake.items()})
        return env

    def stmpo(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "stmpo"), *args], capture_output=True, text=True,
                              env=self.env(), timeout=timeout, stdin=subprocess.DEVNULL,
                              cwd=self.tmp)

    def start_worker(self, name: str, **fake: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([str(BIN / "stmpo"), "farm", "worker", "--name", name],
                                env=self.env(**fake), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=self.tmp)
        self.workers[name] = proc
        return proc

    def wait_workers(self) -> None:
        want = {f"stmpo:farm:x:worker:{n}@" for n in self.workers if n != "flower"}
        assert wait_for(lambda: all(any(str(k).startswith(w) for k in self.client.keys(
            "stmpo:farm:x:worker:*")) for w in want), timeout=30), self.logs()
        time.sleep(1.0)  # consuming: the worker loop is up after its first heartbeat

    def submit(self, frames: str = "1-8", per_task: int = 2, publish: bool = True,
               extra: tuple[str, ...] = (), tasks: int | None = None) -> str:
        """Submit the job bundle, ``per_task`` frames a task — or, with ``tasks``, the big
        bundle (any number of frames a task) cut into that many tasks."""
        cut = ([str(BUNDLE / "big"), "-p", f"TaskCount={tasks}"] if tasks else
               [str(BUNDLE), "-p", f"FramesPerTask={per_task}"])
        args = ["farm", "submit", *cut, "-p", f"ProjectFile={self.project}",
                "-p", "RenderBy=comp", "-p", "Comp=Main Comp", "-p", f"Frames={frames}",
                "-p", f"AerenderPath={FAKE}",
                "-p", "Concurrency=1", "-p", "SkipExisting=OFF", "--json", *extra]
        if publish:
            args += ["--publish", str(self.shot)]
        else:
            args += ["-p", f"OutputDir={self.tmp / 'out'}"]
        res = self.stmpo(*args)
        assert res.returncode == 0, res.stderr
        return str(json.loads(res.stdout)["job"])

    def wait(self, job: str, timeout: float = 90) -> int:
        return self.stmpo("farm", "wait", job, "--timeout", str(timeout),
                          timeout=timeout + 30).returncode

    def wait_rendering(self, job: str) -> None:
        """Until a task of ``job`` is running and has rendered something."""
        assert wait_for(lambda: any(t["state"] == "running" and t["progress"] > 0
                                    for t in self.job(job)["tasks"]), timeout=40, step=0.2), \
            self.logs()

    def job(self, job: str) -> dict[str, Any]:
        res = self.stmpo("farm", "jobs", "--json")
        assert res.returncode == 0, res.stderr
        return next(j for j in json.loads(res.stdout) if j["id"] == job)

    def renders(self) -> list[psutil.Process]:
        """Processes below the workers other than their guards: actions, renders."""
        out = []
        for name, w in self.workers.items():
            if name == "flower":
                continue
            try:
                kids = psutil.Process(w.pid).children(recursive=True)
            except psutil.Error:
                continue
            out += [p for p in kids if "_guard" not in " ".join(_cmd(p))]
        return out

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n" + (self.tmp / f"{n}.log").read_text(errors="replace")[-3000:]
                         for n in self.workers if (self.tmp / f"{n}.log").exists())

    def stop(self) -> None:
        for w in self.workers.values():
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in self.workers.values():
            try:
                w.wait(timeout=20)
            except subprocess.TimeoutExpired:
                w.kill()


def _cmd(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def flower_tasks(port: int, job: str) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/tasks", timeout=5) as r:
            tasks = json.loads(r.read())
    except OSError:
        return []
    found = [t for t in tasks.values() if job in str(t.get("name"))]
    return found if len(found) == 4 and all(t.get("state") == "SUCCESS" for t in found) else []


def flower_raw(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/tasks", timeout=5) as r:
            return json.dumps({k: {f: v.get(f) for f in ("name", "state", "worker")}
                               for k, v in json.loads(r.read()).items()})
    except OSError as exc:
        return repr(exc)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def rig(tmp_path: Path, farm_redis: str) -> Iterator[Rig]:
    r = Rig(tmp_path, farm_redis)
    try:
        yield r
    finally:
        r.stop()
        left = wait_for(lambda: not tagged(r.tag), timeout=15)
        kill_tagged(r.tag)
        assert left, "processes of the farm were left running"
