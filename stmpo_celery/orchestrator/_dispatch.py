"""The orchestrator's side of the Celery queue: send the chord, purge, announce, clean.

The orchestrator never waits on a Celery result (it follows the run on its own event
channel), so its app neither subscribes to result channels nor unsubscribes on
garbage collection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import redis
from celery import Celery, chord
from kombu.utils.uuid import uuid

from ..broker import (
    FINALIZE,
    ON_CHUNK_ERROR,
    RENDER_CHUNK,
    BrokerUrl,
    delete_run,
    keys,
    make_app,
    offline,
    send_as_nodes,
)


class RunQueue:
    def __init__(self, broker: BrokerUrl, run_id: str, queue: str, host: str) -> None:
        self.run_id = run_id
        self.queue = queue
        self.host = host
        self.app: Celery = make_app(broker, run_id, queue)
        self.app.backend.on_task_call = lambda *_a, **_k: None
        self.app.backend.remove_pending_result = lambda result: result

    def send_chord(self, indices: Iterable[int]) -> list[str]:
        """``chord(group(render_chunk(i) for each chunk index), finalize)`` with the error
        callback on every header task; returns the header task ids, in order (known up
        front, so a stop can say which ended)."""
        ids = {i: uuid() for i in indices}
        header = [self.app.signature(RENDER_CHUNK, args=(self.run_id, i), queue=self.queue,
                                     task_id=task_id) for i, task_id in ids.items()]
        c = chord(header, self.app.signature(FINALIZE, queue=self.queue))
        c.link_error(self.app.signature(ON_CHUNK_ERROR))
        c.apply_async(queue=self.queue)
        return list(ids.values())

    def purge(self) -> None:
        with contextlib.suppress(Exception), self.app.connection_for_write() as conn:
            conn.default_channel.queue_purge(self.queue)

    def announce_revoked(self, stopped: Iterable[tuple[str, int, str]]) -> None:
        """Tell Flower that these chunks (``(task id, slot, text)``, each one that ran on a
        slot) were stopped: REVOKED with the reason, on the slot that ran it."""
        from ..broker import revoke_events

        send_as_nodes(self.app, [(keys.node_name(slot, self.run_id, self.host),
                                  revoke_events(task_id, text))
                                 for task_id, slot, text in stopped])

    def announce_offline(self, slots: Iterable[int], others: Iterable[str] = ()) -> None:
        """The run ended: its slots (and pseudo-workers such as the orchestrator's) go
        offline in Flower now, not after their heartbeats expire."""
        names = [keys.node_name(k, self.run_id, self.host) for k in slots] + list(others)
        send_as_nodes(self.app, [(name, [offline()]) for name in names])


def delete_run_keys(client: redis.Redis, run_id: str) -> None:
    """Every key of the run and its line in the host's run registry; a broker that is gone
    keeps them only until their TTL."""
    with contextlib.suppress(redis.RedisError, OSError):
        delete_run(client, run_id)
