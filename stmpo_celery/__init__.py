"""stmpo-celery: one render task, N pinned aerender slots on one host.

The front door is the ``stmpo`` command (:mod:`stmpo_celery.cli`); the exit codes and
error kinds it maps every failure to are here. The subpackages, each with a docstring
saying which process runs it, lowest first:

* :mod:`~stmpo_celery.config` — defaults < profile < ``STMPO_*`` < flags, one table;
* :mod:`~stmpo_celery.plan` — pure planning: frames, patterns, sizing, blocks, chunks, steals;
* :mod:`~stmpo_celery.aerender` — argv, log parsing, frames on disk, the simulator;
* :mod:`~stmpo_celery.host` — topology, the spawn plan, process trees, per-OS code;
* :mod:`~stmpo_celery.broker` — Redis, the key layout, the event protocol, the Celery app;
* :mod:`~stmpo_celery.slot` — what runs inside a slot process;
* :mod:`~stmpo_celery.monitor` — status, Flower, the host service, doctor;
* :mod:`~stmpo_celery.orchestrator` — ``stmpo render``'s own process;
* :mod:`~stmpo_celery.deadline` — the job bundle and job fonts;
* :mod:`~stmpo_celery.cli` — click commands only.
"""

# This module is the first of stmpo's code every process runs, and ``stmpo`` takes the
# cancel signals only once :mod:`stmpo_celery.cli` starts: it imports nothing, so the
# moment in which a Ctrl-C is still Python's own (a ``KeyboardInterrupt`` traceback) ends
# as soon as it can.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .errors import BadInput, EnvironmentProblem, ExitCode, StmpoError

__version__ = "0.1.0"

__all__ = ["BadInput", "EnvironmentProblem", "ExitCode", "StmpoError", "__version__"]


def __getattr__(name: str) -> object:
    """The error kinds, from :mod:`stmpo_celery.errors` on first use."""
    if name in __all__:
        from . import errors
        return getattr(errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
