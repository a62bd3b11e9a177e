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
* ``stmpo farm jobs|wait|cancel|retry`` and ``stmpo versions`` (anywhere): read or change
  the records in the farm Redis (:mod:`._store`) and the published versions on disk
  (:mod:`._versions`).

Every farm key, Celery's and kombu's included, lives under ``stmpo:farm:``: a Flower
built with that prefix (``stmpo farm flower``) shows the farm's tasks and render hosts.
"""
