"""The Celery app of one run: settings that make slots safe to kill and fast to stop."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

from celery import Celery

from ..config import defaults
from . import keys
from ._redis import BrokerUrl
from ._tls import celery_ssl, without_tls_query

RENDER_CHUNK = "stmpo.render_chunk"
FINALIZE = "stmpo.finalize"
ON_CHUNK_ERROR = "stmpo.on_chunk_error"


def make_app(broker: BrokerUrl, run_id: str, queue: str) -> Celery:
    prefix = keys.prefix(run_id)
    ct = defaults.CONNECT_TIMEOUT_S
    # TLS as settings, never left to the URL: kombu connects a rediss:// URL without
    # checking the server's certificate unless it is told to (see _tls)
    app = Celery("stmpo", broker=without_tls_query(broker.url),
                 backend=without_tls_query(broker.backend_url), set_as_current=False)
    if (tls := celery_ssl(broker.url)) is not None:
        app.conf.update(broker_use_ssl=tls, redis_backend_use_ssl=tls)
    app.conf.update(
        # JSON only: pickle is refused on both sides.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        # One chunk in flight per slot; a killed chunk is never silently redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        task_default_queue=queue,
        task_create_missing_queues=True,
        # Fail fast: header tasks' errbacks fire at once, inside the failing slot.
        task_allow_error_cb_on_chord_header=True,
        # Every key of the run under one prefix; never redeliver a long chunk.
        broker_transport_options={
            "global_keyprefix": prefix,
            "visibility_timeout": defaults.VISIBILITY_TIMEOUT_S,
            "socket_connect_timeout": ct,
            "socket_timeout": 30,
            "health_check_interval": 10,
        },
        result_backend_transport_options={
            "global_keyprefix": prefix,
            "retry_policy": {"timeout": 5.0},
        },
        redis_socket_connect_timeout=ct,
        redis_socket_timeout=30,
        broker_connection_timeout=ct,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=5,
        # A result expires like every key of the run: written with the TTL each beat
        # renews, so a run killed between two beats leaves no result without one.
        result_expires=defaults.RUN_KEY_TTL_S,
        result_extended=True,
        # Flower and `stmpo status` see what runs where.
        worker_send_task_events=True,
        # No task-sent events (from the orchestrator, nor from a slot that sends the
        # chord body or a retry): Flower would list every message as a PENDING row,
        # spares that never run and the chord body included. A slot shows what it runs.
        task_send_sent_event=False,
        task_track_started=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_enable_remote_control=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    return app


def send_as_nodes(app: Celery,
                  sends: Iterable[tuple[str, Sequence[tuple[str, dict[str, Any]]]]]) -> None:
    """Send Flower each ``(node, [(event kind, fields), ...])`` as that node, over one
    connection. Best effort: Flower is a view, and whoever calls this is ending."""
    sends = list(sends)
    if not sends:
        return
    with contextlib.suppress(Exception), app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=2)
        for node, events in sends:
            dispatcher = app.events.Dispatcher(conn, hostname=node, enabled=True)
            for kind, fields in events:
                dispatcher.send(kind, retry=False, **fields)
            dispatcher.close()


def revoke_events(task_id: str, result: str) -> list[tuple[str, dict[str, Any]]]:
    """Events that end a task as REVOKED in Flower, whatever state it showed.

    Celery's event state ranks REVOKED *below* the custom PROGRESS state (a revoke
    arriving after progress would be merged as if it happened before, and the task would
    stay PROGRESS forever); only RETRY resets that order. So a stopped chunk gets a
    ``task-retried`` and then its ``task-revoked``, both carrying the reason.
    """
    return [("task-retried", {"uuid": task_id, "exception": result, "traceback": "",
                              "result": result}),
            ("task-revoked", {"uuid": task_id, "terminated": True, "signum": "SIGKILL",
                              "expired": False, "result": result, "exception": result})]


def offline() -> tuple[str, dict[str, Any]]:
    """A node going offline with no task active (Flower keeps the last heartbeat's count
    otherwise, and its Active card adds up tasks nobody runs)."""
    return ("worker-offline", {"active": 0})


def row_failed(row: str, text: str) -> list[tuple[str, dict[str, Any]]]:
    """A dead run's row in Flower: FAILED with ``text``; its node offline."""
    return [("task-failed", {"uuid": row, "exception": text, "traceback": text,
                             "result": text}), offline()]
