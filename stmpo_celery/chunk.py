"""One chunk inside a slot: run aerender's tree, read its log, verify frames on disk.

The outcome never trusts aerender's exit code alone: a strong error line fails the
chunk even on exit 0, and so does any expected frame that is not a non-empty file.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from . import defaults, events, keys
from .aelog import AerenderLog, AeWarning, FrameDone, StrongError
from .aerender import build_argv
from .pattern import OutputPattern
from .proc import descendants, kill_procs
from .spec import RunSpec


class ChunkFailed(Exception):
    """A chunk did not produce its frames; the message is one line for a human."""


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


@dataclass
class SlotContext:
    spec: RunSpec
    slot: int
    client: redis.Redis
    out_fd: int = 1
    chunks_run: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def emit(self, label: str, line: str) -> None:
        """One whole line into the merged stream (the orchestrator's log funnel)."""
        data = f"[slot {self.slot} {label}] {line}\n".encode(errors="replace")
        with self.lock, contextlib.suppress(OSError):
            os.write(self.out_fd, data)

    def publish(self, kind: str, **fields: Any) -> None:
        with contextlib.suppress(redis.RedisError):
            events.publish(self.client, self.spec.run_id, kind, **{"slot": self.slot, **fields})

    def aborted(self) -> str | None:
        try:
            value = self.client.get(keys.abort_key(self.spec.run_id))
        except redis.RedisError:
            return None
        return str(value) if value else None


def frames_label(start: int, end: int) -> str:
    return f"f{start}" if start == end else f"f{start}-{end}"


def run_chunk(ctx: SlotContext, index: int, start: int, end: int) -> dict[str, Any]:
    spec = ctx.spec
    label = frames_label(start, end)
    frames = list(range(start, end + 1))
    pattern = OutputPattern(spec.target.output)
    first_launch = ctx.chunks_run == 0
    ctx.chunks_run += 1
    if first_launch and spec.spawn_delay > 0 and ctx.slot > 0:
        # Stagger only each slot's first launch: AE start-ups in the same instant collide.
        deadline = time.monotonic() + spec.spawn_delay * ctx.slot
        while time.monotonic() < deadline:
            if ctx.aborted():
                raise ChunkFailed("run aborted before launch")
            time.sleep(0.05)

    log_path = Path(spec.log_dir) / f"chunk{index:04d}-{label}-slot{ctx.slot}.log"
    argv = build_argv(spec.aerender, spec.target, start, end)
    t0 = time.time()
    ctx.publish("chunk-start", index=index, start=start, end=end, log=str(log_path))
    parser = AerenderLog(start, end)
    strong: list[str] = []
    warnings: list[str] = []
    first_frame_at: float | None = None
    stop = threading.Event()

    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, close_fds=True,
        )
    except OSError as exc:
        why = f"aerender could not start: {exc.strerror or exc}"
        ctx.publish("chunk-failed", index=index, start=start, end=end, reason=why,
                    tail=[], exit_code=None, missing=frames, retryable=False)
        raise ChunkFailed(f"chunk {index} {label} on slot {ctx.slot}: {why}") from None

    def kill_renderer() -> None:
        kill_procs(descendants(os.getpid()), timeout=defaults.KILL_WAIT_S)

    def watch_abort() -> None:
        while not stop.wait(0.1):
            if ctx.aborted():
                kill_renderer()
                return

    watcher = threading.Thread(target=watch_abort, name="stmpo-abortwatch", daemon=True)
    watcher.start()
    assert proc.stdout is not None
    with open(log_path, "ab") as log:
        for raw in iter(proc.stdout.readline, b""):
            log.write(raw)
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            ctx.emit(label, line)
            for ev in parser.feed(line):
                if isinstance(ev, FrameDone):
                    if first_frame_at is None:
                        first_frame_at = time.time()
                    ctx.publish("frame", index=index, frame=ev.frame, number=ev.number,
                                done=parser.done_count, total=len(frames))
                elif isinstance(ev, StrongError):
                    strong.append(ev.text)
                    kill_renderer()  # deterministic failure: do not let AE go on
                elif isinstance(ev, AeWarning):
                    warnings.append(ev.text)
                    ctx.publish("warning", index=index, text=ev.text)
        log.flush()
    code = proc.wait()
    stop.set()
    watcher.join(timeout=1)
    t1 = time.time()

    missing = missing_frames(pattern, frames)
    aborted = ctx.aborted()
    result: dict[str, Any] = {
        "index": index, "slot": ctx.slot, "start": start, "end": end,
        "t0": t0, "t1": t1, "exit_code": code,
        "launch_s": (first_frame_at - t0) if first_frame_at else None,
        "frames_rendered": len(frames) - len(missing), "missing": missing,
        "warnings": warnings, "log": str(log_path),
    }
    reason: str | None = None
    retryable = False
    if strong:
        reason = f"aerender reported: {strong[0].strip()}"
    elif aborted:
        reason = f"stopped: {aborted}"
    elif code != 0:
        reason = f"aerender exited with code {code}"
        retryable = True
    elif missing:
        reason = (f"{len(missing)} frame(s) missing on disk after aerender exited 0 "
                  f"(first: {pattern.path_for(missing[0])})")
        retryable = True
    if reason is None:
        ctx.publish("chunk-done", **result)
        return result
    tail = parser.tail()[-defaults.LOG_TAIL_LINES:]
    ctx.publish("chunk-failed", **result, reason=reason, tail=tail, retryable=retryable)
    raise ChunkFailed(f"chunk {index} {label} on slot {ctx.slot}: {reason}")
