"""The run's first words to its broker, in ``stmpo render``: its clients, the event
subscription, the reaping of dead runs, its registry entry, the plan, the prior and the
chord.

They run on a thread of their own (:func:`open_broker`): a Redis that stops answering
while the run starts would otherwise hold it for as long as its sockets wait (kombu's
publish retries a 30 s read), and hold a cancel too — the signal handler only sets a
flag, and Python restarts a blocked socket read after it. The main thread waits for the
thread, a cancel or :data:`~stmpo_celery.config.defaults.START_BROKER_WAIT_S`, whichever
comes first; a thread still blocked is left behind (what it still writes expires).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..broker import (
    events,
    heartbeat,
    keys,
    owned_entry,
    server_id,
    try_reap,
    watch_client,
)
from ..config import defaults
from ..slot import register_plan, set_prior
from ._dispatch import RunQueue
from ._flowerrun import RunRow

if TYPE_CHECKING:
    from ._run import Run


def open_broker(run: Run, n_tasks: int) -> None:
    """Everything the run tells its broker before the slots get work (on the start
    thread, see the module docstring)."""
    assert run.broker is not None
    run.client = run.broker.client(timeout=10)
    run.watch_client = watch_client(run.broker)
    # a Redis that restarts mid-run lost the events sent while it was down, and what it
    # reloaded from disk may be older than the run: seen by its new run id, the run stops
    run.server = server_id(run.watch_client)
    # raw bytes: a message that is not UTF-8 is one bad event, not a dead run
    run.pubsub = run.broker.client(timeout=10, decode=False,
                                   ping_s=defaults.EVENTS_PING_S).pubsub(
        ignore_subscribe_messages=True)
    run.pubsub.subscribe(keys.events_channel(run.run_id))
    # Redis keeps no event for a subscriber that is away: once the connection that
    # carries them has broken (the client reconnects and resubscribes by itself), a
    # chunk's end may be lost and the run would wait for it for ever — it stops
    if run.pubsub.connection is not None:
        run.pubsub.connection.register_connect_callback(run._events_reconnected)
    if run.embedded is None:
        for run_id, why in try_reap(run.client, run.broker).items():
            run._say(f"removed the keys of dead run {run_id} ({why})")
    run.entry = heartbeat(run.client, run.run_id, owned_entry(events.registry_entry(
        run.run_id, run.host, run.queue, len(run.prep.to_render), len(run.plan.blocks),
        str(run.log_dir), **RunRow.registry_extra(run))))
    if run.plan.schedule == "adaptive":
        register_plan(run.client, run.run_id, run.plan.chunks)
        if run.history is not None:
            set_prior(run.client, run.run_id, run.history.costs)
    run.run_queue = RunQueue(run.broker, run.run_id, run.queue, run.host)
    for i, task_id in enumerate(run.run_queue.send_chord(range(n_tasks))):
        run.chunks[i].task_id = task_id
    run.entry = heartbeat(run.client, run.run_id, run.entry)  # the chord's keys too
