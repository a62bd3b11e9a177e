"""The in-flight ledger: which frames an aerender may be half-way through writing.

After Effects writes a frame in place, so a render stopped mid-frame (cancel, crash,
kill, stall, a stolen tail) leaves a partial file of non-zero size. Before each
aerender launch the slot writes a small JSON file beside the output,
``<output folder>/.stmpo/inflight-<run>-slot<K>-<pid>-<n>.json``, listing the frames of
that launch; each frame leaves the list as aerender reports it done, and the file is
removed when the launch is settled. Whoever stops a launch deletes the frames still
listed (the slot, or the orchestrator after it had to SIGKILL the slot); if everything
was killed, the next run on that output deletes them before it looks at what is on
disk, so a half-written frame is never taken for a rendered one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..host import read_text, remove_file, replace_file
from ..plan import OutputPattern, format_frames, parse_frames

STATE_DIR = ".stmpo"  #: beside the output: in-flight ledgers and output locks
#: Windows: a half-written frame another process has open is tried again this long (a
#: scan lets go in milliseconds; a viewer does not, and a cancel must not wait on it)
HELD_FRAME_WAIT_S = 0.25
_COUNTER = itertools.count()


def state_dir(pattern: OutputPattern) -> Path:
    return Path(os.path.dirname(os.path.abspath(pattern.path_for(0)))) / STATE_DIR


def write_state(path: Path, data: dict[str, Any]) -> None:
    """Write a state file beside the output (a ledger, an output lock) whole or not at
    all: no temporary file is left when it fails."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        replace_file(tmp, path)
    except BaseException:  # the file stays as it was
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def ledger_data(run_id: str, pattern: OutputPattern, frames: Iterable[int]) -> dict[str, Any]:
    """What a ledger file holds: the run, the output pattern and the frames in flight."""
    return {"run": run_id, "pattern": pattern.raw, "frames": format_frames(sorted(frames))}


class Ledger:
    """The frames one aerender launch has in flight."""

    def __init__(self, pattern: OutputPattern, run_id: str, slot: int,
                 frames: Iterable[int]) -> None:
        self.pattern = pattern
        self.run_id = run_id
        self.pending = set(frames)
        self.path = state_dir(pattern) / (
            f"inflight-{run_id}-slot{slot}-{os.getpid()}-{next(_COUNTER)}.json")

    def open(self) -> None:
        """Written before the launch; raises OSError when it cannot be (no frame is safe)."""
        self.path.parent.mkdir(exist_ok=True)
        self._write()

    def _write(self) -> None:
        write_state(self.path, ledger_data(self.run_id, self.pattern, self.pending))

    def done(self, frame: int) -> None:
        if frame in self.pending:
            self.pending.discard(frame)
            with contextlib.suppress(OSError):  # a stale entry only costs a re-render
                self._write()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            remove_file(self.path)

    def keep_only(self, frames: list[int]) -> None:
        """Settled: close, unless some ``frames`` are still half-written on disk (they
        could not be deleted): those stay listed, for the next settle of this output."""
        if not frames:
            self.close()
            return
        self.pending = set(frames)
        with contextlib.suppress(OSError):
            self._write()


@dataclass(frozen=True)
class Entry:
    path: Path
    run_id: str
    pattern: OutputPattern
    frames: list[int]


def entries(folder: Path) -> list[Entry]:
    """Every ledger in ``folder`` (unreadable ones are skipped: never a traceback)."""
    out: list[Entry] = []
    try:
        names = sorted(p for p in folder.iterdir() if p.name.startswith("inflight-")
                       and p.name.endswith(".json"))
    except OSError:
        return out
    for path in names:
        try:
            data = json.loads(read_text(path))
            frames = parse_frames(data["frames"]) if data.get("frames") else []
            out.append(Entry(path, str(data["run"]), OutputPattern(str(data["pattern"])),
                             frames))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        except Exception:  # noqa: BLE001 - a malformed spec raises the package's own error
            continue
    return out


class Settled(list[str]):
    """The frame files :func:`settle` deleted; :attr:`kept`, those it could not delete
    (Windows: another process — a viewer, an antivirus scan — has the file open):
    still listed in their ledger, so whoever settles this output next tries again, and
    never to be taken for rendered frames meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[str] = []

    def held(self, pattern: OutputPattern, frames: Iterable[int]) -> set[int]:
        """The ``frames`` of ``pattern`` whose files were kept."""
        kept = set(self.kept)
        return {f for f in frames if pattern.path_for(f) in kept}


def delete_frame(path: str) -> bool:
    """Delete a frame file that may be half-written; False when it cannot be (Windows:
    another process has it open), True when it is gone."""
    try:
        remove_file(path, HELD_FRAME_WAIT_S)  # a scan lets go in milliseconds
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def settle(folder: Path, which: Callable[[Entry], bool],
           owned: Callable[[int], bool] = lambda frame: True) -> Settled:
    """Delete the frames still listed by the ledgers ``which`` selects (only those
    ``owned`` accepts: a stolen tail is the thief's), then the ledgers — but a ledger
    keeps the frames that could not be deleted.

    Returns the frame files deleted (each possibly half-written), and those kept."""
    out = Settled()
    with contextlib.suppress(OSError):  # a ledger's temp file, left by a kill mid-update
        for tmp in folder.glob("inflight-*.json.tmp"):
            if which(Entry(tmp, tmp.name.split("-")[1], OutputPattern(""), [])):
                tmp.unlink()
    for entry in entries(folder):
        if not which(entry):
            continue
        kept: list[int] = []
        for frame in filter(owned, entry.frames):
            path = entry.pattern.path_for(frame)
            if not os.path.lexists(path):
                continue
            if delete_frame(path):
                out.append(path)
            else:
                kept.append(frame)
                out.kept.append(path)
        with contextlib.suppress(OSError):
            if kept:
                write_state(entry.path, ledger_data(entry.run_id, entry.pattern, kept))
            else:
                remove_file(entry.path)
    return out
