"""What runs inside a slot process: the lean launcher, the Celery tasks, one chunk's
aerender run, and the slot's live state reporting.

A slot is a Celery solo worker pinned to one CPU block, forked or exec'd by the
orchestrator. Nothing here runs in the orchestrator except reading :class:`RunSpec`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._ledger import Entry as LedgerEntry
    from ._ledger import settle as settle_ledgers
    from ._ledger import state_dir, write_state
    from ._ledger import state_dir as ledger_dir
    from ._main import preload, run_slot
    from ._monitor import task_args
    from ._schedule import (
        close_range,
        mark_finished,
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
    "ledger_dir": "._ledger",
    "LedgerEntry": "._ledger",
    "settle_ledgers": "._ledger",
    "state_dir": "._ledger",
    "write_state": "._ledger",
    "task_args": "._monitor",
    "observed": "._schedule",
    "set_prior": "._schedule",
    "close_range": "._schedule",
    "mark_finished": "._schedule",
    "next_attempt": "._schedule",
    "register_plan": "._schedule",
    "set_retry": "._schedule",
    "spare_tasks": "._schedule",
    "preload": "._main",
    "run_slot": "._main",
    "RunSpec": "._spec",
}

#: front-door names that differ from their module's own
_ALIASES = {"ledger_dir": "state_dir", "settle_ledgers": "settle", "LedgerEntry": "Entry"}

__all__ = [
    "ledger_dir",
    "LedgerEntry",
    "settle_ledgers",
    "state_dir",
    "write_state",
    "task_args",
    "observed",
    "set_prior",
    "close_range",
    "mark_finished",
    "next_attempt",
    "register_plan",
    "set_retry",
    "spare_tasks",
    "preload",
    "run_slot",
    "RunSpec",
]


__getattr__ = lazy_exports(__name__, _HOME, _ALIASES)
