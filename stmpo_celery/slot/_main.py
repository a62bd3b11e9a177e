"""A slot: pin, arm the parent-death watch, run one solo-pool Celery worker.

Two ways in, one body (:func:`run_slot`): forked from the orchestrator on Linux (the
orchestrator has already imported Celery, so N slots are ready in a fraction of the
time), or exec'd as ``python -m stmpo_celery.slot._main SPEC SLOT 0 CPUS STDERR_LOG`` —
the lean launcher used on Windows, macOS, in the portable start method and for
replacement slots; an exec'd slot's death pipe is its stdin (the orchestrator holds the
write end). Pinning happens before the worker starts and is inherited by aerender and
its renderer.
No ``celery`` CLI: it imports click and plugins and costs ~0.5 s of CPU per slot.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._chunk import SlotContext
    from ._spec import RunSpec


def _pin(cpus_arg: str) -> str | None:
    if not cpus_arg:
        return None
    from ..host import pin_current_process

    return pin_current_process({int(c) for c in cpus_arg.split(",") if c})


def run_slot(spec_path: str, slot: int, death_fd: int, cpus_arg: str) -> int:
    pin_problem = _pin(cpus_arg)

    import shutil

    from ..broker import bounded
    from ..config import defaults
    from ..host import RUN_DIR_ENV, become_subreaper, set_process_name, start_deathwatch
    from ._fence import ORPHANED, fenced, wait_idle

    set_process_name(f"stmpo-slot{slot}")  # what `top` and `ps -o comm` show

    # If the orchestrator dies (even SIGKILL) its private run dir (socket, spec) goes too,
    # and so do the run's keys on an external Redis (else they expire with no heartbeat).
    run_dir = os.path.dirname(os.path.abspath(spec_path))
    os.environ[RUN_DIR_ENV] = run_dir  # inherited by every renderer: see reap_run_dirs
    spec: RunSpec | None = None  # read below; orphaned() sees them once they are
    ctx: SlotContext | None = None
    app: Any = None

    def orphaned() -> None:
        # Our renderers are dead (the watch killed them first): the frames they had in
        # flight may be half-written, and no orchestrator is left to delete them.
        if spec is not None:
            from ..plan import OutputPattern
            from ._ledger import settle, state_dir

            mine, run_id = f"-slot{slot}-{os.getpid()}-", spec.run_id
            settle(state_dir(OutputPattern(spec.target.output)),
                   lambda e: e.run_id == run_id and mine in e.path.name)
        shutil.rmtree(run_dir, ignore_errors=True)
        if spec is not None:
            from ..broker import BrokerUrl as Url
            from ..broker import delete_run_until_quiet
            from ._orphan import mourn

            wait_idle(defaults.KILL_WAIT_S)  # our commands already sent are answered
            client = Url(spec.broker_url).client(timeout=2.0)
            task = ctx.current_task() if ctx is not None and ctx.current_task else None
            dead = spec

            def tell_broker() -> None:
                mourn(client, app, dead, slot, task)  # status and Flower: the run is dead
                # the other slots' last writes may still land: delete until none comes
                delete_run_until_quiet(client, dead.run_id)

            # a frozen broker (kombu waits 30 s a read) must not keep an orphaned slot
            # alive: what is not deleted in time expires with no heartbeat
            bounded(tell_broker, defaults.ORPHAN_BROKER_WAIT_S)

    start_deathwatch(death_fd, cleanup=orphaned, fence=ORPHANED)
    become_subreaper()

    import warnings

    warnings.filterwarnings("ignore", message=".*superuser privileges.*")
    from ..broker import BrokerUrl, events, make_app
    from ..broker.keys import node_name
    from ._chunk import SlotContext
    from ._spec import RunSpec
    from ._tasks import register

    spec = RunSpec.read(spec_path)
    broker = BrokerUrl(spec.broker_url)
    ctx = SlotContext(spec=spec, slot=slot, client=fenced(broker.client(timeout=30)))
    if pin_problem:
        ctx.publish(events.SlotWarning(text=pin_problem))
    app = make_app(broker, spec.run_id, spec.queue)
    _mask_broker_in_stats()
    register(app, ctx)
    celery_log = os.path.join(spec.log_dir, f"slot{slot}.celery.log")
    os.close(os.open(celery_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    worker = app.Worker(
        pool="solo", concurrency=1, queues=[spec.queue],
        hostname=node_name(slot, spec.run_id, spec.host),
        without_gossip=True, without_mingle=True, without_heartbeat=False,
        loglevel="WARNING", logfile=celery_log,
        redirect_stdouts=False, task_events=True, quiet=True,
    )
    worker.start()
    return int(worker.exitcode or 0)


def _mask_broker_in_stats() -> None:
    """The worker's ``stats`` reply (Flower's ``/api/workers``) describes the broker
    connection; Celery drops its ``password`` but a socket URL keeps it in ``hostname``.
    Mask every URL there."""
    from celery.worker.consumer import connection as step

    from ..broker import mask_url

    original = step.Connection.info
    if getattr(original, "stmpo_masked", False):
        return

    def info(self: object, c: object) -> dict[str, object]:
        out: dict[str, object] = original(self, c)
        params = out.get("broker")
        if isinstance(params, dict):
            params.pop("password", None)
            if isinstance(params.get("hostname"), str):
                params["hostname"] = mask_url(params["hostname"])
            alternates = params.get("alternates")
            if isinstance(alternates, list):
                params["alternates"] = [mask_url(str(a)) for a in alternates]
        return out

    info.stmpo_masked = True  # type: ignore[attr-defined]
    step.Connection.info = info


#: What a slot's worker imports on its way to its first task (Celery loads these lazily:
#: the app's amqp, events and backend, the solo pool, the consumer's bootsteps). Forked
#: slots that find them loaded skip N copies of that work on the host's cores; the
#: orchestrator needs most of them to send the chord anyway.
_WORKER_MODULES = (
    "billiard.pool", "celery.app.amqp", "celery.app.control", "celery.app.events",
    "celery.app.log", "celery.app.routes", "celery.apps.worker", "celery.backends.redis",
    "celery.concurrency.solo", "celery.events.dispatcher", "celery.events.receiver",
    "celery.fixups.django", "celery.worker.autoscale", "celery.worker.components",
    "celery.worker.consumer", "celery.worker.consumer.delayed_delivery",
    "celery.worker.strategy", "kombu.pidbox",
    "kombu.transport.redis",
)


def preload() -> None:
    """Import what a slot needs, so forked slots start without importing anything."""
    import importlib

    for name in _WORKER_MODULES:
        importlib.import_module(name)

    from ..broker import make_app  # noqa: F401
    from . import _tasks as tasks  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 4 and args[4]:  # the slot's stderr log (a file handle as a std handle
        # at start is what Wine cannot take, so the slot opens it itself)
        fd = os.open(args[4], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # private: a run log
        os.dup2(fd, 2)
        os.close(fd)
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace",  # noqa: SIM115
                          buffering=1, closefd=False)
    sys.exit(run_slot(args[0], int(args[1]), int(args[2]), args[3] if len(args) > 3 else ""))


if __name__ == "__main__":
    main()
