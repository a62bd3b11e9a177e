"""Settings: built-in defaults < profile < ``STMPO_*`` environment < flags.

Pure apart from reading profile files and the environment; runs wherever a setting
is resolved (the CLI, the bundle writer). :mod:`.defaults` holds every tunable number.
"""

from ._options import RenderOptions, origin
from ._settings import (
    MFR_CPU_IDLE,
    SETTINGS,
    Command,
    Setting,
    broker_setting,
    check_combinations,
    for_command,
    idle_flag,
    parse_chunk_size,
    refuse_for_movie,
    resolve,
)

__all__ = [
    "MFR_CPU_IDLE",
    "idle_flag",
    "broker_setting",
    "check_combinations",
    "refuse_for_movie",
    "Command",
    "for_command",
    "origin",
    "parse_chunk_size",
    "RenderOptions",
    "resolve",
    "Setting",
    "SETTINGS",
]
