"""The run as one row in Flower, and the end of the run as Flower sees it.

Flower lists Celery tasks; a run is not one. So the orchestrator sends the events of a
pseudo-task ``stmpo.run`` itself (worker ``orchestrator.<run>@<host>``, one per run):

=================  ===========================================================
task-received      arguments ``('shot.aep', 'Main Comp', '1-240')``, kwargs with
                   the run id, host, slots and log directory
task-progress      at most once a second: ``34/240 frames (14%), ETA 1:20, ...``
task-succeeded     ``OK: 240 of 240 frame(s) on disk ...``
task-failed        exception: the root cause; result and traceback: the cause, the
                   chunk's log, the missing frames and the command that resumes
task-revoked       a cancel (after a ``task-retried``: see ``revoke_events``)
=================  ===========================================================

At the end every slot and the orchestrator go offline (``worker-offline``), and every
chunk still running is REVOKED with the reason on the slot that ran it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import TYPE_CHECKING, Any

import redis

from ..broker import bounded, keys, revoke_events
from ..config import defaults
from ..host import write_run_end
from ..plan import format_frames
from ..slot import task_args
from ..text import duration

if TYPE_CHECKING:
    from ._run import Run

RUN_TASK = "stmpo.run"
UPDATE_EVERY_S = 1.0
ENDED_KEEP_S = 3600.0  #: ``stmpo status`` lists a run that ended on the host broker this long


def orchestrator_node(run_id: str, host: str) -> str:
    return f"orchestrator.{run_id}@{host}"


class RunRow:
    """The ``stmpo.run`` row of one run; every call is best effort (never breaks a run)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.task_id = run.row_task
        self.node = orchestrator_node(run.run_id, run.host)
        self._conn: Any = None
        self._disp: Any = None
        self._short: redis.Redis | None = None
        self._last = 0.0
        self.t0 = time.time()
        self.ended = False

    def _send(self, kind: str, **fields: Any) -> None:
        rq = self.run.run_queue
        if rq is None:
            return
        try:
            if self._disp is None:  # a view waits on the broker briefly: see _client
                self._conn = rq.app.connection_for_write(
                    transport_options={"socket_timeout": defaults.FLOWER_ROW_WAIT_S})
                self._conn.ensure_connection(max_retries=1, interval_start=0, timeout=2)
                self._disp = rq.app.events.Dispatcher(self._conn, hostname=self.node,
                                                      enabled=True)
            self._disp.send(kind, retry=False, uuid=self.task_id, **fields)
        except Exception:  # noqa: BLE001 - Flower is a view; the render goes on
            self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._disp is not None:
                self._disp.close()
        with contextlib.suppress(Exception):
            if self._conn is not None:
                self._conn.close()
        self._conn = self._disp = None
        with contextlib.suppress(Exception):
            if self._short is not None:
                self._short.close()

    def what(self) -> str:
        prep = self.run.prep
        o = prep.options
        return task_args(prep.project, o.comp, o.rqindex, format_frames(prep.frames))

    def start(self) -> None:
        run = self.run
        self._send("task-received", name=RUN_TASK, args=self.what(),
                   kwargs=repr({"run": run.run_id, "host": run.host,
                                "slots": len(run.plan.blocks), "log_dir": str(run.log_dir)}),
                   retries=0, result=self.line())
        self._send("task-started", result=self.line())

    def line(self) -> str:
        run = self.run
        total = len(run.prep.to_render)
        done = run.progress.done if run.progress is not None else 0
        eta = run.progress.eta() if run.progress is not None else None
        rate = run.progress.rate() if run.progress is not None else 0.0
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        head = f"{done}/{total} frames{pct}"
        if not done:
            return f"{head}, launching After Effects, elapsed {duration(time.time() - self.t0)}"
        return (f"{head}, ETA {duration(eta)}, {rate:.2f} f/s, "
                f"elapsed {duration(time.time() - self.t0)}")

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.ended or (not force and now - self._last < UPDATE_EVERY_S):
            return
        self._last = now
        run = self.run
        total = len(run.prep.to_render)
        done = run.progress.done if run.progress is not None else 0
        eta = run.progress.eta() if run.progress is not None else None
        self._send("task-progress", result=self.line(), done=done, total=total, eta_s=eta)
        self.registry(frames_done=done, eta_s=round(eta, 1) if eta is not None else None)

    @staticmethod
    def registry_extra(run: Run) -> dict[str, Any]:
        """What ``stmpo status`` shows of a run beyond the registry's basics."""
        o = run.prep.options
        return {"project": run.prep.project, "comp": o.comp, "rqindex": o.rqindex,
                "frames_spec": format_frames(run.prep.frames), "pid": os.getpid(),
                "state": keys.RunState.RENDERING, "frames_done": 0, "eta_s": None,
                # the run's row in Flower: orphaned slots end it if the orchestrator is killed
                "row_task": run.row_task, "row_node": orchestrator_node(run.run_id, run.host)}

    def _client(self) -> redis.Redis | None:
        """A client that waits ``FLOWER_ROW_WAIT_S`` for the broker. The row is updated
        from the loop that follows the run: with the run's own client (10 s, retried) a
        broker that stalled held that loop — no loss noticed, no cancel acted on — until
        it answered again."""
        if self._short is None and self.run.client is not None and self.run.broker:
            self._short = self.run.broker.client(timeout=defaults.FLOWER_ROW_WAIT_S)
        return self._short

    def registry(self, **fields: Any) -> dict[str, Any] | None:
        """Update the run's registry record (best effort); return it."""
        client = self._client()
        if client is None:
            return None
        try:
            raw = client.hget(keys.REGISTRY, self.run.run_id)
            if not raw:
                return None
            entry: dict[str, Any] = {**json.loads(raw), **fields}
            client.hset(keys.REGISTRY, self.run.run_id, json.dumps(entry))
            return entry
        except Exception:  # noqa: BLE001 - a view only
            return None

    def keep_ended(self, entry: dict[str, Any]) -> None:
        """On the host service's broker, keep the ended run's record a while (and prune
        the records of runs that ended more than :data:`ENDED_KEEP_S` ago)."""
        run = self.run
        if run.client is None or run.embedded is not None:
            return
        with contextlib.suppress(Exception):
            if not run.client.exists(keys.HOST_SERVICE):
                return
            now = time.time()
            old = []
            for rid, raw in run.client.hgetall(keys.ENDED).items():
                try:
                    ended = float(json.loads(raw).get("ended", 0))
                except (ValueError, TypeError, AttributeError):
                    ended = 0.0  # not a record (damaged by hand): nothing to keep
                if now - ended > ENDED_KEEP_S:
                    old.append(rid)
            if old:
                run.client.hdel(keys.ENDED, *old)
            run.client.hset(keys.ENDED, run.run_id, json.dumps(entry))

    def end_of_run(self) -> None:
        """Called first in the run's teardown: the outcome as the terminal will say it."""
        from ..errors import ExitCode
        from ._ending import missing_now
        from ._report import block_for

        run = self.run
        try:
            missing = missing_now(run)
            ok = run.exit_code == ExitCode.OK and not missing and not run.failures
            cancelled = run.cancel_signal is not None and not run.failures
            block = block_for(run, missing, ok)
            fields = dict(
                state=(keys.RunState.DONE if ok else keys.RunState.CANCELLED if cancelled
                       else keys.RunState.FAILED),
                ended=time.time(), eta_s=None,
                frames_done=max(0, len(run.prep.to_render) - len(missing)),
                reason=None if ok else block[0], missing_spec=format_frames(missing),
                log=next((b.strip()[5:] for b in block if b.strip().startswith("log: ")), None))
        except Exception:  # noqa: BLE001 - a view only
            return
        # on disk first: a broker that died may come back from its file with this run
        # still rendering, and `stmpo status` then reads how it really ended from here
        failed = write_run_end(run.log_dir, run.run_id, fields)
        if failed is not None and run.funnel.log_error is None:
            run.funnel.log_error = failed

        def tell() -> None:
            self.end(block, ok=ok, cancelled=cancelled)
            entry = self.registry(**fields)
            if entry is not None:
                self.keep_ended(entry)

        # the broker may be the thing that was lost, or frozen: the teardown after this
        # (slots, half-written frames) must not wait on it, nor a cancel outlast its
        # notify period
        bounded(tell, defaults.CLEANUP_BROKER_WAIT_S)

    def end(self, block: list[str], ok: bool, cancelled: bool) -> None:
        """The run's outcome (the final block's lines), then every node of the run offline."""
        if self.ended:
            return
        self.ended = True
        runtime = time.time() - self.t0
        first = block[0] if block else ("OK" if ok else "FAILED")
        if ok:
            self._send("task-succeeded", result=first, runtime=runtime)
        elif cancelled:
            for kind, fields in revoke_events(self.task_id, first):
                fields.pop("uuid", None)
                self._send(kind, **fields)
        else:
            text = "\n".join(block)
            detail = " | ".join(b.strip() for b in block[1:] if b.strip().startswith(
                ("log:", "missing:", "resume:")))
            self._send("task-failed", exception=first, traceback=text,
                       result=first + (f" | {detail}" if detail else ""), runtime=runtime)
        self.close()
        self.offline()

    def stopped_chunks(self, reason: str) -> None:
        """Every chunk still running when the run stopped: REVOKED on its slot."""
        run = self.run
        cancelled = run.cancel_signal is not None and not run.failures
        self.registry(state=keys.RunState.CANCELLED if cancelled else keys.RunState.FAILED,
                      reason=reason)
        if run.run_queue is None:
            return
        items = [(c.task_id, int(c.slot),
                  f"STOPPED f{c.frames or f'{c.start}-{c.end}'} (chunk {c.index}) on slot "
                  f"{c.slot}: {reason}")
                 for c in run.chunks.values()
                 if c.task_id and c.slot is not None and c.status in ("running", "retrying")]
        run.run_queue.announce_revoked(items)

    def offline(self) -> None:
        run = self.run
        if run.run_queue is not None:
            run.run_queue.announce_offline(range(len(run.plan.blocks)), [self.node])

