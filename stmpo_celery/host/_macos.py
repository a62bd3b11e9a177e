"""macOS: no CPU affinity API (pinning is reported unsupported; the OS schedules by QoS),
no ``prctl`` and no subreaper: slots are exec'd into their own process groups and watch a
pipe from the orchestrator for its death. Imported only through :mod:`._platform`."""

from __future__ import annotations

PIN_UNSUPPORTED = ("CPU pinning is not supported on macOS (no affinity API; the scheduler "
                   "places threads by QoS): slots run unpinned; --no-affinity silences this")


def pin(cpus: set[int]) -> str | None:
    return PIN_UNSUPPORTED if cpus else None


def pinning_check() -> tuple[bool, str]:
    return False, "macOS has no CPU affinity API: slots run unpinned (QoS scheduling)"
