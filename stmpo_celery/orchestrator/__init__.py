"""``stmpo render``'s own process: validation before anything starts, the slot pool,
the chord, following the run's events, progress output, teardown and the summary.

The orchestrator owns every process and every Redis key of a run until it exits.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import _history as history
    from ._run import Run
    from ._validate import Prepared, check_numbers, create_outputs, prepare

# Imported on first use: a command that never needs Celery never loads it.
_HOME = {
    "create_outputs": "._validate",
    "check_numbers": "._validate",
    "prepare": "._validate",
    "Prepared": "._validate",
    "Run": "._run",
}

__all__ = [
    "history",
    "create_outputs",
    "check_numbers",
    "prepare",
    "Prepared",
    "Run",
]


def __getattr__(name: str) -> Any:
    if name == "history":  # the re-render history, a module of its own
        return importlib.import_module("._history", __name__)
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
