"""Redis and Celery: broker URLs and the embedded server, the run's key layout, the
typed slot <-> orchestrator events (:mod:`.events`), the Celery app, and redelivery of a
dead slot's chunk. :mod:`.keys` and :mod:`.events` are public modules: the protocol.

Imported by the orchestrator and by every slot; nothing here starts a process except
:class:`EmbeddedRedis`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._app import (
        FINALIZE,
        ON_CHUNK_ERROR,
        RENDER_CHUNK,
        make_app,
        offline,
        revoke_events,
        send_as_nodes,
    )
    from ._liveness import (
        close_row,
        delete_run,
        delete_run_until_quiet,
        expire_orphans,
        heartbeat,
        judge,
        owned_entry,
        reap_dead_runs,
        say_farewell,
        server_id,
        still_there,
        try_reap,
        watch_client,
    )
    from ._redelivery import missing_frames_suspect, requeue_unacked
    from ._redis import (
        BrokerUrl,
        EmbeddedRedis,
        check_reachable,
        find_redis_server,
        mask_url,
        no_redis_server_problem,
        parse_broker_url,
        url_secrets,
    )
    from ._waits import Waited, bounded, until_done

# Imported on first use: a command that never needs Celery never loads it.
_HOME = {
    "delete_run": "._liveness",
    "delete_run_until_quiet": "._liveness",
    "expire_orphans": "._liveness",
    "heartbeat": "._liveness",
    "judge": "._liveness",
    "no_redis_server_problem": "._redis",
    "owned_entry": "._liveness",
    "close_row": "._liveness",
    "reap_dead_runs": "._liveness",
    "say_farewell": "._liveness",
    "server_id": "._liveness",
    "still_there": "._liveness",
    "try_reap": "._liveness",
    "watch_client": "._liveness",
    "url_secrets": "._redis",
    "BrokerUrl": "._redis",
    "check_reachable": "._redis",
    "EmbeddedRedis": "._redis",
    "FINALIZE": "._app",
    "find_redis_server": "._redis",
    "make_app": "._app",
    "offline": "._app",
    "revoke_events": "._app",
    "send_as_nodes": "._app",
    "mask_url": "._redis",
    "missing_frames_suspect": "._redelivery",
    "ON_CHUNK_ERROR": "._app",
    "parse_broker_url": "._redis",
    "RENDER_CHUNK": "._app",
    "requeue_unacked": "._redelivery",
    "bounded": "._waits",
    "until_done": "._waits",
    "Waited": "._waits",
}

__all__ = [
    "delete_run",
    "delete_run_until_quiet",
    "expire_orphans",
    "heartbeat",
    "judge",
    "no_redis_server_problem",
    "owned_entry",
    "close_row",
    "reap_dead_runs",
    "say_farewell",
    "server_id",
    "still_there",
    "try_reap",
    "watch_client",
    "url_secrets",
    "BrokerUrl",
    "check_reachable",
    "EmbeddedRedis",
    "FINALIZE",
    "find_redis_server",
    "make_app",
    "offline",
    "revoke_events",
    "send_as_nodes",
    "mask_url",
    "missing_frames_suspect",
    "ON_CHUNK_ERROR",
    "parse_broker_url",
    "RENDER_CHUNK",
    "requeue_unacked",
    "bounded",
    "until_done",
    "Waited",
]


__getattr__ = lazy_exports(__name__, _HOME)
