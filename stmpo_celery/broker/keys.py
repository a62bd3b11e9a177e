"""Names of everything a run puts in Redis (pure).

Every key of a run starts with ``stmpo:<run-id>:`` — Celery's and kombu's own keys
too, through their ``global_keyprefix`` option — so cleanup is one prefix scan and
two runs on one Redis never see each other's queues, results or control messages.
The only keys outside that prefix are the host's run registry, ``stmpo:runs``, whose
field for the run is removed at the end, and the comps' frame-cost history,
``stmpo:history`` (kept on purpose: the next render of a comp plans from it).
"""

from __future__ import annotations

import re
import socket

REGISTRY = "stmpo:runs"
HISTORY = "stmpo:history"  #: hash: history key -> JSON frame costs (orchestrator._history)


def host_name() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "host"


def prefix(run_id: str) -> str:
    return f"stmpo:{run_id}:"


def queue(run_id: str, host: str | None = None) -> str:
    return f"stmpo.{host or host_name()}.{run_id}"


def node_name(slot: int, run_id: str, host: str | None = None) -> str:
    return f"slot{slot}.{run_id}@{host or host_name()}"


def events_channel(run_id: str) -> str:
    return f"stmpo:{run_id}:x:events"


def abort_key(run_id: str) -> str:
    return f"stmpo:{run_id}:x:abort"


def state_key(run_id: str) -> str:
    """Hash: ``slot<K>`` -> the slot's live JSON state, and ``frames_done`` (``stmpo status``)."""
    return f"stmpo:{run_id}:x:state"


def sched_key(run_id: str, name: str) -> str:
    return f"stmpo:{run_id}:x:sched:{name}"
