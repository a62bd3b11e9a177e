"""``python -m stmpo_celery.cli`` is ``stmpo``."""

from . import main

main()
