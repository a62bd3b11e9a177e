"""Check a render's inputs before anything starts: one clear line, exit 2 or 3."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..aerender._argv import resolve_aerender
from ..broker._redis import (
    BrokerUrl,
    check_reachable,
    find_redis_server,
    no_redis_server_problem,
    parse_broker_url,
)
from ..config import defaults
from ..config._options import RenderOptions
from ..errors import BadInput
from ..host._platform import check_start_method, long_path
from ..monitor._flowerctl import check_bind
from ..monitor._hostsvc import discover_broker
from ..plan._chunks import SCHEDULES
from ..plan._frames import parse_frames
from ..plan._pattern import OutputPattern, parse_output
from ..slot._chunk import missing_frames


@dataclass
class Prepared:
    options: RenderOptions
    project: str
    pattern: OutputPattern
    frames: list[int]  #: every requested frame
    to_render: list[int]  #: requested minus frames already on disk (with --skip-existing)
    aerender: str
    broker: BrokerUrl | None  #: None = embedded
    chunk_size: int | None
    notes: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[int]:
        todo = set(self.to_render)
        return [f for f in self.frames if f not in todo]


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        need = "zero or more" if allow_zero else "more than zero"
        raise BadInput(f"{name} is {value:g}: it must be {need}")


def check_numbers(o: RenderOptions) -> int | None:
    """Numeric options; returns the chunk size (None = auto)."""
    _positive("--concurrency", o.concurrency, allow_zero=True)
    _positive("--max-concurrency", o.max_concurrency)
    _positive("--ram-per-process-gb", o.ram_per_process_gb)
    if o.threads_per_slot is not None:
        _positive("--threads-per-slot", o.threads_per_slot)
    if not 1 <= o.mfr_max_cpu <= 100:
        raise BadInput(f"--mfr-max-cpu is {o.mfr_max_cpu}: use a percentage from 1 to 100")
    _positive("--launch-cost", o.launch_cost, allow_zero=True)
    _positive("--spawn-delay", o.spawn_delay, allow_zero=True)
    _positive("--retries", o.retries, allow_zero=True)
    _positive("--stall-timeout", o.stall_timeout, allow_zero=True)
    _positive("--chunk-timeout", o.chunk_timeout, allow_zero=True)
    if o.schedule not in SCHEDULES:
        raise BadInput(f"--schedule {o.schedule!r} is unknown: use one of {', '.join(SCHEDULES)}")
    size = str(o.chunk_size).strip().lower()
    if size == "auto":
        return None
    if not size.lstrip("-").isdigit() or int(size) <= 0:
        raise BadInput(f"--chunk-size {o.chunk_size!r} is not a frame count: use auto or e.g. 10")
    if o.schedule == "static":
        raise BadInput("--chunk-size does nothing with --schedule static (N equal blocks): "
                       "drop it, or use --schedule fixed")
    return int(size)


def prepare(o: RenderOptions) -> Prepared:
    """Validate everything, in an order that creates nothing until all else is known good."""
    if (o.comp is None) == (o.rqindex is None):
        raise BadInput("pass exactly one of --comp NAME or --rqindex N")
    if o.comp is not None and not o.comp.strip():
        raise BadInput("--comp is empty: pass the composition's name as After Effects shows it")
    if o.rqindex is not None and o.rqindex < 1:
        raise BadInput(f"--rqindex {o.rqindex} is not a render-queue index: they start at 1")
    bad_method = check_start_method()
    if bad_method:
        raise BadInput(bad_method)
    frames = parse_frames(o.frames)
    pattern = parse_output(o.output)
    chunk_size = check_numbers(o)
    if o.flower:
        check_bind(o.flower, o.flower_auth, o.flower_url_prefix)
    if not pattern.is_sequence and o.concurrency > 1:
        raise BadInput(
            f"--output {o.output!r} has no frame token, so one process must write the movie: "
            "drop --concurrency or render an image sequence with [#####]"
        )
    if not o.project or not o.project.strip():
        raise BadInput("--project is empty: pass the .aep file to render")
    project = os.path.abspath(o.project)
    if not os.path.exists(project):
        raise BadInput(f"project file does not exist: {project}")
    if not os.path.isfile(project):
        raise BadInput(f"project is not a file: {project}")
    aerender = resolve_aerender(o.aerender)
    broker: BrokerUrl | None = None
    notes: list[str] = []
    url = o.broker or os.environ.get(defaults.BROKER_ENV) or None
    if not url:
        url = discover_broker()
        if url:
            notes.append("using the host service's Redis (stmpo host up)")
    if url:
        broker = parse_broker_url(url)
        check_reachable(broker)
    elif find_redis_server() is None:
        raise no_redis_server_problem()
    pattern = OutputPattern(os.path.abspath(pattern.raw))
    out_dir = os.path.dirname(pattern.path_for(frames[0])) or "."
    try:
        os.makedirs(long_path(out_dir), exist_ok=True)
    except OSError as exc:
        raise BadInput(
            f"output directory cannot be created: {out_dir} ({exc.strerror}): "
            "fix --output or the folder's permissions"
        ) from None
    if not os.access(long_path(out_dir), os.W_OK | os.X_OK):
        raise BadInput(f"output directory is not writable: {out_dir}")
    to_render = frames
    if o.skip_existing and pattern.is_sequence:
        missing = set(missing_frames(pattern, frames))
        to_render = [f for f in frames if f in missing]
        if len(to_render) < len(frames):
            notes.append(f"skipping {len(frames) - len(to_render)} frame(s) already on disk")
    return Prepared(o, project, pattern, frames, to_render, aerender, broker, chunk_size, notes)
