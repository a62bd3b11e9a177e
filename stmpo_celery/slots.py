"""The slot pool: N pinned Celery worker processes, owned by the orchestrator.

Each slot runs :mod:`stmpo_celery.slot_main` in its own session (so its whole tree
can be killed by process group) and holds the read end of one "death pipe" whose
write end only the orchestrator has: when the orchestrator dies, however it dies,
every slot sees EOF and kills its own tree.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .funnel import LogFunnel
from .proc import kill_tree


@dataclass
class Slot:
    index: int
    cpus: tuple[int, ...] | None
    proc: subprocess.Popen[bytes]
    pump: threading.Thread | None = None
    expected_exit: bool = False
    generation: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class SlotPool:
    spec_path: Path
    blocks: list[tuple[int, ...] | None]
    log_dir: Path
    funnel: LogFunnel
    quiet: bool = False
    slots: list[Slot] = field(default_factory=list)
    _death_r: int = -1
    _death_w: int = -1

    def start(self) -> None:
        self._death_r, self._death_w = os.pipe()
        os.set_inheritable(self._death_r, True)
        # Only the write end decides EOF; keeping a read end lets replacements inherit it.
        for k, cpus in enumerate(self.blocks):
            self.slots.append(self._spawn(k, cpus))

    def _spawn(self, k: int, cpus: tuple[int, ...] | None, generation: int = 0) -> Slot:
        argv = [sys.executable, "-m", "stmpo_celery.slot_main", str(self.spec_path), str(k),
                str(self._death_r), ",".join(map(str, cpus or ()))]
        err = open(self.log_dir / f"slot{k}.stderr.log", "ab")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                pass_fds=(self._death_r,), start_new_session=True,
            )
        finally:
            err.close()
        slot = Slot(k, cpus, proc, generation=generation)
        assert proc.stdout is not None
        slot.pump = self.funnel.pump(proc.stdout, lambda: self.quiet)
        return slot

    def replace(self, k: int) -> Slot:
        """Start a new slot on the same CPU block as slot ``k`` (after it died)."""
        old = self.slots[k]
        old.expected_exit = True
        kill_tree(old.pid, pgid=old.pid)
        new = self._spawn(k, old.cpus, generation=old.generation + 1)
        self.slots[k] = new
        return new

    def dead(self) -> list[Slot]:
        return [s for s in self.slots if s.proc.poll() is not None and not s.expected_exit]

    def kill_all(self) -> list[int]:
        """SIGKILL every slot's process group and tree; return pids that survived."""
        survivors: list[int] = []
        for s in self.slots:
            s.expected_exit = True
        for s in self.slots:
            survivors += kill_tree(s.pid, pgid=s.pid, timeout=2.0)
        for s in self.slots:
            with contextlib.suppress(subprocess.TimeoutExpired):
                s.proc.wait(timeout=2.0)
        self.close()
        return survivors

    def close(self) -> None:
        for fd in (self._death_w, self._death_r):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._death_w = self._death_r = -1
        for s in self.slots:
            if s.pump is not None:
                s.pump.join(timeout=1.0)
