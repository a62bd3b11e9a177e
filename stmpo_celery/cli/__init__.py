"""The ``stmpo`` command line: click commands only.

Runs in the process the user started (``stmpo render`` becomes the orchestrator).
Each command turns its options into calls on the other subpackages and turns a
:class:`~stmpo_celery.errors.StmpoError` into one line on stderr and its exit code.
"""

import os
import signal
import sys
import time
from types import FrameType

_STARTED = time.time()

#: a cancel that came while the modules its handler needs were themselves loading
_pending: list[int] = []


def _summary_path(args: list[str]) -> str | None:
    """The ``--summary`` of a ``stmpo render`` command line, read without click."""
    if args[:1] != ["render"]:
        return None
    for i, arg in enumerate(args):
        if arg == "--summary" and i + 1 < len(args):
            return args[i + 1] or None
        if arg.startswith("--summary="):
            return arg.partition("=")[2] or None
    return None


def _loading_cancelled(signum: int, _frame: FrameType | None) -> None:
    """A cancel while stmpo is still loading (~0.1 s on Linux, over a second on Windows):
    nothing exists yet, so no traceback and nothing to stop — but a render's ``--summary``
    is written as for any cancel (nothing rendered), with the cancel's code."""
    try:  # loaded in a few ms, just below; fails only if the signal came while they loaded
        from ..errors import CANCEL_CODES, ExitCode, cancel_words
        from ._cancelled import cancelled_early
    except ImportError:
        _pending.append(signum)  # acted on as soon as they have loaded
        return
    import json

    code = int(CANCEL_CODES.get(signum, ExitCode.TERMINATED))
    name = signal.Signals(signum).name
    args = sys.argv[1:]
    try:  # the line every cancel ends with (render: on stdout, as its later ones)
        if args[:1] == ["render"]:
            os.write(1, f"stmpo: CANCELLED by {cancel_words(name)} before the render "
                        "started: nothing was rendered\n".encode())
        else:
            os.write(2, f"stmpo: CANCELLED by {name}\n".encode())
    except OSError:
        pass
    path = _summary_path(args)
    if path:
        doc = cancelled_early(code, name, _STARTED)
        try:  # written in place: replacing a file is the platform layer's, not loaded yet
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=2)
        except OSError:
            pass
    os._exit(code)


if os.path.basename(sys.argv[0]).lower() in {"stmpo", "stmpo.exe", "stmpo-script.py", "-m",
                                              "__main__.py"}:
    # First, before anything of stmpo's loads: until ``main`` takes the cancel signals
    # (the render's own handler, or Python's for Ctrl-C in other commands), a cancel ends
    # here. Only Python's own start-up (and the launcher's imports) come before.
    for _name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"):
        if hasattr(signal, _name):
            signal.signal(getattr(signal, _name), _loading_cancelled)

from ..errors import CANCEL_CODES  # noqa: E402,F401  (what the handler needs, loaded now)
from ._cancelled import cancelled_early  # noqa: E402,F401

if _pending:
    _loading_cancelled(_pending[0], None)

from ._main import main  # noqa: E402

__all__ = ["main"]
