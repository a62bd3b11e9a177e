"""Slot -> orchestrator events: one JSON message per PUBLISH on the run's channel."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from . import keys


def publish(client: redis.Redis, run_id: str, kind: str, **fields: Any) -> None:
    msg = {"t": kind, "ts": time.time(), **fields}
    client.publish(keys.events_channel(run_id), json.dumps(msg))


def decode(raw: Any) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return data if isinstance(data, dict) and "t" in data else None


def registry_entry(run_id: str, host: str, queue: str, frames: int, slots: int,
                   log_dir: str, **extra: Any) -> str:
    """The host registry's record of a live run (read by ``stmpo status``); ``extra``:
    project, comp, pid, state, frames_done, eta_s (see ``orchestrator._flowerrun``)."""
    return json.dumps({"run": run_id, "host": host, "queue": queue, "frames": frames,
                       "slots": slots, "log_dir": log_dir, "started": time.time(), **extra})
