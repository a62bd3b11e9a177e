"""The ``stmpo`` command line: click commands only.

Runs in the process the user started (``stmpo render`` becomes the orchestrator).
Each command turns its options into calls on the other subpackages and turns a
:class:`~stmpo_celery.errors.StmpoError` into one line on stderr and its exit code.
"""

from ._main import main

__all__ = ["main"]
