"""Flower for a run: real `stmpo render --flower` runs, read through Flower's HTTP API."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from browserlib import screenshot
from conftest import Farm, free_port, wait_for

from stmpo_celery.broker import keys
from stmpo_celery.errors import BadInput
from stmpo_celery.monitor._flowerctl import check_bind, check_url_prefix, parse_bind

pytestmark = pytest.mark.slow
AUTH = "u:p"
SLOW = {"STARTUP": "0.3", "FRAME_COST": "0.2"}  # chunks of 4 frames run ~1.1 s


def api(port: int, path: str, auth: str | None = AUTH) -> Any:
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if (
        auth) else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    with urllib.request.urlopen(req, timeout=3) as resp:
        body = resp.read()
    return json.loads(body) if path.startswith(("/api", "/workers")) else body.decode()


def try_api(port: int, path: str) -> Any:
    try:
        return api(port, path)
    except (OSError, ValueError, urllib.error.URLError):
        return None


class Lines:
    """Collect a process's stdout lines in a thread (the run id, Flower's URL)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout
        self.t = threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")),
                                  daemon=True)
        self.t.start()

    def find(self, text: str) -> str | None:
        return next((ln for ln in list(self.lines) if text in ln), None)


def chunk_tasks(port: int) -> list[dict[str, Any]]:
    tasks = try_api(port, "/api/tasks") or {}
    return [t for t in tasks.values() if t.get("name") == "stmpo.render_chunk"]


def start_with_flower(farm: Farm, port: int, *extra: str, frames: str = "1-32",
                      auth: str | None = AUTH) -> tuple[subprocess.Popen[str], Lines]:
    farm.knobs.update(SLOW)
    args = ["--flower", f"127.0.0.1:{port}", "--schedule", "fixed", "--chunk-size", "4",
            *(["--flower-auth", auth] if auth else []), *extra]
    proc = farm.start(*args, frames=frames, concurrency=2)
    out = Lines(proc)
    assert wait_for(lambda: out.find("Flower for run"), timeout=20), out.lines
    return proc, out


def test_bind_rules() -> None:
    assert parse_bind("5555") == ("127.0.0.1", 5555)
    assert parse_bind("0.0.0.0:5555") == ("0.0.0.0", 5555)
    assert parse_bind("[::1]:5555") == ("::1", 5555)
    check_bind("127.0.0.1:5555", None)
    check_bind("localhost:5555", None)
    check_bind("0.0.0.0:5555", "user:secret")
    assert check_url_prefix("/stmpo/flower/") == "stmpo/flower"
    assert check_url_prefix("/") is None
    with pytest.raises(BadInput):
        check_url_prefix("a b")
    for bind, auth in [("0.0.0.0:5555", None), ("10.1.2.3:80", None), ("render01:5555", None),
                       ("x:notaport", None), ("0", None), ("127.0.0.1:5555", "nopassword"),
                       ("127.0.0.1:5555", "u: p")]:
        with pytest.raises(BadInput):
            check_bind(bind, auth)


def test_open_bind_without_auth_is_refused_before_anything_starts(farm: Farm) -> None:
    env = farm.env()
    env.pop("STMPO_FLOWER_AUTH", None)
    res = farm.run("--flower", f"0.0.0.0:{free_port()}", env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "--flower-auth" in err[0], res.stderr
    assert farm.launches() == 0 and not farm.frames_on_disk()


def test_flower_shows_slots_live_progress_and_results(farm: Farm) -> None:
    port = free_port()
    proc, out = start_with_flower(farm, port)
    line = out.find("Flower for run") or ""
    run_id = line.split("Flower for run ")[1].split(":")[0]
    assert f"http://127.0.0.1:{port}/" in line and "u:p" not in line
    with pytest.raises(urllib.error.HTTPError) as denied:
        api(port, "/api/tasks", auth=None)
    assert denied.value.code == 401
    with pytest.raises(urllib.error.HTTPError):
        api(port, "/api/tasks", auth="u:wrong")

    seen: dict[str, Any] = {}

    def observe() -> bool:
        workers = try_api(port, "/workers?json=1") or {"data": []}
        names = {w["hostname"] for w in workers["data"] if w.get("status")}
        if names >= {keys.node_name(0, run_id), keys.node_name(1, run_id)}:
            seen["workers"] = names
        for t in chunk_tasks(port):
            if t["state"] in ("STARTED", "PROGRESS") and t.get("worker"):
                seen.setdefault("running", t)
            if t["state"] == "PROGRESS" and "/4 frames" in (t.get("result") or ""):
                seen.setdefault("progress", t)
            if t["state"] == "SUCCESS":
                seen.setdefault("done", t)
        queues = (try_api(port, "/api/queues/length") or {}).get("active_queues", [])
        if any(q["messages"] > 0 for q in queues):
            seen["queued"] = queues
        return {"workers", "running", "progress", "done", "queued"} <= set(seen)

    assert wait_for(observe, timeout=30, step=0.2), (seen, out.lines[-20:])
    prog = seen["progress"]
    assert prog["worker"].startswith("slot") and f".{run_id}@" in prog["worker"]
    assert "f/s" in prog["result"] or "frames" in prog["result"]
    done = seen["done"]
    assert "4 frames in" in done["result"] and done["runtime"] > 0
    metrics = api(port, "/metrics")
    assert 'type="task-progress"' in metrics and f"{run_id}@" in metrics

    assert proc.wait(timeout=60) == 0
    assert try_api(port, "/healthcheck") is None, "Flower must stop with the run"
    assert not farm.leftovers()


def test_failed_chunk_shows_reason_and_log_tail(farm: Farm) -> None:
    port = free_port()
    farm.knobs.update(FAIL_FRAME="3")
    proc, _out = start_with_flower(farm, port, "--no-fail-fast", frames="1-24")

    def failed() -> dict[str, Any] | None:
        return next((t for t in chunk_tasks(port) if t["state"] == "FAILURE"), None)

    task = wait_for(failed, timeout=30, step=0.2)
    assert task, chunk_tasks(port)
    assert "After Effects error" in task["exception"]  # the one-line reason
    assert "aerender log tail" in task["result"] and "PROGRESS:" in task["result"]
    assert "aerender log tail" in task["traceback"]
    assert proc.wait(timeout=60) == 1
    assert not farm.leftovers()


def test_flower_dies_with_a_killed_orchestrator(farm: Farm) -> None:
    port = free_port()
    proc, _out = start_with_flower(farm, port, frames="1-200")
    assert try_api(port, "/healthcheck") == "OK"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert wait_for(lambda: try_api(port, "/healthcheck") is None, timeout=5)
    assert not farm.leftovers()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium for the screenshot")
def test_screenshot_of_the_tasks_page_during_a_run(farm: Farm) -> None:
    port = free_port()
    proc, _out = start_with_flower(farm, port, frames="1-40")
    assert wait_for(lambda: any(t["state"] == "PROGRESS" for t in chunk_tasks(port))
                    and any(t["state"] == "SUCCESS" for t in chunk_tasks(port)),
                    timeout=30, step=0.2)
    png = farm.tmp / "flower-tasks.png"
    screenshot(str(CHROMIUM), f"http://{AUTH}@127.0.0.1:{port}/tasks", png, budget_ms=3000)
    assert png.stat().st_size > 20_000  # a rendered table, not a blank page
    if os.environ.get("STMPO_UPDATE_SCREENSHOT"):
        shutil.copy(png, Path(__file__).resolve().parent.parent / "docs" / "flower-tasks.png")
    proc.send_signal(signal.SIGTERM)  # seen enough: cancel the rest of the run
    assert proc.wait(timeout=30) == 143
    assert not farm.leftovers()


def test_flower_on_a_taken_port_says_so_and_the_render_goes_on(farm: Farm) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        res = farm.run("--flower", f"127.0.0.1:{port}", frames="1-4", concurrency=1)
    assert res.returncode == 0, res.stdout + res.stderr
    warn = [ln for ln in res.stdout.splitlines() if "Flower not started" in ln]
    assert len(warn) == 1 and f"127.0.0.1:{port}: the port is in use" in warn[0], warn
    assert "Python frame" not in res.stdout + res.stderr
    assert not farm.leftovers()


def test_flower_log_reason_skips_traceback_noise(tmp_path: Path) -> None:
    from stmpo_celery.monitor._flowerctl import _log_tail

    log = tmp_path / "flower.log"
    log.write_text("INFO starting\nTraceback (most recent call last):\n  File x\n"
                   "OSError: [Errno 98] Address already in use\n<no Python frame>\n")
    assert _log_tail(log) == "OSError: [Errno 98] Address already in use"


def test_flower_lingers_after_a_failure_then_goes(farm: Farm) -> None:
    port = free_port()
    farm.knobs.update(FAIL_FRAME="3")
    proc, out = start_with_flower(farm, port, "--flower-linger", "4", frames="1-16")
    assert proc.wait(timeout=60) == 1
    out.t.join(timeout=5)
    assert out.find("Flower stays up 4 s to inspect the failure"), out.lines[-8:]
    # the run is over, its Flower still shows what happened
    tasks = try_api(port, "/api/tasks") or {}
    run_rows = [t for t in tasks.values() if t.get("name") == "stmpo.run"]
    assert run_rows and run_rows[0]["state"] == "FAILURE", tasks
    assert "After Effects error" in run_rows[0]["result"]
    assert any(t["state"] == "FAILURE" for t in chunk_tasks(port))
    assert wait_for(lambda: try_api(port, "/healthcheck") is None, timeout=10), "never left"
    assert not farm.leftovers()


def test_no_linger_after_a_success(farm: Farm) -> None:
    port = free_port()
    proc, out = start_with_flower(farm, port, "--flower-linger", "30", frames="1-8")
    assert proc.wait(timeout=60) == 0
    out.t.join(timeout=5)
    assert try_api(port, "/healthcheck") is None
    assert out.find("Flower for run") and not out.find("Flower stays up")
    assert not farm.leftovers()


def test_flower_settings_keep_a_bounded_history() -> None:
    from stmpo_celery.config.defaults import HOST_FLOWER_MAX_TASKS as FLOWER_MAX_TASKS
    from stmpo_celery.monitor._flowerctl import TASK_COLUMNS
    from stmpo_celery.monitor.flower_main import _configure

    options = _configure({"address": "127.0.0.1", "port": 0, "max_tasks": FLOWER_MAX_TASKS,
                          "purge_offline_s": 600, "tasks_columns": TASK_COLUMNS})
    assert options.max_tasks == FLOWER_MAX_TASKS and options.purge_offline_workers == 600
    assert options.tasks_columns.startswith("name,args,worker,state,result")


def test_a_cancel_while_a_detached_flower_starts_takes_it_down(tmp_path: Path) -> None:
    """SIGTERM to `host up --flower` while its detached Flower came up left that Flower
    serving in a session of its own, which `host down` could not find and whose port
    every later `host up` found in use."""
    import psutil

    from stmpo_celery.broker import BrokerUrl
    from stmpo_celery.monitor import start_flower

    class Cancel(BaseException):
        pass

    def cancelled() -> bool:
        raise Cancel  # the cancel's raise, while start_flower waits for Flower's answer

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(Cancel):
        start_flower(BrokerUrl("redis://127.0.0.1:6379/15"), "r", "q", str(free_port()),
                     None, None, tmp_path, detach=True, cancelled=cancelled)
    left = [p for p in psutil.Process().children(recursive=True)
            if p.pid not in before and p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [p.cmdline() for p in left]


def test_a_running_flower_is_compared_by_port_address_and_prefix() -> None:
    """`host up --flower 0.0.0.0:5555` on a host whose Flower serves loopback only was
    accepted and changed nothing: the wrangler believed it reachable from the network."""
    from stmpo_celery.monitor import serves_at

    url = "http://127.0.0.1:5555/"
    assert serves_at(url, "5555", None) and serves_at(url, "localhost:5555", None)
    assert serves_at(url, "127.0.0.1:5555", None)
    assert not serves_at(url, "5556", None)
    assert not serves_at(url, "0.0.0.0:5555", None)
    assert not serves_at(url, "5555", "flower")
    assert serves_at("http://127.0.0.1:5555/flower/", "5555", "/flower/")
