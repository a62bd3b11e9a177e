"""`stmpo farm`: two real farm workers on one Redis render a job bundle, for real.

Real parts only: an embedded redis-server (the farm Redis), `stmpo farm worker`
processes (Celery workers running tasks with the OpenJD sessions runtime), the shipped
job bundle with all its environments, `stmpo render` and the aerender simulator per
task. Workers are SIGKILLed for real; every process carries the test tag so a test can
prove that nothing is left running.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import BIN, free_port, tagged, wait_for
from farmlib import BUNDLE, Rig, _cmd, flower_raw, flower_tasks, sha

pytestmark = pytest.mark.slow


def test_two_workers_publish_versions_snapshot_and_approve(rig: Rig) -> None:
    rig.start_worker("w1")
    rig.start_worker("w2")
    port = free_port()
    flower = subprocess.Popen([str(BIN / "stmpo"), "farm", "flower", "--bind",
                               f"127.0.0.1:{port}", "--log-dir", str(rig.tmp)],
                              env=rig.env(), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    rig.workers["flower"] = flower  # stopped and checked like the workers
    assert flower.stdout is not None  # it says so once it serves and hears events
    assert b"Flower for the farm: http://127.0.0.1:" in flower.stdout.readline()
    rig.wait_workers()
    original = sha(rig.project)
    job = rig.submit()
    rig.project.write_text("the artist saved again after submitting\n")  # scene protection
    assert rig.wait(job) == 0, rig.logs()
    view = rig.job(job)
    assert view["state"] == "succeeded"
    # NONCONTIGUOUS chunks: OpenJD writes a two-frame task as "1,2"
    assert [t["task"] for t in view["tasks"]] == ["Frame=1,2", "Frame=3,4", "Frame=5,6",
                                                   "Frame=7,8"]
    assert {t["worker"].split("@")[0] for t in view["tasks"]} == {"w1", "w2"}, view
    assert all(t["state"] == "succeeded" and t["progress"] == 100 for t in view["tasks"])
    # Flower for the farm: tasks named by job, step and frames; render hosts as workers
    seen = wait_for(lambda: flower_tasks(port, job), timeout=30, step=0.3)
    assert seen, flower_raw(port)
    assert sorted(t["name"] for t in seen) == [
        f"job {job} RenderImageSequence Frame={f}" for f in ("1,2", "3,4", "5,6", "7,8")]
    assert {t["worker"].split("@")[0] for t in seen} == {"w1", "w2"}
    assert all(t["state"] == "SUCCESS" for t in seen)

    v1 = rig.shot / "v001"
    manifest = json.loads((v1 / "version.json").read_text())
    assert manifest["status"] == "pending-review" and manifest["job"] == job
    assert manifest["frame_range"] == "1-8" and manifest["comp"] == "Main Comp"
    assert [f["frame"] for f in manifest["frames"]] == list(range(1, 9))
    for f in manifest["frames"]:
        path = v1 / f["file"]
        assert f["size"] == path.stat().st_size > 0 and f["sha256"] == sha(path)
    assert {t["host"] for t in manifest["tasks"]} and all(
        t["summary"]["state"] == "succeeded" for t in manifest["tasks"])
    # the snapshot was rendered, not the edited project
    snap = Path(manifest["project"]["snapshot"])
    assert manifest["project"]["sha256"] == original == sha(snap)
    assert snap.read_text() == "original project\n"
    argv = json.loads((rig.tmp / "argv.json").read_text())
    assert argv[argv.index("-project") + 1] == str(snap)

    res = rig.stmpo("versions", "approve", str(rig.shot), "v001")
    assert res.returncode == 0, res.stderr
    assert json.loads((v1 / "version.json").read_text())["status"] == "approved"

    job2 = rig.submit(frames="1-4")
    assert rig.wait(job2) == 0, rig.logs()
    m2 = json.loads((rig.shot / "v002" / "version.json").read_text())
    assert m2["job"] == job2 and m2["status"] == "pending-review"
    assert m2["project"]["sha256"] == sha(rig.project) != original  # the saved project now
    listed = json.loads(rig.stmpo("versions", "list", str(rig.shot), "--json").stdout)
    assert [(v["version"], v["status"], v["matches"]) for v in listed] == [
        ("v001", "approved", True), ("v002", "pending-review", True)]
    # a frame changed after publishing: the listing says so, approval is refused
    (rig.shot / "v002" / "render_00002.png").write_bytes(b"touched")
    listed = json.loads(rig.stmpo("versions", "list", str(rig.shot), "--json").stdout)
    assert listed[1]["matches"] is False and "changed" in listed[1]["problems"][0]
    res = rig.stmpo("versions", "approve", str(rig.shot), "v002")
    assert res.returncode == 1 and "cannot be approved" in res.stderr
    res = rig.stmpo("versions", "reject", str(rig.shot), "v002", "--note", "frame 2 broken")
    assert res.returncode == 0
    m2 = json.loads((rig.shot / "v002" / "version.json").read_text())
    assert m2["status"] == "rejected" and m2["history"][-1]["note"] == "frame 2 broken"


def test_killed_worker_task_completes_on_the_other(rig: Rig) -> None:
    w1 = rig.start_worker("w1", FRAME_COST="0.5")
    rig.wait_workers()
    job = rig.submit(frames="1-12", per_task=6)
    rig.project.unlink()  # the original is gone: only the snapshot can render
    rig.wait_rendering(job)
    rig.start_worker("w2")
    w1.send_signal(signal.SIGKILL)
    w1.wait(timeout=10)
    assert rig.wait(job, timeout=90) == 0, rig.logs()
    tasks = rig.job(job)["tasks"]
    assert all(t["worker"].startswith("w2@") for t in tasks), tasks
    assert max(t["attempts"] for t in tasks) == 2  # the killed task ran again elsewhere
    manifest = json.loads((rig.shot / "v001" / "version.json").read_text())
    assert [f["frame"] for f in manifest["frames"]] == list(range(1, 13))
    # the dead worker's un-acked message was dropped, not left to come back in 30 days
    assert wait_for(lambda: not rig.client.hkeys("stmpo:farm:unacked"), timeout=5)
    # the dead worker's render was stopped by its guard, not left running, and its OpenJD
    # session folder was removed (the live worker's is still there)
    assert wait_for(lambda: not [p for p in tagged(rig.tag)
                                 if p.pid != rig.workers["w2"].pid
                                 and p not in rig.renders()
                                 and "_guard" not in " ".join(_cmd(p))], timeout=20)
    assert wait_for(lambda: [p.name.split("-")[2] for p in rig.temp.glob("stmpo-farm-*")]
                    == [str(rig.workers["w2"].pid)], timeout=15), list(rig.temp.iterdir())


def test_a_frozen_worker_loses_its_task_without_failing_the_job(rig: Rig) -> None:
    """A worker frozen mid-task (SIGSTOP: a hung host, Ctrl-Z) stops answering, and its
    render — not frozen, but sooner or later blocked on output nobody reads — holds the
    output. Its task runs again on another worker, which waits for that render instead of
    failing on it; the frozen worker's guard stops the render once the worker has been
    stopped past the farm's dead limit. The job succeeds with no failure counted, every
    frame whole; the frozen worker, once it answers again, says its task was given away."""
    w1 = rig.start_worker("w1", FRAME_COST="0.005")
    rig.wait_workers()
    job = rig.submit(frames="1-900", tasks=1)  # output enough to fill a pipe
    rig.wait_rendering(job)
    w1.send_signal(signal.SIGSTOP)
    rig.start_worker("w2", FRAME_COST="0.005")
    try:
        assert rig.wait(job, timeout=90) == 0, rig.logs()
        [task] = rig.job(job)["tasks"]
        assert task["state"] == "succeeded" and task.get("failures", 0) == 0, task
        assert task["worker"].startswith("w2@") and task["attempts"] == 2, task
        frozen_renders = [p for p in psutil.Process(w1.pid).children(recursive=True)
                          if "_guard" not in " ".join(_cmd(p))
                          and p.status() != psutil.STATUS_ZOMBIE]  # dead, not yet reaped
        assert frozen_renders == [], frozen_renders  # stopped by w1's guard
    finally:
        w1.send_signal(signal.SIGCONT)
    assert wait_for(lambda: "given to another worker" in (rig.tmp / "w1.log").read_text(),
                    timeout=20), rig.logs()
    manifest = json.loads((rig.shot / "v001" / "version.json").read_text())
    assert [f["frame"] for f in manifest["frames"]] == list(range(1, 901))
    assert manifest["status"] == "pending-review", manifest


def test_a_worker_restarted_under_its_name_does_not_keep_its_dead_tasks(rig: Rig) -> None:
    """A host's worker killed and started again under the same name (a service manager's
    restart): the task the dead one held runs again, on the new one, instead of staying
    "running" for ever. A second live worker of that name is refused."""
    w1 = rig.start_worker("w1", FRAME_COST="0.3")
    rig.wait_workers()
    job = rig.submit(frames="1-8", per_task=8)
    rig.wait_rendering(job)
    twin = rig.stmpo("farm", "worker", "--name", "w1", timeout=30)  # while w1 lives
    assert twin.returncode == 2 and "already on the farm" in twin.stderr, twin
    assert "Traceback" not in twin.stdout + twin.stderr
    w1.send_signal(signal.SIGKILL)
    w1.wait(timeout=10)
    again = rig.start_worker("w1")  # same host, same name, the previous one gone: allowed
    assert rig.wait(job, timeout=90) == 0, rig.logs()
    [task] = rig.job(job)["tasks"]
    assert task["attempts"] == 2 and task["state"] == "succeeded", task
    # SIGHUP (the ssh session it ran in dropped) stops it like SIGTERM: Celery's own
    # handler re-executed it and logged its command line, a --farm password included
    again.send_signal(signal.SIGHUP)
    assert again.wait(timeout=30) == 0, rig.logs()
    assert "Restarting" not in rig.logs()


def test_cancel_stops_running_tasks_and_leaves_nothing(rig: Rig) -> None:
    rig.start_worker("w1", FRAME_COST="0.5")
    rig.start_worker("w2", FRAME_COST="0.5")
    rig.wait_workers()
    job = rig.submit(frames="1-40", per_task=10, publish=False)
    assert wait_for(lambda: sum(t["state"] == "running" and t["progress"] > 0
                                for t in rig.job(job)["tasks"]) == 2, timeout=40, step=0.2), \
        rig.logs()
    assert any("AfterFX" in " ".join(_cmd(p)) or p.name() == "AfterFX" for p in rig.renders())
    t0 = time.monotonic()
    res = rig.stmpo("farm", "cancel", job)
    assert res.returncode == 0 and "2 queued task(s) revoked, 2 running" in res.stdout, res
    assert rig.wait(job, timeout=40) == 1
    assert time.monotonic() - t0 < 25  # stmpo render stops on the notify, not the kill
    view = rig.job(job)
    assert view["state"] == "canceled"
    assert [t["state"] for t in view["tasks"]] == ["canceled"] * 4
    assert wait_for(lambda: not rig.renders(), timeout=10), rig.renders()
    assert all(w.poll() is None for w in rig.workers.values())  # the hosts live on
    res = rig.stmpo("farm", "retry", job)
    assert res.returncode == 0 and "4 task(s) queued again" in res.stdout
    assert rig.job(job)["state"] in ("queued", "running")
    assert rig.stmpo("farm", "cancel", job).returncode == 0
    assert rig.wait(job, timeout=40) == 1


def test_bad_submit_is_refused_before_anything_is_written(rig: Rig) -> None:
    res = rig.stmpo("farm", "submit", str(BUNDLE), "-p", f"ProjectFile={rig.project}",
                    "-p", "Comp=C", "-p", "Framez=1-8", "--publish", str(rig.shot))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "Framez" in res.stderr and "Traceback" not in res.stderr
    res = rig.stmpo("farm", "submit", str(BUNDLE), "-p", f"ProjectFile={rig.tmp / 'nope.aep'}",
                    "-p", "Comp=C", "--publish", str(rig.shot))
    assert res.returncode == 2 and "is not a file" in res.stderr
    res = rig.stmpo("farm", "submit", str(BUNDLE), "-p", f"ProjectFile={rig.project}",
                    "-p", "Comp=C", "--priority", "101")
    assert res.returncode == 2 and "--priority 101" in res.stderr
    assert not (rig.tmp / "farm").exists()
    assert not list(rig.shot.glob("v*"))
    assert not rig.client.keys("stmpo:farm:*")
    res = rig.stmpo("farm", "wait", "nosuchjob")
    assert res.returncode == 2 and "no farm job" in res.stderr
    env = rig.env()
    env.pop("STMPO_FARM_URL")
    res = subprocess.run([str(BIN / "stmpo"), "farm", "jobs"], capture_output=True, text=True,
                         env=env, timeout=30)
    assert res.returncode == 2 and "--farm" in res.stderr


def test_a_render_or_status_on_the_farms_redis_leaves_queued_jobs_alone(rig: Rig) -> None:
    """Every ``stmpo render`` and ``stmpo status`` reaps dead runs' keys on its Redis; the
    farm's ``stmpo:farm:`` keys are no run's (they used to get a 30 s TTL and vanish)."""
    from stmpo_celery.broker import try_reap

    job = rig.submit(frames="1-4", per_task=2, publish=False)  # no worker: it stays queued
    farm = rig.client.keys("stmpo:farm:*")
    assert farm and all(rig.client.ttl(k) == -1 for k in farm)
    rig.client.set("stmpo:0badf00d:x:state", "a killed run's key")  # a real orphan
    try_reap(rig.client)  # what render and status run
    assert {k: rig.client.ttl(k) for k in farm} == dict.fromkeys(farm, -1)
    assert 0 < rig.client.ttl("stmpo:0badf00d:x:state") <= 30
    assert rig.job(job)["state"] == "queued"


def test_failed_tasks_retry_up_to_the_jobs_limit_and_on_demand(rig: Rig) -> None:
    once = rig.tmp / "once"
    once.mkdir()
    rig.start_worker("w1", FAIL_FRAME="1,3", ONCE_DIR=str(once))
    rig.wait_workers()
    # no retries allowed: the job fails; `stmpo farm retry` runs the task again
    job = rig.submit(frames="1-2", per_task=2, publish=False, extra=("--max-retries", "0"))
    assert rig.wait(job) == 1
    [task] = rig.job(job)["tasks"]
    assert task["state"] == "failed" and task["attempts"] == 1, task
    assert rig.job(job)["state"] == "failed"
    res = rig.stmpo("farm", "retry", job)
    assert res.returncode == 0 and "1 task(s) queued again" in res.stdout
    assert rig.wait(job) == 0
    assert rig.job(job)["tasks"][0]["attempts"] == 2
    # one retry allowed (the default): the failed task runs again by itself
    job = rig.submit(frames="3-4", per_task=2, publish=False)
    assert rig.wait(job) == 0, rig.logs()
    [task] = rig.job(job)["tasks"]
    assert task["state"] == "succeeded" and task["attempts"] == 2, task
    assert (once / "fail-1").exists() and (once / "fail-3").exists()


def test_no_process_of_a_farm_task_has_the_farms_password(rig: Rig) -> None:
    """A worker handed ``STMPO_FARM_URL`` (the farm Redis's password in it) to every task's
    session, down to After Effects: a plug-in or expression of any submitted project could
    read it and cancel, requeue or remove jobs anywhere on the farm. Nor does the worker
    itself show it (``/proc/PID/environ``), nor Flower for the farm."""
    from stmpo_celery.broker import url_secrets

    secret = max(url_secrets(rig.url), key=len)
    assert secret
    w1 = rig.start_worker("w1", FRAME_COST="0.3")
    port = free_port()
    rig.workers["flower"] = subprocess.Popen(
        [str(BIN / "stmpo"), "farm", "flower", "--bind", f"127.0.0.1:{port}", "--log-dir",
         str(rig.tmp)], env=rig.env(), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    rig.wait_workers()
    job = rig.submit(frames="1-8", per_task=8)
    rig.wait_rendering(job)
    procs = [psutil.Process(w1.pid), *rig.renders(), *tagged(rig.tag)]
    seen = 0
    for p in procs:
        try:
            env = "\0".join(f"{k}={v}" for k, v in p.environ().items())
        except psutil.Error:
            continue
        seen += 1
        assert secret not in env, (_cmd(p), "holds the farm's password in its environment")
    assert seen >= 5, procs  # the worker, its session's render, slots, renderers, Flower
    assert any("STMPO_FAKE_" in "".join(p.environ()) for p in rig.renders()
               if p.is_running())
    assert rig.wait(job) == 0, rig.logs()


def test_a_worker_that_cannot_see_the_jobs_folder_says_so_and_makes_nothing(
        rig: Rig) -> None:
    """The job's folder is a path of the submitting host. A worker that cannot see it (a
    Windows worker given a Linux submitter's /farm/..., a host that mounts the farm
    folder elsewhere) read it as a folder of its own, created logs and output folders
    there, then failed on a project "that does not exist (a relative path starts in the
    current folder)". It now fails the task at once, saying why, and makes nothing."""
    job = rig.submit(frames="1-2", per_task=2, publish=False, extra=("--max-retries", "0"))
    farm = rig.tmp / "farm"
    farm.rename(rig.tmp / "farm-elsewhere")  # what this worker's host cannot see
    rig.start_worker("w1")
    rig.wait_workers()
    assert rig.wait(job) == 1
    [task] = rig.job(job)["tasks"]
    assert task["state"] == "failed" and task["attempts"] == 1, task
    assert "cannot see the job's folder" in rig.logs(), rig.logs()
    assert not farm.exists() and not (rig.tmp / "out").exists()
