"""What aerender left on disk: which requested frames are not (yet) whole files.

Used by a slot to verify its chunk, by the orchestrator before planning (resume) and
after the run (final verification), and by redelivery.
"""

from __future__ import annotations

import os

from ..plan import OutputPattern


def missing_frames(pattern: OutputPattern, frames: list[int]) -> list[int]:
    """Frames whose file is absent or empty (an empty file is not a frame)."""
    out = []
    for f in frames:
        try:
            if os.path.getsize(pattern.path_for(f)) <= 0:
                out.append(f)
        except OSError:
            out.append(f)
    return out
