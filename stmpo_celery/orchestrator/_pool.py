"""The slot pool: N pinned Celery worker processes, owned by the orchestrator.

Each slot runs in its own session / process group (so its whole tree can be killed by
process group) and holds the read end of a "death pipe" whose write end only the
orchestrator has: when the orchestrator dies, however it dies, every slot sees EOF and
kills its own tree. On Linux (default start method) the first slots are forked from the
orchestrator, which has already imported Celery (no threads and no broker connections
exist at that moment) and share one death pipe; replacements, Windows, macOS and
``STMPO_START_METHOD=spawn`` exec the lean launcher, whose death pipe is its stdin. On
Windows every slot also joins the pool's kill-on-close Job Object (see
:mod:`stmpo_celery.host._platform`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from ..broker import mask_url
from ..host import RunJob, can_fork_slots, fork_slot, kill_tree, slot_popen_kwargs
from ._funnel import LogFunnel

_ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|Error\b|Exception\b")
_LOG_PREFIX = re.compile(r"^\[[^\]]*\]\s*")  # Celery's "[time: LEVEL/process] "


class ProcessLike(Protocol):
    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...


class Forked:
    """A forked child with the parts of ``Popen`` the pool uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def _reap(self, flags: int) -> int | None:
        if self.returncode is not None:
            return self.returncode
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:
            self.returncode = -1
            return self.returncode
        if pid == 0:
            return None
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self, timeout: float | None = None) -> int:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                return code
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            time.sleep(0.005)


@dataclass
class Slot:
    index: int
    cpus: tuple[int, ...] | None
    proc: ProcessLike
    out: IO[bytes]
    pump: threading.Thread | None = None
    expected_exit: bool = False
    generation: int = 0
    death: IO[bytes] | None = None  #: write end of an exec'd slot's stdin death pipe

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
    use_fork: bool = field(default_factory=can_fork_slots)
    slots: list[Slot] = field(default_factory=list)
    job: RunJob = field(default_factory=RunJob)
    _death_r: int = -1
    _death_w: int = -1

    def start(self) -> None:
        if self.use_fork:  # forked slots share one death pipe; only the write end decides EOF
            self._death_r, self._death_w = os.pipe()
            from ..slot import preload

            preload()
            sys.stdout.flush()
            sys.stderr.flush()
        for k, cpus in enumerate(self.blocks):
            spawn = self._fork if self.use_fork else self._exec
            self.slots.append(spawn(k, cpus, 0))
        for s in self.slots:  # threads only once every fork is done
            s.pump = self.funnel.pump(s.out, lambda: self.quiet)

    def _stderr_fd(self, k: int) -> int:
        return os.open(self.log_dir / f"slot{k}.stderr.log",
                       os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _exec(self, k: int, cpus: tuple[int, ...] | None, generation: int) -> Slot:
        err_log = str(self.log_dir / f"slot{k}.stderr.log")
        argv = [sys.executable, "-m", "stmpo_celery.slot._main", str(self.spec_path), str(k),
                "0", ",".join(map(str, cpus or ())), err_log]
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            **slot_popen_kwargs(),
        )
        self.job.assign(proc)
        assert proc.stdout is not None
        return Slot(k, cpus, proc, proc.stdout, generation=generation, death=proc.stdin)

    def _fork(self, k: int, cpus: tuple[int, ...] | None, generation: int) -> Slot:
        out_r, out_w = os.pipe()
        err = self._stderr_fd(k)
        spec, cpu_arg = str(self.spec_path), ",".join(map(str, cpus or ()))

        def body(keep_fd: int) -> int:
            from ..slot import run_slot

            return run_slot(spec, k, keep_fd, cpu_arg)

        pid = fork_slot(body, out_w, err, self._death_r)
        os.close(out_w)
        os.close(err)
        return Slot(k, cpus, Forked(pid), os.fdopen(out_r, "rb"), generation=generation)

    def replace(self, k: int) -> Slot:
        """Start a new slot on the same CPU block as slot ``k`` (after it died)."""
        old = self.slots[k]
        old.expected_exit = True
        kill_tree(old.pid, pgid=old.pid)
        if old.death is not None:
            with contextlib.suppress(OSError):
                old.death.close()
        with contextlib.suppress(ChildProcessError):
            old.proc.poll()
        new = self._exec(k, old.cpus, old.generation + 1)  # threads run now: no fork
        new.pump = self.funnel.pump(new.out, lambda: self.quiet)
        self.slots[k] = new
        return new

    def silent(self, states: Iterable[str | bytes], limit: float,
               now: float) -> list[tuple[Slot, float, int]]:
        """(slot, seconds silent, its chunk) of the live slots whose state record — the
        ``slot<K>`` JSON each slot refreshes while it renders — is older than ``limit``."""
        out: list[tuple[Slot, float, int]] = []
        for raw in states:
            try:
                rec = json.loads(raw)
                k, updated, chunk = int(rec["slot"]), float(rec["updated"]), int(rec["chunk"])
            except (ValueError, KeyError, TypeError):
                continue  # not a slot's, or an idle one (no chunk)
            if not 0 <= k < len(self.slots) or rec.get("state") in ("idle", "failed"):
                continue
            slot = self.slots[k]
            if rec.get("pid") == slot.pid and not slot.expected_exit and now - updated > limit:
                out.append((slot, now - updated, chunk))
        return out

    def last_error(self, k: int) -> tuple[str, Path] | None:
        """The last error line slot ``k`` logged, URLs masked, and the log that holds it
        (``slot<K>.celery.log`` or ``slot<K>.stderr.log``, the later written first): why a
        slot that cannot start died."""
        logs = [self.log_dir / f"slot{k}.{name}.log" for name in ("celery", "stderr")]
        logs.sort(key=lambda p: p.stat().st_mtime if p.exists() else 0.0, reverse=True)
        for path in logs:
            try:
                with open(path, "rb") as f:
                    f.seek(0, os.SEEK_END)
                    f.seek(max(0, f.tell() - 16384))
                    tail = f.read().decode("utf-8", "replace").splitlines()
            except OSError:
                continue
            for line in reversed(tail):
                if _ERROR_LINE.search(line):
                    text = _LOG_PREFIX.sub("", line.strip())
                    text = " ".join(mask_url(w) if "://" in w else w for w in text.split())
                    return text[:300], path
        return None

    def dead(self) -> list[Slot]:
        return [s for s in self.slots if s.proc.poll() is not None and not s.expected_exit]

    def kill_all(self) -> list[int]:
        """SIGKILL every slot's process group and tree; return pids that survived."""
        survivors: list[int] = []
        for s in self.slots:
            s.expected_exit = True
        self.job.kill_all()  # Windows: every slot tree in one call
        for s in self.slots:
            survivors += kill_tree(s.pid, pgid=s.pid, timeout=2.0)
        for s in self.slots:
            with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
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
            if s.death is not None:
                with contextlib.suppress(OSError):
                    s.death.close()
        self.job.close()
        for s in self.slots:
            if s.pump is not None:
                s.pump.join(timeout=1.0)
