"""The ``stmpo`` command line: click commands only.

Runs in the process the user started (``stmpo render`` becomes the orchestrator).
Each command turns its options into calls on the other subpackages and turns a
:class:`~stmpo_celery.errors.StmpoError` into one line on stderr and its exit code.
"""

import os
import signal
import sys

from ..errors import ExitCode

if os.path.basename(sys.argv[0]).lower() in {"stmpo", "stmpo.exe", "stmpo-script.py", "-m",
                                              "__main__.py"}:
    # A Ctrl-C while stmpo is still loading: nothing exists yet, so end with the cancel's
    # code and no traceback. ``main`` puts Python's own handler back before any command.
    signal.signal(signal.SIGINT, lambda *_: os._exit(int(ExitCode.INTERRUPTED)))

from ._main import main  # noqa: E402

__all__ = ["main"]
