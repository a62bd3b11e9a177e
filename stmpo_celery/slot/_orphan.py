"""What an orphaned slot says before it goes (runs in the slot's death watch).

When the orchestrator is killed outright, nobody else is left to end the run where
people look at it. Before the slot deletes the run's keys it:

* moves the run's record to the ended runs as ``dead`` (on a host service's Redis,
  where ``stmpo status`` lists ended runs for an hour), instead of letting it vanish;
* ends the run's row in Flower as failed (the row's task id is in the record), stops
  its own chunk there (REVOKED, with the reason), and takes its node and the
  orchestrator's offline.

Every slot of the run does this; the first one finds the record, the others only end
their own chunk and node. Everything is best effort: the keys are deleted regardless.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import redis

from ..broker import close_row, keys, offline, revoke_events, send_as_nodes
from ._spec import RunSpec


def mourn(client: redis.Redis, app: Any, spec: RunSpec, slot: int,
          task_id: str | None) -> None:
    """See the module docstring. ``task_id``: the chunk this slot was running."""
    reason = "its orchestrator was killed"
    entry: dict[str, Any] = {}
    with contextlib.suppress(redis.RedisError, ValueError, TypeError):
        raw = client.hget(keys.REGISTRY, spec.run_id)
        entry = json.loads(raw) if raw else {}
        if entry and client.exists(keys.HOST_SERVICE):
            entry.update(state=keys.RunState.DEAD, ended=time.time(), eta_s=None,
                         reason=f"DEAD: {reason}")
            client.hset(keys.ENDED, spec.run_id, json.dumps(entry))
    if app is None:
        return
    me = keys.node_name(slot, spec.run_id, spec.host)
    sends: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = []
    if task_id:
        sends.append((me, revoke_events(task_id, f"STOPPED on slot {slot}: {reason}")))
    sends += close_row(client, spec.run_id, entry,
                       f"DEAD: {reason}; the slots stopped their renderers")
    sends.append((me, [offline()]))
    send_as_nodes(app, sends)
