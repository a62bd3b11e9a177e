"""What a killed run's warden does, in the warden's own process (``python -m``).

The orchestrator starts a warden (:func:`stmpo_celery.host.start_warden`) that outlives
it. When the orchestrator and its slots are killed together (``pkill -9 -f 'stmpo
render'``, an OOM kill of the session), nobody else stops the renderers: they render on
as orphans, writing frames nobody will verify. The warden then, once the run is
provably gone (its folder's lock is free):

* kills every process that carries the run folder in ``$STMPO_RUN_DIR`` (aerender and
  the AfterFX it started) and the embedded Redis working in it, and removes the folder
  (its spec holds the broker URL) — :func:`stmpo_celery.host.reap_run_dirs`;
* deletes the frames the run's ledgers still list as in flight (half-written), and its
  output lock;
* on a Redis that outlives the run (the host service's, an external one), reaps the run:
  its Flower rows end (chunks REVOKED, the run FAILED, its nodes offline) and its keys
  go — :func:`stmpo_celery.broker.reap_dead_runs`.

The folder may still be locked for a moment (orphaned slots stopping their renderers,
another run's reaper deleting it): the warden waits for that, up to
:data:`defaults.WARDEN_WAIT_S`.

Usage: ``python -m stmpo_celery.orchestrator._warden RUN_DIR LEDGER_DIR RUN_ID``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

from ..config import defaults
from ..host import reap_run_dirs
from ..slot import settle_ledgers


def main(argv: list[str]) -> int:
    run_dir, ledgers, run_id = Path(argv[0]), Path(argv[1]), argv[2]
    broker = _broker_url(run_dir)  # read while the folder is there (it holds the URL)
    deadline = time.monotonic() + defaults.WARDEN_WAIT_S
    reap_run_dirs(run_dir.parent)
    # Still locked: its slots, orphaned, are stopping their renderers, or another run's
    # reaper holds the lock while it deletes the folder. Either ends soon; if it does
    # not, the run is alive after all and nothing is touched.
    while run_dir.exists():
        if time.monotonic() > deadline:
            return 0
        time.sleep(0.2)
        reap_run_dirs(run_dir.parent)
    settle_ledgers(ledgers, lambda e: e.run_id == run_id)
    with contextlib.suppress(OSError):  # its output lock (the next run would reclaim it)
        (ledgers / f"run-{run_id}.lock").unlink()
    with contextlib.suppress(OSError):  # only when no other run or ledger is there
        ledgers.rmdir()
    if broker is not None:
        _reap_broker(broker, run_id)
    return 0


def _broker_url(run_dir: Path) -> str | None:
    """The run's broker, from the slots' spec in its folder (None before it was written)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        url = json.loads((run_dir / "spec.json").read_text()).get("broker_url")
        return url if isinstance(url, str) and url else None
    return None


def _reap_broker(url: str, run_id: str) -> None:
    """Reap this run and other dead runs on the run's Redis, if it outlived the run (an
    embedded one died with it: the connection is refused at once). This run is dead
    whatever its registry entry says: its folder's lock is free."""
    from ..broker import BrokerUrl, reap_dead_runs

    with contextlib.suppress(Exception):
        broker = BrokerUrl(url)
        client = broker.client(timeout=2.0)
        try:
            reap_dead_runs(client, broker=broker, known_dead={
                run_id: "killed with its slots (found by its warden)"})
        finally:
            client.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
