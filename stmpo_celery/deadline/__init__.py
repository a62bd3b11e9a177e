"""Deadline Cloud: the job bundle writer (``stmpo bundle``) and job fonts with
per-session leases (``stmpo fonts``).

Runs on the submitting machine (bundle) and inside OpenJD environment actions on the
worker (fonts).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._bundle import IMAGE, plan_bundle, task_ranges, write_bundle
    from ._fonts import fonts_group

# Imported on first use: a command that never needs Celery never loads it.
_HOME = {
    "fonts_group": "._fonts",
    "IMAGE": "._bundle",
    "plan_bundle": "._bundle",
    "task_ranges": "._bundle",
    "write_bundle": "._bundle",
}

__all__ = [
    "fonts_group",
    "IMAGE",
    "plan_bundle",
    "task_ranges",
    "write_bundle",
]


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
