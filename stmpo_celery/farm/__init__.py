"""A miniature render farm: jobs submitted once, tasks pulled by whichever host is free.

What runs where:

* ``stmpo farm submit`` (the artist's or pipeline's machine): expands an OpenJD job
  bundle into tasks with openjd-model, copies the project into the job's folder (scene
  protection, :mod:`._snapshot`), records the job in the farm Redis and puts one Celery
  message per task on the farm queue (:mod:`._submit`). Nothing renders there.
* ``stmpo farm worker`` (each render host): a Celery worker taking one task at a time
  (``acks_late``, prefetch 1), running it with the OpenJD sessions runtime like a Deadline
  worker agent (:mod:`._session`: environments entered and exited, ``openjd_progress``
  turned into task progress, cancel by NOTIFY_THEN_TERMINATE). It says it is alive every
  few seconds; any worker requeues the task of a worker that went silent (:mod:`._worker`).
  A guard process per worker stops a dead worker's render (:mod:`._guard`).
* ``stmpo farm jobs|wait|cancel|retry|remove`` and ``stmpo versions`` (anywhere): read or change
  the records in the farm Redis (:mod:`._store`) and the published versions on disk
  (:mod:`._versions`).

Every farm key, Celery's and kombu's included, lives under ``stmpo:farm:``: a Flower
built with that prefix (``stmpo farm flower``) shows the farm's tasks and render hosts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._app import make_farm_app
    from ._control import cancel, job_state_reader, jobs, removable, remove, retry, wait
    from ._store import FARM_ID, FarmStore, farm_dir, resolve_farm_url
    from ._submit import check_submit_options, submit
    from ._versions import list_versions, set_status
    from ._worker import run_worker

# Imported on first use: a command that never needs Celery never loads it.
_HOME = {
    "FARM_ID": "._store",
    "FarmStore": "._store",
    "cancel": "._control",
    "check_submit_options": "._submit",
    "farm_dir": "._store",
    "job_state_reader": "._control",
    "jobs": "._control",
    "list_versions": "._versions",
    "make_farm_app": "._app",
    "removable": "._control",
    "remove": "._control",
    "resolve_farm_url": "._store",
    "retry": "._control",
    "run_worker": "._worker",
    "set_status": "._versions",
    "submit": "._submit",
    "wait": "._control",
}

__all__ = [
    "FARM_ID",
    "FarmStore",
    "cancel",
    "check_submit_options",
    "farm_dir",
    "job_state_reader",
    "jobs",
    "list_versions",
    "make_farm_app",
    "removable",
    "remove",
    "resolve_farm_url",
    "retry",
    "run_worker",
    "set_status",
    "submit",
    "wait",
]


__getattr__ = lazy_exports(__name__, _HOME)
