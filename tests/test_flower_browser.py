"""The host Flower in a real browser after a success, a fail-fast failure and a cancel.

One host service (`stmpo host up --flower`), three real renders on it one after the
other, then headless Chromium loads Flower's pages as a wrangler would and the test
asserts on what the page shows (the DOM after Flower's own scripts ran), and on
Flower's API for the exact fields. Screenshots land in the test's temp directory; with
``STMPO_UPDATE_SCREENSHOTS=1`` they replace ``docs/flower-host-*.png``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from browserlib import chromium_run, screenshot
from conftest import Farm, wait_for
from hostlib import host_env, stmpo
from test_status import find_run, free_port, run_id_of, status_json

pytestmark = pytest.mark.slow
MARKER = "After Effects error"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    # the test setup installs it where it can (Debian's package), as .ci/run does
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True,
                   timeout=600, check=False)
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browser(chromium: str, url: str, *, png: Path | None = None,
             size: str = "1400,900") -> str:
    """The page's DOM after its scripts ran (and a screenshot if ``png``)."""
    if png is not None:
        screenshot(chromium, url, png, size=size)
    return chromium_run(chromium, url, "--dump-dom", size=size).stdout


def _api(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def _runs(tasks: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The stmpo.run rows, by run id."""
    out = {}
    for t in tasks.values():
        if t.get("name") == "stmpo.run":
            out[t["worker"].split(".", 1)[1].split("@")[0]] = t
    return out


def _assert_truth(port: int, tasks: dict[str, Any]) -> None:
    """What must hold on a host Flower once no run is active."""
    for t in tasks.values():
        assert t.get("name") in ("stmpo.run", "stmpo.render_chunk"), t  # no anonymous rows
        assert t["state"] not in ("PENDING", "RECEIVED", "STARTED", "PROGRESS", "RETRY"), t
        if t["state"] == "SUCCESS" and t["name"] == "stmpo.render_chunk":
            assert " frames in " in (t.get("result") or ""), t  # work that really ran
        assert "nothing to render" not in (t.get("result") or ""), t
    workers = _api(port, "/workers?json=1")["data"]
    online = [w["hostname"] for w in workers if w.get("status")]
    assert not [w for w in online if w.startswith("orchestrator.")], online
    assert not online, online  # every slot of every ended run went offline


def test_host_flower_after_success_fail_fast_and_cancel(farm: Farm, tmp_path: Path) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium, and it cannot be installed here (not root or no apt-get)")
    host_dir = tmp_path / "hostsvc"
    env = host_env(farm, host_dir)
    fport = free_port()
    up = stmpo("host", "up", "--port", str(free_port()), "--flower", f"127.0.0.1:{fport}",
               env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    shots = tmp_path / "shots"
    shots.mkdir()
    try:
        url = (host_dir / "broker.url").read_text().strip()
        ids: dict[str, str] = {}

        def render(name: str, knobs: dict[str, str], *extra: str,
                   frames: str, slots: int) -> subprocess.Popen[str]:
            f = Farm(tmp_path / name)
            f.tag = farm.tag
            f.knobs.update(knobs)
            proc = f.start(*extra, frames=frames, concurrency=slots,
                           env=f.env(STMPO_BROKER_URL=url))
            ids[name] = run_id_of(proc)
            return proc

        # 1. success, adaptive schedule: its unused spare tasks must not show
        ok = render("ok", {"STARTUP": "0.2", "FRAME_COST": "0.03"}, frames="1-24", slots=2)
        assert ok.wait(timeout=90) == 0
        wait_for(lambda: ids["ok"] in _runs(_api(fport, "/api/tasks"))
                 and _runs(_api(fport, "/api/tasks"))[ids["ok"]]["state"] == "SUCCESS",
                 timeout=10)
        _browser(chromium, f"http://127.0.0.1:{fport}/tasks",
                 png=shots / "flower-host-success.png")

        # 2. fail-fast: one chunk fails, its siblings are stopped mid-render
        bad = render("bad", {"STARTUP": "0.2", "FRAME_COST": "0.15", "FAIL_FRAME": "14"},
                     "--schedule", "static", frames="1-36", slots=3)
        assert bad.wait(timeout=90) == 1
        # 3. cancel: SIGINT (Ctrl-C) while rendering
        cancel = render("cancel", {"STARTUP": "0.2", "FRAME_COST": "0.2"}, frames="1-200",
                        slots=2)
        assert wait_for(lambda: any((tmp_path / "cancel" / "renders").glob("*.png")),
                        timeout=30)
        cancel.send_signal(signal.SIGINT)
        assert cancel.wait(timeout=30) == 130

        def settled() -> dict[str, Any] | None:
            tasks = _api(fport, "/api/tasks")
            runs = _runs(tasks)
            done = {n: runs.get(i, {}).get("state") for n, i in ids.items()}
            return tasks if done == {"ok": "SUCCESS", "bad": "FAILURE",
                                     "cancel": "REVOKED"} else None

        tasks = wait_for(settled, timeout=15, step=0.3)
        assert tasks, _runs(_api(fport, "/api/tasks"))
        # `stmpo status` tells the same story for the runs that ended on this host
        snap = status_json(env)
        states = {n: (find_run(snap, i) or {}).get("state") for n, i in ids.items()}
        assert states == {"ok": "done", "bad": "failed", "cancel": "cancelled"}, snap
        bad_status = find_run(snap, ids["bad"]) or {}
        assert MARKER in (bad_status.get("reason") or "") and bad_status.get("log"), bad_status
        _assert_truth(fport, tasks)
        runs = _runs(tasks)
        for run_id in ids.values():  # project and comp visible per run
            row = runs[run_id]
            assert row["args"].startswith("('shot.aep', 'Main Comp', '"), row
            assert run_id in row["kwargs"], row
        failed = runs[ids["bad"]]
        assert MARKER in failed["result"] and "log: " in failed["result"], failed
        log = failed["result"].split("log: ", 1)[1].split(" | ")[0]
        assert Path(log).is_file() and MARKER in Path(log).read_text(), log
        assert "resume: stmpo render" in failed["traceback"], failed
        revoked = [t for t in tasks.values() if t["state"] == "REVOKED"
                   and t["name"] == "stmpo.render_chunk"]
        bad_stopped = [t for t in revoked if f".{ids['bad']}@" in t["worker"]]
        assert bad_stopped, revoked  # siblings stopped by fail-fast: REVOKED, on their slot
        for t in revoked:
            assert t["worker"].startswith("slot"), t
            assert t["result"].startswith("STOPPED "), t
        assert any("fail-fast" in t["result"] for t in bad_stopped), bad_stopped
        assert any("SIGINT" in t["result"] for t in revoked
                   if f".{ids['cancel']}@" in t["worker"]), revoked
        assert "CANCELLED" in runs[ids["cancel"]]["result"]
        assert runs[ids["ok"]]["result"].startswith("OK: 24 of 24")

        # what the wrangler sees in the browser
        dom = _browser(chromium, f"http://127.0.0.1:{fport}/tasks",
                       png=shots / "flower-host-cancel.png")
        badges = re.findall(r'<span class="badge [^"]*">([A-Z]+)</span>', dom)
        assert {"SUCCESS", "FAILURE", "REVOKED"} <= set(badges), dom[-3000:]
        assert not set(badges) & {"PENDING", "RECEIVED", "STARTED", "PROGRESS"}, badges
        assert "stmpo.run" in dom and "shot.aep" in dom and "Main Comp" in dom
        assert "nothing to render" not in dom
        page = _browser(chromium, f"http://127.0.0.1:{fport}/task/{failed['uuid']}",
                        png=shots / "flower-host-failfast.png")
        assert MARKER in page and log in page
        workers = _browser(chromium, f"http://127.0.0.1:{fport}/workers",
                           png=shots / "flower-host-workers.png")
        rows = re.findall(r"<tr[^>]*>(.*?)</tr>", workers, re.S)
        listed = [r for r in rows if "@" in r]
        assert any("orchestrator." in r for r in listed), rows  # listed, and...
        online = [r for r in listed if ">Online<" in r]
        assert not online, online  # ...offline, like every slot of the ended runs
    finally:
        down = stmpo("host", "down", "--force", env=env)
        assert down.returncode == 0, down.stdout + down.stderr
    if os.environ.get("STMPO_UPDATE_SCREENSHOTS"):
        for png in shots.glob("*.png"):
            shutil.copy(png, DOCS / png.name)
    assert not farm.leftovers()
