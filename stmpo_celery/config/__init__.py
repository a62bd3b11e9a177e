"""Settings: built-in defaults < profile < ``STMPO_*`` environment < flags.

Pure apart from reading profile files and the environment; runs wherever a setting
is resolved (the CLI, the bundle writer). :mod:`.defaults` holds every tunable number.
"""

from ._options import RenderOptions, origin
from ._settings import (
    SETTINGS,
    Command,
    Setting,
    broker_setting,
    check_combinations,
    for_command,
    parse_chunk_size,
    refuse_for_movie,
    resolve,
)

__all__ = [
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
