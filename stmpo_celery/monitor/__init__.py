"""Watching hosts and runs: ``stmpo status``, Flower (per run or host-wide, in its own
child process :mod:`.flower_main`), the host service (``stmpo host up|down``) and
``stmpo doctor``.
"""
