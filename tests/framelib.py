"""Helpers of the frame-integrity tests: is a frame file whole, the simulator's journal,
a frame caught mid-write, a power cut, the frames on disk that are not whole."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psutil
from conftest import Farm

from stmpo_celery.plan._formats import frame_problem


def whole(path: Path) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return frame_problem(str(path), len(data), lambda o, n: data[o:o + n]) is None


def journal(farm: Farm, kind: str) -> list[list[str]]:
    if not farm.journal.exists():
        return []
    return [ln.split()[1:] for ln in farm.journal.read_text().splitlines()
            if ln.startswith(kind + " ")]


def mid_write(farm: Farm, ext: str = "png") -> Path | None:
    """A frame file that the renderer has begun but not finished (non-empty)."""
    finished = {int(r[0]) for r in journal(farm, "frame")}
    for row in journal(farm, "begin"):
        f = int(row[0])
        path = farm.out / f"shot_{f:04d}.{ext}"
        if f not in finished and path.exists() and path.stat().st_size > 0:
            return path
    return None


def power_cut(procs: list[psutil.Process]) -> None:
    """Kill ``procs`` at once, as a power cut does: frozen first, so none of them (an
    orphaned slot, a slot that saw its renderer die) gets to clean up before it dies."""
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.suspend()
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()


def bad_files(farm: Farm, ext: str = "png") -> list[str]:
    return sorted(p.name for p in farm.out.glob(f"shot_*.{ext}") if not whole(p))
