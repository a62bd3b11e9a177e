"""Which frames a chunk task renders, decided when a slot picks the task up."""

from __future__ import annotations

from .chunk import SlotContext


def claim(ctx: SlotContext, index: int) -> tuple[int, int] | None:
    """Planned schedules: chunk ``index`` of the plan written into the run spec."""
    chunks = ctx.spec.chunks
    if 0 <= index < len(chunks):
        start, end = chunks[index]
        return int(start), int(end)
    return None
