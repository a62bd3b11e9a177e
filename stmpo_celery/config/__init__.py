"""Settings: built-in defaults < profile < ``STMPO_*`` environment < flags.

Pure apart from reading profile files and the environment; runs wherever a setting
is resolved (the CLI, the bundle writer). :mod:`.defaults` holds every tunable number.
"""

from ._options import RenderOptions
from ._settings import SETTINGS, Command, Setting, for_command, parse_chunk_size, resolve

__all__ = [
    "Command",
    "for_command",
    "parse_chunk_size",
    "RenderOptions",
    "resolve",
    "Setting",
    "SETTINGS",
]
