"""stmpo-celery: one render task, N pinned aerender slots on one host.

The public surface is small: the ``stmpo`` command (:mod:`stmpo_celery.cli`), the
pure planning helpers (:mod:`stmpo_celery.plan`) and the
exit codes (:class:`stmpo_celery.errors.ExitCode`). Everything else is private to
the orchestrator and may change.
"""

__version__ = "0.1.0"
