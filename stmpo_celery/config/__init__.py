"""Settings: built-in defaults < profile < ``STMPO_*`` environment < flags.

Pure apart from reading profile files and the environment; runs wherever a setting
is resolved (the CLI, the bundle writer). :mod:`.defaults` holds every tunable number.
"""
