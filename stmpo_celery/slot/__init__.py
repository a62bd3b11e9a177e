"""What runs inside a slot process: the lean launcher, the Celery tasks, one chunk's
aerender run, and the slot's live state reporting.

A slot is a Celery solo worker pinned to one CPU block, forked or exec'd by the
orchestrator. Nothing here runs in the orchestrator except reading :class:`RunSpec`.
"""
