"""Watching hosts and runs: ``stmpo status``, Flower (per run or host-wide, in its own
child process :mod:`.flower_main`), the host service (``stmpo host up|down``) and
``stmpo doctor``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._doctor import run_checks
    from ._flowerctl import (
        FlowerFlags,
        FlowerProcess,
        check_auth,
        check_bind,
        end_for_run,
        parse_bind,
        serves_at,
        start_flower,
    )
    from ._flowerctl import start_for_run as start_flower_for_run
    from ._hostdir import discover_broker, host_dir, read_broker_url
    from ._hostsvc import HostService
    from ._status import render_text, snapshot, sources

# Imported on first use: a command that never needs Celery never loads it.
_HOME = {
    "end_for_run": "._flowerctl",
    "read_broker_url": "._hostdir",
    "start_flower": "._flowerctl",
    "FlowerProcess": "._flowerctl",
    "start_flower_for_run": "._flowerctl",
    "check_auth": "._flowerctl",
    "check_bind": "._flowerctl",
    "parse_bind": "._flowerctl",
    "serves_at": "._flowerctl",
    "FlowerFlags": "._flowerctl",
    "discover_broker": "._hostdir",
    "host_dir": "._hostdir",
    "HostService": "._hostsvc",
    "render_text": "._status",
    "run_checks": "._doctor",
    "snapshot": "._status",
    "sources": "._status",
}

__all__ = [
    "end_for_run",
    "read_broker_url",
    "start_flower",
    "FlowerProcess",
    "start_flower_for_run",
    "check_auth",
    "check_bind",
    "parse_bind",
    "serves_at",
    "FlowerFlags",
    "discover_broker",
    "host_dir",
    "HostService",
    "render_text",
    "run_checks",
    "snapshot",
    "sources",
]


__getattr__ = lazy_exports(__name__, _HOME, {"start_flower_for_run": "start_for_run"})
