"""Redis and Celery: broker URLs and the embedded server, the run's key layout, the
typed slot <-> orchestrator events, the Celery app, the run's shared schedule state
and redelivery of a dead slot's chunk.

Imported by the orchestrator and by every slot; nothing here starts a process except
:class:`EmbeddedRedis`.
"""
