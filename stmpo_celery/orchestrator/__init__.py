"""``stmpo render``'s own process: validation before anything starts, the slot pool,
the chord, following the run's events, progress output, teardown and the summary.

The orchestrator owns every process and every Redis key of a run until it exits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import MODULE, lazy_exports

if TYPE_CHECKING:
    from . import _history as history
    from ._logdir import check_log_dir
    from ._logdir import default_root as default_log_root
    from ._run import Run
    from ._validate import Prepared, check_numbers, create_outputs, prepare

# Imported on first use: a command that never needs Celery never loads it.
_HOME = {
    "history": "._history",
    "create_outputs": "._validate",
    "check_numbers": "._validate",
    "prepare": "._validate",
    "Prepared": "._validate",
    "Run": "._run",
    "default_log_root": "._logdir",
    "check_log_dir": "._logdir",
}

__all__ = [
    "history",
    "create_outputs",
    "check_numbers",
    "prepare",
    "Prepared",
    "Run",
    "default_log_root",
    "check_log_dir",
]


__getattr__ = lazy_exports(__name__, _HOME, {"history": MODULE,
                                             "default_log_root": "default_root"})
