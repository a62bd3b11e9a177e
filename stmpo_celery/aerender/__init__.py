"""After Effects' command line renderer: the argv we build, the log we parse, and the
simulator that stands in for it in tests and demos.

The argv and the log parser run inside a slot; :mod:`.simulator` is its own process
(``stmpo-fake-aerender``), a launcher plus a separate renderer, as the real program is.
"""

from ._argv import RenderTarget, build_argv, check_target, resolve_aerender
from ._log import AerenderLog, AeWarning, FrameDone, StrongError
from ._output import delete_incomplete, missing_frames

__all__ = [
    "check_target",
    "AerenderLog",
    "AeWarning",
    "build_argv",
    "FrameDone",
    "delete_incomplete",
    "missing_frames",
    "RenderTarget",
    "resolve_aerender",
    "StrongError",
]
