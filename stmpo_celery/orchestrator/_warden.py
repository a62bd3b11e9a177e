"""What a killed run's warden does, in the warden's own process (``python -m``).

The orchestrator starts a warden (:func:`stmpo_celery.host.start_warden`) that outlives
it. When the orchestrator and its slots are killed together (``pkill -9 -f 'stmpo
render'``, an OOM kill of the session), nobody else stops the renderers: they render on
as orphans, writing frames nobody will verify. The warden then, once the run is
provably gone (its folder's lock is free):

* kills every process that carries the run folder in ``$STMPO_RUN_DIR`` (aerender and
  the AfterFX it started) and the embedded Redis working in it, and removes the folder
  (its spec holds the broker URL) — :func:`stmpo_celery.host.reap_run_dirs`;
* deletes the frames the run's ledgers still list as in flight (half-written).

Usage: ``python -m stmpo_celery.orchestrator._warden RUN_DIR LEDGER_DIR RUN_ID``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..host import reap_run_dirs
from ..slot import settle_ledgers


def main(argv: list[str]) -> int:
    run_dir, ledgers, run_id = Path(argv[0]), Path(argv[1]), argv[2]
    reap_run_dirs(run_dir.parent)
    if run_dir.exists():  # still locked: the run is alive after all (nothing is touched)
        return 0
    settle_ledgers(ledgers, lambda e: e.run_id == run_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
