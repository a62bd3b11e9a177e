"""The farm's Celery app: one queue every render host consumes, one task at a time.

It is the run app of :func:`broker._app.make_app` (JSON only, ``acks_late``, prefetch 1,
every key under a prefix) with the prefix ``stmpo:farm:`` and message priorities.
Submitters send tasks by name; only ``stmpo farm worker`` registers the task body.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery

from ..broker import BrokerUrl, make_app
from ..config import defaults
from ._store import FARM_ID

TASK = "stmpo.farm.task"


def make_farm_app(broker: BrokerUrl) -> Celery:
    app = make_app(broker, FARM_ID, defaults.FARM_QUEUE)
    opts = dict(app.conf.broker_transport_options)
    # Redis has no native priorities: kombu keeps one list per priority step.
    opts.update(priority_steps=list(range(10)), queue_order_strategy="priority")
    app.conf.update(
        broker_transport_options=opts,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_default_priority=redis_priority(defaults.FARM_PRIORITY),
        # a render host is a long-lived service: keep retrying a lost Redis
        broker_connection_max_retries=None,
        result_expires=24 * 3600,  # results only serve monitoring; the records are the truth
        # a lost connection must not try to kill the running task (the threads pool cannot;
        # its OpenJD session goes on and reports once Redis is back)
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


def redis_priority(priority: int) -> int:
    """Farm priority 0-100 (higher first) -> kombu's Redis priority 0-9 (lower first)."""
    return max(0, min(9, (100 - int(priority)) // 10))


def task_label(step: str, params: dict[str, Any]) -> str:
    """``Frame=1-25`` (what Flower's args column and ``stmpo farm jobs`` show)."""
    return ",".join(f"{k}={v['value']}" for k, v in params.items()) or step


def enqueue(app: Celery, job: dict[str, Any], task: dict[str, Any]) -> str:
    """Send one task's message (a fresh id per attempt); returns the Celery id."""
    cid = task.get("celery_id") or str(uuid.uuid4())
    app.send_task(TASK, args=[job["id"], task["step"], task["label"]],
                  kwargs={"index": task["index"], "attempt": task["attempt"]},
                  task_id=cid, queue=defaults.FARM_QUEUE, shadow=shadow_name(job, task),
                  priority=redis_priority(job.get("priority", defaults.FARM_PRIORITY)))
    return cid


def shadow_name(job: dict[str, Any], task: dict[str, Any]) -> str:
    """The name Flower and worker logs show: ``job 3f9c0a1e RenderImageSequence Frame=1-25``."""
    return f"job {job['id']} {task['step']} {task['label']}"


def new_celery_id() -> str:
    return str(uuid.uuid4())
