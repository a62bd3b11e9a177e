"""The guard beside a farm worker: a dead worker's render does not live on.

``python -m stmpo_celery.farm._guard WORKER_PID GRACE_S [SESSIONS]`` is started by
``stmpo farm worker`` with a pipe on its stdin that only the worker holds. While the
worker lives the guard remembers its descendants (the OpenJD action, ``stmpo render``,
slots, aerender) every half second. When the pipe reaches EOF — the worker ended, even by
SIGKILL — the guard sends SIGTERM to the remembered action processes (``stmpo render``
then stops its slots and aerender trees itself), SIGKILL to whatever of them is left
after ``GRACE_S``, and removes ``SESSIONS``, the folder of the worker's OpenJD session
working directories (a killed worker cannot). Its task is by then requeued on another
host by the farm. A worker that is stopped (SIGSTOP) longer than ``FARM_DEAD_AFTER_S``
has its action processes stopped the same way: its task runs elsewhere by then, and its
render would hold the output until the worker reads its output again.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import threading
import time

import psutil

from ..config import defaults
from ..host import set_process_name

SNAPSHOT_S = 0.5


def main(argv: list[str]) -> int:
    worker_pid, grace = int(argv[0]), float(argv[1])
    sessions = argv[2] if len(argv) > 2 and argv[2] not in ("", ".") else None
    try:
        return _guard(worker_pid, grace)
    finally:
        if sessions is not None:
            shutil.rmtree(sessions, ignore_errors=True)


def _guard(worker_pid: int, grace: float) -> int:
    set_process_name("stmpo-guard")
    gone = threading.Event()

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except OSError:
            pass
        gone.set()

    threading.Thread(target=watch, daemon=True).start()
    me = psutil.Process()
    known: dict[int, psutil.Process] = {}
    top: set[int] = set()
    stopped_since: float | None = None
    while not gone.wait(SNAPSHOT_S):
        try:
            worker = psutil.Process(worker_pid)
            children = worker.children()
            every = worker.children(recursive=True)
            frozen = worker.status() == psutil.STATUS_STOPPED
        except psutil.Error:
            break
        known = {p.pid: p for p in every if p.pid != me.pid}
        top = {p.pid for p in children if p.pid != me.pid}
        # A stopped worker (SIGSTOP, Ctrl-Z) has stopped answering: past the farm's dead
        # limit its task runs elsewhere, and its render — blocked, sooner or later, on
        # output the frozen worker no longer reads — would hold the output for ever.
        stopped_since = (stopped_since or time.monotonic()) if frozen else None
        if stopped_since is not None and known and \
                time.monotonic() - stopped_since > defaults.FARM_DEAD_AFTER_S:
            _stop(list(known.values()), top, grace)
    _stop(list(known.values()), top, grace)
    return 0


def _stop(procs: list[psutil.Process], top: set[int], grace: float) -> None:
    """SIGTERM to the action processes (``top``), SIGKILL to whatever of ``procs`` is left
    after ``grace``."""
    alive = [p for p in procs if _running(p)]
    if not alive:
        return
    for p in alive:
        if p.pid in top:
            with contextlib.suppress(psutil.Error):
                p.terminate()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_running(p) for p in alive):
        time.sleep(0.1)
    for p in alive:
        if _running(p):
            with contextlib.suppress(psutil.Error):
                p.kill()
    psutil.wait_procs(alive, timeout=2.0)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
