"""The farm's records in Redis: jobs, their tasks, live workers (one client, no Celery).

Layout (all under :data:`PREFIX`, beside Celery's own keys)::

    x:jobs                 ZSET  job id -> submit time
    x:active               SET   jobs that may have queued or running tasks
    x:job:<id>             STRING JSON: the job (bundle, parameters, snapshot, publish, ...)
    x:job:<id>:state       STRING queued | canceled (tasks carry the rest)
    x:job:<id>:tasks       HASH  task index -> JSON task record
    x:job:<id>:done        SET   indexes of succeeded tasks (the last one publishes)
    x:worker:<name>        STRING JSON, expires: a live farm worker

A task record changes only through :meth:`FarmStore.update_task`, a compare-and-set on
the record's ``attempt``: a stale worker (killed, then redelivered) cannot overwrite the
attempt that replaced it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from ..broker import BrokerUrl, parse_broker_url
from ..config import defaults
from ..errors import BadInput, EnvironmentProblem

PREFIX = "stmpo:farm:"
_JOB_ID = re.compile(r"[0-9a-f]{8}")  #: what :func:`new_job_id` makes
FARM_ID = "farm"  #: keys.prefix(FARM_ID) == PREFIX: Flower and the app use it
ACTIVE = ("queued", "running")
ENDED = ("succeeded", "failed", "canceled")


def new_job_id() -> str:
    return secrets.token_hex(4)


def resolve_farm_url(url: str | None) -> BrokerUrl:
    """``--farm``, else ``$STMPO_FARM_URL``, else the host service's Redis."""
    from ..monitor import read_broker_url

    if url is not None and not url.strip():
        raise BadInput(f"--farm is empty: pass the farm Redis URL (redis://HOST:6379/0), or "
                       f"leave it out to use {defaults.FARM_URL_ENV}")
    url = url or os.environ.get(defaults.FARM_URL_ENV) or read_broker_url()
    if not url:
        raise BadInput(f"no farm Redis: pass --farm redis://HOST:6379/0, set "
                       f"{defaults.FARM_URL_ENV}, or start one with 'stmpo host up'")
    return parse_broker_url(url)


def farm_dir(path: str | None = None) -> Path:
    """Where job folders go: ``--farm-dir``, ``$STMPO_FARM_DIR``, else ``<host dir>/farm``."""
    from ..monitor import host_dir

    chosen = path or os.environ.get(defaults.FARM_DIR_ENV)
    return Path(chosen).resolve() if chosen else host_dir() / "farm"


@dataclass
class FarmStore:
    client: redis.Redis

    @classmethod
    def connect(cls, broker: BrokerUrl) -> FarmStore:
        probe = broker.client(timeout=defaults.CONNECT_TIMEOUT_S)  # fail fast, as render does
        try:
            probe.ping()
        except (redis.RedisError, OSError) as exc:
            raise EnvironmentProblem(f"the farm Redis does not answer ({exc}): check --farm "
                                     f"or {defaults.FARM_URL_ENV}") from None
        finally:
            probe.close()
        return cls(broker.client(timeout=10.0))

    # -- keys ---------------------------------------------------------------------
    @staticmethod
    def key(*parts: str) -> str:
        return PREFIX + "x:" + ":".join(parts)

    # -- jobs ---------------------------------------------------------------------
    def add_job(self, job: dict[str, Any], tasks: list[dict[str, Any]]) -> None:
        jid = job["id"]
        pipe = self.client.pipeline()
        pipe.set(self.key("job", jid), json.dumps(job))
        pipe.set(self.key("job", jid, "state"), "queued")
        pipe.hset(self.key("job", jid, "tasks"),
                  mapping={str(t["index"]): json.dumps(t) for t in tasks})
        pipe.zadd(self.key("jobs"), {jid: job["submitted"]})
        pipe.sadd(self.key("active"), jid)
        pipe.execute()

    def remove_job(self, jid: str) -> None:
        """Delete every record of the job."""
        pipe = self.client.pipeline()
        pipe.delete(self.key("job", jid), self.key("job", jid, "state"),
                    self.key("job", jid, "tasks"), self.key("job", jid, "done"))
        pipe.zrem(self.key("jobs"), jid)
        pipe.srem(self.key("active"), jid)
        pipe.execute()

    def job(self, jid: str) -> dict[str, Any]:
        if not _JOB_ID.fullmatch(jid):  # a key of its own, not a part of another's
            raise BadInput(f"no farm job {jid!r}: see 'stmpo farm jobs'")
        raw = self.client.get(self.key("job", jid))
        if raw is None:
            raise BadInput(f"no farm job {jid!r}: see 'stmpo farm jobs'")
        out: dict[str, Any] = json.loads(str(raw))
        return out

    def job_ids(self) -> list[str]:
        return [str(j) for j in self.client.zrange(self.key("jobs"), 0, -1)]

    def job_state(self, jid: str) -> str:
        return str(self.client.get(self.key("job", jid, "state")) or "queued")

    def summary_state(self, jid: str) -> str:
        """The job's one word (:func:`job_summary_state`) from its state and tasks."""
        return job_summary_state(self.job_state(jid), self.tasks(jid))

    def set_job_state(self, jid: str, state: str) -> None:
        self.client.set(self.key("job", jid, "state"), state)

    def active_jobs(self) -> list[str]:
        """Jobs that may still have queued or running tasks (the reaper's worklist)."""
        return sorted(str(j) for j in self.client.smembers(self.key("active")))

    def set_active(self, jid: str, active: bool) -> None:
        if active:
            self.client.sadd(self.key("active"), jid)
        else:
            self.client.srem(self.key("active"), jid)

    def tasks(self, jid: str) -> list[dict[str, Any]]:
        raw = self.client.hgetall(self.key("job", jid, "tasks"))
        return sorted((json.loads(v) for v in raw.values()), key=lambda t: t["index"])

    def task(self, jid: str, index: int) -> dict[str, Any]:
        raw = self.client.hget(self.key("job", jid, "tasks"), str(index))
        if raw is None:
            raise BadInput(f"job {jid} has no task {index}")
        out: dict[str, Any] = json.loads(str(raw))
        return out

    def update_task(self, jid: str, index: int, attempt: int | None,
                    change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> \
            dict[str, Any] | None:
        """Apply ``change`` to the task if its attempt is still ``attempt`` (None: any).

        ``change`` returns the new record, or None to leave it. Returns the new record or
        None when nothing changed.
        """
        key = self.key("job", jid, "tasks")
        result: list[dict[str, Any] | None] = [None]

        def txn(pipe: Any) -> None:
            raw = pipe.hget(key, str(index))
            if raw is None:
                return
            rec = json.loads(raw)
            if attempt is not None and rec.get("attempt") != attempt:
                return
            new = change(dict(rec))
            if new is None:
                return
            pipe.multi()
            pipe.hset(key, str(index), json.dumps(new))
            result[0] = new

        self.client.transaction(txn, key)
        return result[0]

    def mark_done(self, jid: str, index: int) -> int:
        """Record a succeeded task; the number of succeeded tasks, counted atomically."""
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(self.key("job", jid, "done"), str(index))
        pipe.scard(self.key("job", jid, "done"))
        added, count = pipe.execute()
        return int(count) if added else -1

    def clear_done(self, jid: str) -> None:
        self.client.delete(self.key("job", jid, "done"))

    # -- workers ------------------------------------------------------------------
    def heartbeat(self, name: str, instance: str, info: dict[str, Any]) -> None:
        """``name`` and this worker process (``instance``) live, for the next few seconds.
        Tasks are held by an instance: a worker restarted under its name, or another
        started with the same name, does not keep a dead one's tasks alive."""
        ttl = max(1, int(round(defaults.FARM_DEAD_AFTER_S)))
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.key("worker", name),
                 json.dumps({**info, "instance": instance, "seen": time.time()}), ex=ttl)
        pipe.set(self.key("instance", instance), name, ex=ttl)
        pipe.execute()

    def holder_alive(self, task: dict[str, Any]) -> bool:
        """Whether the worker process running ``task`` still lives."""
        if task.get("instance"):
            return bool(self.client.exists(self.key("instance", str(task["instance"]))))
        return self.worker_alive(str(task["worker"]))  # a record from before instances

    def worker_alive(self, name: str) -> bool:
        return bool(self.client.exists(self.key("worker", name)))

    def worker(self, name: str) -> dict[str, Any] | None:
        """What the live worker of that name last said (host, pid, instance), or None."""
        raw = self.client.get(self.key("worker", name))
        with contextlib.suppress(ValueError, TypeError):
            info = json.loads(str(raw)) if raw else None
            return info if isinstance(info, dict) else None
        return None

    def forget_worker(self, name: str, instance: str) -> None:
        self.client.delete(self.key("instance", instance))
        info = self.worker(name)
        if info is None or info.get("instance") == instance:  # not another one's of that name
            self.client.delete(self.key("worker", name))

    def workers(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key in self.client.scan_iter(match=self.key("worker", "*")):
            raw = self.client.get(key)
            if raw:
                out[str(key).rsplit(":", 1)[1]] = json.loads(str(raw))
        return out


def job_summary_state(job_state: str, tasks: list[dict[str, Any]]) -> str:
    """One word for a job: queued, running, canceling, canceled, failed, succeeded (pure)."""
    states = [t["state"] for t in tasks]
    active = any(s in ACTIVE for s in states)
    if job_state == "canceled":
        return "canceling" if any(s == "running" for s in states) else "canceled"
    if active:
        return "running" if any(s in ("running", "succeeded", "failed") for s in states) \
            else "queued"
    if tasks and all(s == "succeeded" for s in states):
        return "succeeded"
    return "failed"
