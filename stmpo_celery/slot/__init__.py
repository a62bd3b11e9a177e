"""What runs inside a slot process: the lean launcher, the Celery tasks, one chunk's
aerender run, and the slot's live state reporting.

A slot is a Celery solo worker pinned to one CPU block, forked or exec'd by the
orchestrator. Nothing here runs in the orchestrator except reading :class:`RunSpec`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._main import preload, run_slot
    from ._schedule import (
        close_range,
        next_attempt,
        observed,
        register_plan,
        set_prior,
        set_retry,
        spare_tasks,
    )
    from ._spec import RunSpec

# Imported on first use: a command that never needs Celery never loads it.
_HOME = {
    "observed": "._schedule",
    "set_prior": "._schedule",
    "close_range": "._schedule",
    "next_attempt": "._schedule",
    "register_plan": "._schedule",
    "set_retry": "._schedule",
    "spare_tasks": "._schedule",
    "preload": "._main",
    "run_slot": "._main",
    "RunSpec": "._spec",
}

__all__ = [
    "observed",
    "set_prior",
    "close_range",
    "next_attempt",
    "register_plan",
    "set_retry",
    "spare_tasks",
    "preload",
    "run_slot",
    "RunSpec",
]


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
