"""The orphan fence (runs in every slot process).

When the orchestrator dies, each slot's death watch deletes the run's keys from the
Redis. A thread of the slot that wrote after that (a renderer killed under it reports
a retry, the state heartbeat fires) would create a key nobody deletes and no heartbeat
expires. So the watch raises :data:`ORPHANED` before it kills anything: from then on
every command of the slot's own Redis client, the event thread and the chunk's return
to Celery park their thread for good (the watch ends the process), and the watch
deletes the keys once the commands already sent are answered.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

ORPHANED = threading.Event()  #: set by the death watch the moment the orchestrator is gone


def stop_if_orphaned() -> None:
    """Park the calling thread for good once the slot is orphaned: nothing it would do
    next reaches the Redis after the run's keys are deleted."""
    while ORPHANED.is_set():
        time.sleep(3600)


class _InFlight:
    """Commands of a fenced client sent and not yet answered."""

    def __init__(self) -> None:
        self.n = 0
        self.cond = threading.Condition()

    def add(self, k: int) -> None:
        with self.cond:
            self.n += k
            self.cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.n <= 0, timeout)


_IN_FLIGHT = _InFlight()


def fenced(client: redis.Redis) -> redis.Redis:
    """``client`` whose commands (pipelines included) park their thread once the slot is
    orphaned; :func:`wait_idle` waits for the ones already sent."""
    pool = client.connection_pool
    get, release = pool.get_connection, pool.release

    def get_connection(*args: Any, **kwargs: Any) -> Any:
        stop_if_orphaned()
        _IN_FLIGHT.add(1)
        try:
            conn = get(*args, **kwargs)
        except BaseException:
            _IN_FLIGHT.add(-1)
            raise
        if ORPHANED.is_set():  # fenced while this thread was getting its connection
            release(conn)
            _IN_FLIGHT.add(-1)
            stop_if_orphaned()
        return conn

    def release_connection(conn: Any) -> None:
        try:
            release(conn)
        finally:
            _IN_FLIGHT.add(-1)

    pool.get_connection = get_connection  # type: ignore[method-assign]
    pool.release = release_connection  # type: ignore[method-assign,assignment]
    return client


def wait_idle(timeout: float) -> bool:
    """Wait until every command the fenced clients sent is answered (after
    :data:`ORPHANED` is set no new one starts); False if some still are not."""
    return _IN_FLIGHT.wait_idle(timeout)
