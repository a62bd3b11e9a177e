"""``stmpo farm worker``: a render host taking farm tasks one at a time.

A Celery worker (threads pool, concurrency 1: the task uses the whole host through
``stmpo render``, while the worker's own loop keeps sending heartbeats and events for
Flower) consumes the farm queue with ``acks_late`` and prefetch 1, so it holds exactly
one message, acknowledged only once the task ended. Each task runs in an OpenJD session
(:mod:`._session`).

Dead hosts: every worker refreshes ``x:worker:<name>`` (expiring) and, on the same
beat, looks for running tasks whose worker key expired; it requeues them (a new
attempt; the dead worker's un-acked message is dropped, and if it ever comes back its
attempt number is stale and it is skipped). Kombu's own redelivery of un-acked
messages waits for the visibility timeout, which cannot tell a dead host from a long
render, so the farm does not rely on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import redis
from celery import Celery
from celery.signals import worker_ready

from ..broker import BrokerUrl
from ..config import defaults
from ..errors import BadInput
from ..host import (
    child_kwargs,
    folder_in_use,
    hold_folder,
    make_run_dir,
    process_space,
    remove_run_dir,
    written_here,
)
from ._app import TASK, enqueue, make_farm_app, new_celery_id
from ._session import Outcome, check_runtime, run_task
from ._store import ENDED, PREFIX, FarmStore
from ._versions import write_manifest


class _Worker:
    """Process-wide state of this farm worker (one per process)."""

    store: FarmStore
    app: Celery
    name: str = ""
    instance: str = ""  #: this process, among every worker that ever had this name
    current: tuple[str, int, int] | None = None
    #: the OpenJD sessions' working folders (removed by the guard if this worker is killed)
    sessions: Path = Path()


W = _Worker()


def say(text: str) -> None:
    print(f"stmpo farm worker {W.name}: {text}", flush=True)


def _now() -> float:
    return time.time()


# -- finishing a task ---------------------------------------------------------------------
def requeue(job: dict[str, Any], task: dict[str, Any], why: str, *,
            failed: bool) -> dict[str, Any] | None:
    """Queue ``task`` again as a new attempt (if its attempt is still current)."""
    store, jid = W.store, job["id"]

    def change(rec: dict[str, Any]) -> dict[str, Any]:
        rec.update(state="queued", attempt=rec["attempt"] + 1, celery_id=new_celery_id(),
                   worker=None, progress=0.0, status=why,
                   failures=rec.get("failures", 0) + (1 if failed else 0))
        return rec

    new = store.update_task(jid, task["index"], task["attempt"], change)
    if new is not None:
        enqueue(W.app, job, new)
    return new


def finish(job: dict[str, Any], task: dict[str, Any], state: str, summary: dict[str, Any],
           message: str) -> str:
    store, jid = W.store, job["id"]
    if state == "failed" and task.get("failures", 0) < job.get("max_retries", 0) and \
            store.job_state(jid) != "canceled" and \
            requeue(job, task, f"retry after: {message}", failed=True) is not None:
        return "requeued"

    def change(rec: dict[str, Any]) -> dict[str, Any]:
        rec.update(state=state, ended=_now(), summary=summary, status=message or rec["status"],
                   progress=100.0 if state == "succeeded" else rec.get("progress", 0.0))
        if state == "failed":
            rec["failures"] = rec.get("failures", 0) + 1
        return rec

    if store.update_task(jid, task["index"], task["attempt"], change) is None:
        return "stale"
    if state == "succeeded" and store.mark_done(jid, task["index"]) == job["tasks"]:
        if job.get("publish"):
            path = write_manifest(job, store.tasks(jid))
            say(f"job {jid}: every task done, published {path}")
        else:
            say(f"job {jid}: every task done")
    return state


# -- the Celery task ----------------------------------------------------------------------
def farm_task(self: Any, job_id: str, step: str, label: str, *, index: int,
              attempt: int) -> dict[str, Any]:
    store = W.store
    try:
        job = store.job(job_id)
        rec = store.task(job_id, index)
    except BadInput:  # removed (stmpo farm remove) while its message waited in the queue
        return {"skipped": f"job {job_id} was removed"}
    if rec["attempt"] != attempt or rec["state"] != "queued":
        return {"skipped": f"attempt {attempt} is stale (task is {rec['state']}, "
                           f"attempt {rec['attempt']})"}
    if store.job_state(job_id) == "canceled":
        store.update_task(job_id, index, attempt,
                          lambda r: {**r, "state": "canceled", "ended": _now()})
        return {"skipped": "job canceled"}
    host = socket.gethostname()

    def start(r: dict[str, Any]) -> dict[str, Any]:
        r.update(state="running", worker=W.name, instance=W.instance, host=host,
                 started=_now(),
                 runs=r.get("runs", 0) + 1, status="starting")
        return r

    started = store.update_task(job_id, index, attempt, start)
    if started is None:
        return {"skipped": "taken by another attempt"}
    rec = started
    W.current = (job_id, index, attempt)
    say(f"job {job_id} task {index} {step} {label}: started (attempt {attempt})")
    last = [0.0]

    def on_progress(progress: float, status: str) -> None:
        store.update_task(job_id, index, attempt,
                          lambda r: {**r, "progress": round(progress, 1),
                                     "status": status or r["status"]})
        now = time.monotonic()
        if now - last[0] > 0.5 or progress >= 100:
            last[0] = now
            meta = {"job": job_id, "step": step, "task": label, "progress": progress,
                    "status": status}
            with contextlib.suppress(Exception):
                self.update_state(state="PROGRESS", meta=meta)
                self.send_event("task-progress", **meta)

    log_path = Path(job["job_dir"]) / "logs" / f"task{index:04d}.attempt{attempt}.log"
    lost = [False]
    heard = [time.monotonic()]  # the last time the farm Redis answered

    def should_cancel() -> bool:
        try:
            if store.job_state(job_id) == "canceled":
                return True
            lost[0] = lost[0] or taken_from_us(store.task(job_id, index), attempt)
        except BadInput:  # the job was removed
            lost[0] = True
        except (redis.RedisError, OSError):
            # cut off from the farm longer than a worker may be silent: the task is
            # another worker's by now (this one's heartbeat stopped too)
            lost[0] = time.monotonic() - heard[0] > defaults.FARM_DEAD_AFTER_S
            return lost[0]
        heard[0] = time.monotonic()
        return lost[0]

    try:
        if (blind := _cannot_see(job)) is not None:  # before anything is made there
            outcome = Outcome(state="failed", message=blind)
        else:
            outcome = run_task(job, rec, f"{job_id}-{index}-{attempt}", log_path,
                               on_progress, should_cancel, session_env(), sessions_folder())
            should_cancel()  # stopped while this worker was frozen: was it given away?
            if lost[0]:
                outcome.message = ("the task was given to another worker while this one did "
                                   "not answer: its render was stopped")
    except Exception as exc:  # noqa: BLE001 - a broken job must not kill the host
        outcome = Outcome(state="failed", message=f"{type(exc).__name__}: {exc}")
    finally:
        W.current = None
    summary = {**outcome.summary(), "host": host, "worker": W.name, "log": str(log_path)}
    result = finish(job, rec, outcome.state, summary, outcome.message)
    say(f"job {job_id} task {index} {label}: {outcome.state}"
        + (f" ({outcome.message})" if outcome.message else "") + f" -> {result}")
    return {"job": job_id, "task": index, "label": label, "state": outcome.state,
            "result": result, "seconds": round(outcome.seconds, 2)}


def _cannot_see(job: dict[str, Any]) -> str | None:
    """Why this worker cannot run the job's tasks, when it cannot see the job's folder —
    a path of the host that submitted it (its snapshot, parameters and logs): a Windows
    worker read a Linux submitter's ``/farm/...`` as a folder on its current drive,
    created logs and output folders there, failed on a project "that does not exist"
    and spent the task's retries. None when it can."""
    where = str(job.get("job_dir", ""))
    if where and os.path.isfile(os.path.join(where, "job.json")):
        return None
    return (f"this worker cannot see the job's folder {where or '(none recorded)'}: every "
            f"worker must reach the farm folder by the path the submitting host gave it "
            f"(--farm-dir / {defaults.FARM_DIR_ENV}; stmpo does not map paths between "
            f"hosts), so submit from a host whose paths the workers share")


def taken_from_us(task: dict[str, Any], attempt: int) -> bool:
    """Whether this worker's ``attempt`` of ``task`` was taken from it: requeued (a new
    attempt) after it stopped answering — frozen, cut off — or given to another worker.
    Its render must stop: the new attempt waits for this one's output lock."""
    return task.get("attempt") != attempt or task.get("state") != "running" or \
        task.get("instance", W.instance) != W.instance


def session_env() -> dict[str, str]:
    """What every task's OpenJD session adds to the environment: a requeued task that meets
    the output lock of a render still running (the worker that lost it frozen, its render
    not stopped yet) waits for it instead of failing, unless the host says otherwise."""
    from ..config import SETTINGS

    name = SETTINGS["output_lock_wait"].env
    return {} if os.environ.get(name) else {name: f"{defaults.FARM_OUTPUT_LOCK_WAIT_S:g}"}


# -- heartbeat and dead workers ----------------------------------------------------------
def reap_dead(store: FarmStore) -> None:
    """Requeue (or cancel) the running tasks of workers that stopped saying they live."""
    for jid in store.active_jobs():
        tasks = store.tasks(jid)
        if all(t["state"] in ENDED for t in tasks):
            store.set_active(jid, False)
            continue
        job: dict[str, Any] | None = None
        for t in tasks:
            if t["state"] != "running" or not t.get("worker"):
                continue
            own = (t["instance"] == W.instance if t.get("instance")
                   else t["worker"] == W.name)  # (a record from before instances)
            if own:
                continue
            if store.holder_alive(t):
                continue
            job = job or store.job(jid)
            if store.job_state(jid) == "canceled":
                store.update_task(jid, t["index"], t["attempt"], lambda r: {
                    **r, "state": "canceled", "ended": _now(),
                    "status": f"worker {r['worker']} lost while canceling"})
                continue
            if requeue(job, t, f"worker {t['worker']} lost: running again", failed=False):
                say(f"job {jid} task {t['index']}: worker {t['worker']} is gone, requeued")
                drop_unacked(store, t["celery_id"])


def drop_unacked(store: FarmStore, celery_id: str) -> None:
    """Drop a dead worker's un-acked message (kombu would restore it after the visibility
    timeout; its attempt is stale by then, but it should not linger in Redis)."""
    key = PREFIX + "unacked"
    for tag, raw in store.client.hgetall(key).items():
        with contextlib.suppress(ValueError, TypeError, KeyError, IndexError):
            if json.loads(raw)[0]["headers"]["id"] == celery_id:
                store.client.hdel(key, tag)
                store.client.zrem(PREFIX + "unacked_index", tag)


def _beat(stop: threading.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(Exception):
            W.store.heartbeat(W.name, W.instance,
                              {"host": socket.gethostname(), "pid": os.getpid(),
                               "space": process_space(),
                               "task": list(W.current) if W.current else None})
            reap_dead(W.store)
        stop.wait(defaults.FARM_HEARTBEAT_S)


SESSIONS_PREFIX = "stmpo-farm-"  #: + the worker's pid + "-": its OpenJD session folders


def sweep_sessions(temp: Path) -> list[Path]:
    """Remove the session folders of workers that are gone (killed together with their
    guard, nobody removed them). A worker holds its folder's ``alive.lock`` for its
    lifetime (:func:`~stmpo_celery.host.make_run_dir`): a folder whose lock can be taken
    is dead, however its pid reads here — a worker in another PID namespace sharing this
    temp dir (containers with one /tmp) has a pid that names nothing, or another
    process, here. A folder of an older worker (no lock) goes by its pid."""
    gone = []
    for folder in temp.glob(SESSIONS_PREFIX + "*-*"):
        if not folder.is_dir() or folder.is_symlink():
            continue
        if (folder / "alive.lock").exists():
            dead = not folder_in_use(folder)
        else:
            pid = folder.name[len(SESSIONS_PREFIX):].split("-", 1)[0]
            dead = pid.isdecimal() and not psutil.pid_exists(int(pid))
        if dead:
            shutil.rmtree(folder, ignore_errors=True)
            gone.append(folder)
    return gone


def sessions_folder() -> Path:
    """This worker's session folder, made again (and held) if something removed it
    under the worker (a temp cleaner): every task would fail on a missing one."""
    if not W.sessions.is_dir():
        W.sessions.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            hold_folder(W.sessions)
    return W.sessions


def _start_guard() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "stmpo_celery.farm._guard", str(os.getpid()),
         str(defaults.FARM_ORPHAN_GRACE_S), str(W.sessions)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, close_fds=True,
        **child_kwargs(detach=True))


def _check_name_free(store: FarmStore, name: str) -> None:
    """A worker name is unique on the farm: refuse one a live worker uses, unless that
    was this host's previous worker of the name, gone (a service restarted after a
    crash: its key lives a few seconds more)."""
    info = store.worker(name)
    if info is None:
        return
    here = written_here(info, socket.gethostname())
    pid = info.get("pid")
    if here and isinstance(pid, int) and not psutil.pid_exists(pid):
        return
    where = f"on host {info.get('host')}, pid {pid}"
    raise BadInput(f"a worker named {name} is already on the farm ({where}): give this one "
                   f"another --name, or stop that one first (a worker gone for "
                   f"{defaults.FARM_DEAD_AFTER_S:.0f} s frees its name)")


def worker_name(name: str | None) -> str:
    from ..broker.keys import host_name

    name = name or host_name()
    return name if "@" in name else f"{name}@{host_name()}"


def _worker_class(app: Any) -> Any:
    """Celery's worker, but SIGHUP (a closed terminal, a dropped ssh session) stops it
    the way SIGTERM does. Celery's own SIGHUP handler re-executes the worker with its
    command line, which it also logs: the farm URL's password in clear."""
    from celery.apps.worker import install_worker_term_handler

    class FarmWorker(app.Worker):
        def install_platform_tweaks(self, worker: Any) -> None:
            super().install_platform_tweaks(worker)
            if hasattr(signal, "SIGHUP"):
                install_worker_term_handler(worker, sig="SIGHUP")

    return FarmWorker


def run_worker(broker: BrokerUrl, name: str | None, loglevel: str = "WARNING") -> int:
    check_runtime()  # before it takes a task it could only fail
    W.name = worker_name(name)
    W.instance = uuid.uuid4().hex[:12]
    W.store = FarmStore.connect(broker)
    _check_name_free(W.store, W.name)
    W.app = make_farm_app(broker)
    W.app.task(name=TASK, bind=True, acks_late=True, track_started=True)(farm_task)
    sweep_sessions(Path(tempfile.gettempdir()))
    W.sessions = make_run_dir(f"{SESSIONS_PREFIX}{os.getpid()}-")  # locked while alive
    guard = _start_guard()
    stop = threading.Event()
    beat = threading.Thread(target=_beat, args=(stop,), name="stmpo-farm-beat", daemon=True)

    def ready(**_kw: Any) -> None:  # alive on the farm once it really consumes
        say(f"consuming {defaults.FARM_QUEUE} (one task at a time)")
        beat.start()

    worker_ready.connect(ready, weak=False)
    try:
        worker = _worker_class(W.app)(pool="threads", concurrency=1,
                                      queues=[defaults.FARM_QUEUE],
                              hostname=W.name, without_gossip=True, without_mingle=True,
                              loglevel=loglevel, quiet=True)
        worker.start()
        code = int(worker.exitcode or 0)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            W.store.forget_worker(W.name, W.instance)
        if guard.stdin is not None:
            guard.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            guard.wait(timeout=defaults.FARM_ORPHAN_GRACE_S + 5)
        remove_run_dir(W.sessions)
    return code
