"""``stmpo farm jobs|wait|cancel|retry|remove``: reading and steering jobs in the farm
Redis."""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import redis
from celery import Celery

from ..errors import BadInput, EnvironmentProblem, ExitCode, StmpoError
from ._app import enqueue, new_celery_id
from ._store import ACTIVE, ENDED, FarmStore, job_summary_state


def worker_lost(store: FarmStore, task: dict[str, Any]) -> str | None:
    """What to say of a running ``task`` whose worker stopped saying it lives (killed,
    its host down), or None. Any worker requeues such a task, but with none left running
    it stays ``running`` until one starts: every reader says so instead of waiting on."""
    if task["state"] != "running" or not task.get("worker") or store.holder_alive(task):
        return None
    return (f"worker {task['worker']} is gone: the task runs again when a worker takes it "
            "(none has yet: is any farm worker running?)")


def job_view(store: FarmStore, jid: str) -> dict[str, Any]:
    job = store.job(jid)
    tasks = store.tasks(jid)
    lost = {t["index"]: worker_lost(store, t) for t in tasks}
    return {
        "id": jid, "name": job.get("name"), "state": job_summary_state(store.job_state(jid),
                                                                       tasks),
        "submitted": job.get("submitted"), "priority": job.get("priority"),
        "publish": job.get("publish"), "job_dir": job.get("job_dir"),
        "tasks": [{"index": t["index"], "step": t["step"], "task": t["label"],
                   "state": t["state"], "worker": t.get("worker"), "attempts": t.get("runs", 0),
                   "progress": t.get("progress", 0.0),
                   "status": lost[t["index"]] or t.get("status", ""),
                   "worker_lost": lost[t["index"]] is not None}
                  for t in tasks],
    }


def jobs(store: FarmStore) -> list[dict[str, Any]]:
    return [job_view(store, j) for j in store.job_ids()]


class Steered(NamedTuple):
    """What ``cancel`` or ``retry`` found and did."""

    state: str  #: the job's state before (job_summary_state)
    queued: int = 0  #: tasks revoked (cancel) or queued again (retry)
    running: int = 0  #: running tasks now being canceled (cancel)

    @property
    def ended(self) -> bool:
        """The job had ended (succeeded, failed, canceled) before."""
        return self.state in ENDED


def cancel(store: FarmStore, app: Celery, jid: str) -> Steered:
    """Cancel a job: queued tasks revoked at once, running ones canceled by their worker
    through OpenJD (NOTIFY_THEN_TERMINATE). A job that already ended (succeeded, failed,
    canceled) is left as it is."""
    store.job(jid)
    done = Steered(store.summary_state(jid))
    if done.ended:
        return done
    store.set_job_state(jid, "canceled")
    revoked, running = 0, 0
    ids = []
    for t in store.tasks(jid):
        if t["state"] == "queued":
            new = store.update_task(jid, t["index"], t["attempt"], lambda r: {
                **r, "state": "canceled", "ended": time.time(), "status": "canceled"})
            if new is not None:
                revoked += 1
                ids.append(t["celery_id"])
        elif t["state"] == "running":
            running += 1
    if ids:
        app.control.revoke(ids)
    return done._replace(queued=revoked, running=running)


def retry(store: FarmStore, app: Celery, jid: str) -> Steered:
    """Queue the failed and canceled tasks of a job that ended again (fresh retries). A
    job still queued, running or canceling is refused; a succeeded one has nothing to
    retry and is left as it is."""
    job = store.job(jid)
    done = Steered(store.summary_state(jid))
    if not done.ended:
        raise BadInput(f"job {jid} is still {done.state}: retry it once it has ended "
                       f"(stmpo farm wait {jid})")
    if done.state == "succeeded":
        return done
    store.set_job_state(jid, "queued")
    store.set_active(jid, True)
    n = 0
    for t in store.tasks(jid):
        if t["state"] not in ("failed", "canceled"):
            continue
        new = store.update_task(jid, t["index"], t["attempt"], lambda r: {
            **r, "state": "queued", "attempt": r["attempt"] + 1, "celery_id": new_celery_id(),
            "failures": 0, "worker": None, "progress": 0.0, "status": "retry"})
        if new is not None:
            enqueue(app, job, new)
            n += 1
    return done._replace(queued=n)


def job_state_reader(url: str | None) -> Callable[[str], str | None]:
    """``job id -> its one-word state`` (None: no such job) from the farm Redis at ``url``
    (else the usual places), which must answer within a second."""
    from ._store import resolve_farm_url

    client = resolve_farm_url(url).client(timeout=1.0, connect_timeout=1.0, retries=0)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        raise EnvironmentProblem("the farm Redis does not answer") from None
    store = FarmStore(client)

    def state(jid: str) -> str | None:
        try:
            store.job(jid)
            return store.summary_state(jid)
        except (BadInput, redis.RedisError, OSError, ValueError):  # no such job, no answer
            return None

    return state


def removable(store: FarmStore, jid: str) -> dict[str, Any]:
    """The job, if it may be removed: it exists and has ended (else :class:`BadInput`)."""
    job = store.job(jid)
    state = store.summary_state(jid)
    if state not in ENDED:
        raise BadInput(f"job {jid} is still {state}: cancel it (stmpo farm cancel {jid}) "
                       f"and wait for it to end (stmpo farm wait {jid}) before removing it")
    return job


class Removed(NamedTuple):
    """What ``remove`` did with a job's folder."""

    folder: Path | None  #: the job's folder (None: the record names none)
    deleted: bool
    why: str = ""  #: why it was not deleted


def remove(store: FarmStore, jid: str) -> Removed:
    """Forget a job that has ended: its records leave the farm Redis and its job folder
    (project snapshot, task logs) is deleted; versions it published stay where they are.
    A job still queued, running or canceling is refused. Only the folder submit made for
    this job is deleted: a link, or a folder whose job.json names another job, is not."""
    job = removable(store, jid)
    store.remove_job(jid)
    raw = str(job.get("job_dir") or "")
    if not raw:
        return Removed(None, False, "the job names no folder")
    folder = Path(raw)
    if folder.is_symlink():
        return Removed(folder, False, "it is a link, not the folder submit made")
    try:
        ours = json.loads((folder / "job.json").read_text(encoding="utf-8")).get("id") == jid
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        return Removed(folder, False, f"it holds no job.json of job {jid}")
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        return Removed(folder, False, f"{exc.filename or folder}: {exc.strerror or exc}")
    return Removed(folder, True)


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def wait(store: FarmStore, jid: str, timeout: float | None, poll: float = 0.5,
         say: Callable[[str], None] = lambda _line: None) -> str:
    """Until the job ends: its final state. SIGINT/SIGTERM end the wait (130/143). A task
    whose worker is gone is said (``say``) once per attempt: the wait goes on, as the
    task runs again once a worker takes it."""
    store.job(jid)
    told: set[tuple[int, int]] = set()

    def stop(signum: int, _frame: Any) -> None:
        raise _Stop(signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            tasks = store.tasks(jid)
            state = job_summary_state(store.job_state(jid), tasks)
            if not any(t["state"] in ACTIVE for t in tasks):
                return state
            for t in tasks:
                if (t["index"], t["attempt"]) not in told and (why := worker_lost(store, t)):
                    told.add((t["index"], t["attempt"]))
                    say(f"job {jid} task {t['index']}: {why}")
            if deadline is not None and time.monotonic() > deadline:
                raise StmpoError(f"job {jid} still {state} after {timeout:g} s")
            time.sleep(poll)
    except _Stop as exc:
        code = ExitCode.INTERRUPTED if exc.signum == signal.SIGINT else ExitCode.TERMINATED
        raise StmpoError(f"stopped waiting for job {jid} (it goes on)", code) from None
    finally:
        for s, h in old.items():
            signal.signal(s, h)
