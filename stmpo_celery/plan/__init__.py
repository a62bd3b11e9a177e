"""Pure planning: frame specs, output patterns, slot sizing, CPU blocks, chunk plans
and work stealing.

No I/O and no Celery or Redis: everything here is a function of its arguments, so it
runs anywhere (the orchestrator, a slot, ``stmpo plan`` for another host) and is
unit-tested directly.
"""
