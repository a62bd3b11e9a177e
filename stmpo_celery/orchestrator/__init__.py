"""``stmpo render``'s own process: validation before anything starts, the slot pool,
the chord, following the run's events, progress output, teardown and the summary.

The orchestrator owns every process and every Redis key of a run until it exits.
"""
