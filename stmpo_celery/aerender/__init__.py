"""After Effects' command line renderer: the argv we build, the log we parse, and the
simulator that stands in for it in tests and demos.

The argv and the log parser run inside a slot; :mod:`.simulator` is its own process
(``stmpo-fake-aerender``), a launcher plus a separate renderer, as the real program is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._argv import RenderTarget, build_argv, check_target, resolve_aerender
    from ._log import AerenderLog, AeWarning, FrameDone, StrongError
    from ._output import (
        delete_incomplete,
        file_problem,
        known_not_whole,
        missing_frames,
        signature,
        signatures,
        untrusted_since,
        written_whole,
    )

# Imported on first use: the simulator is a process of its own (one per launch, two with
# its renderer) and must start as fast as a native program, without the host layer.
_HOME = {
    "RenderTarget": "._argv",
    "build_argv": "._argv",
    "check_target": "._argv",
    "resolve_aerender": "._argv",
    "AerenderLog": "._log",
    "AeWarning": "._log",
    "FrameDone": "._log",
    "StrongError": "._log",
    "delete_incomplete": "._output",
    "known_not_whole": "._output",
    "file_problem": "._output",
    "missing_frames": "._output",
    "signature": "._output",
    "signatures": "._output",
    "untrusted_since": "._output",
    "written_whole": "._output",
}

__all__ = [
    "check_target",
    "AerenderLog",
    "AeWarning",
    "build_argv",
    "FrameDone",
    "delete_incomplete",
    "known_not_whole",
    "file_problem",
    "missing_frames",
    "signature",
    "signatures",
    "untrusted_since",
    "written_whole",
    "RenderTarget",
    "resolve_aerender",
    "StrongError",
]

__getattr__ = lazy_exports(__name__, _HOME)
