"""Put a dead slot's chunk back on the queue ourselves, instead of kombu's redelivery.

kombu keeps a delivered, unacknowledged message in the run's ``unacked`` hash and
would redeliver it only after the visibility timeout (set far beyond any chunk).
When the orchestrator sees a slot die it moves that message back to the head of the
queue at once — same task id, so the chord still counts it once — and removes it
from ``unacked`` so it can never be delivered twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import redis

from ..aerender import missing_frames
from ..plan import OutputPattern
from . import keys


def requeue_unacked(client: redis.Redis, run_id: str, queue: str, task_id: str) -> bool:
    unacked, index = keys.unacked_keys(run_id)
    for tag, raw in client.hscan_iter(unacked):
        try:
            payload, _exchange, _routing_key = json.loads(raw)
            found = payload.get("headers", {}).get("id") == task_id
        except (ValueError, TypeError, AttributeError):
            continue
        if found:
            pipe = client.pipeline(transaction=True)
            # consumers BRPOP from the right: the chunk is next up
            pipe.rpush(keys.queue_key(run_id, queue), json.dumps(payload))
            pipe.hdel(unacked, tag)
            pipe.zrem(index, tag)
            pipe.execute()
            return True
    return False


def missing_frames_suspect(pattern: OutputPattern, frames: Iterable[int],
                           reported: set[int]) -> list[int]:
    """Frames on disk that no log line reported done: written by a dying renderer."""
    frames = list(frames)
    absent = set(missing_frames(pattern, frames))
    return [f for f in frames if f not in absent and f not in reported]
