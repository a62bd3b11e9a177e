"""Check a render's inputs before anything starts: one clear line, exit 2 or 3."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field

from ..aerender._argv import resolve_aerender
from ..broker._redis import BrokerUrl, check_reachable, parse_broker_url
from ..config import defaults
from ..config._options import RenderOptions
from ..errors import BadInput
from ..monitor._flowerctl import check_bind
from ..monitor._hostsvc import discover_broker
from ..plan._chunks import SCHEDULES
from ..plan._frames import parse_frames
from ..plan._pattern import OutputPattern, parse_output
from ..slot._chunk import missing_frames
from ._logdir import check_log_dir, check_summary


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


NAME_MAX = 255  #: bytes in one file name on every file system a farm uses


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if not math.isfinite(value):
        raise BadInput(f"{name} is {value}: it must be a finite number")
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
    pattern = OutputPattern(os.path.abspath(pattern.raw))
    check_output_path(pattern, frames)
    check_log_dir(o.log_dir)
    check_summary(o.summary)
    to_render = frames
    if o.skip_existing and pattern.is_sequence:
        missing = set(missing_frames(pattern, frames))
        to_render = [f for f in frames if f in missing]
        if len(to_render) < len(frames):
            notes.append(f"skipping {len(frames) - len(to_render)} frame(s) already on disk")
    return Prepared(o, project, pattern, frames, to_render, aerender, broker, chunk_size, notes)


def check_output_path(pattern: OutputPattern, frames: list[int]) -> None:
    """The output's folder can be created and written, and each frame's name is legal;
    nothing is created yet (:func:`create_output_dir` does, once every check passed)."""
    out_dir = os.path.dirname(pattern.path_for(frames[0])) or "."
    if "[#" in os.path.dirname(pattern.raw):
        raise BadInput(f"--output {pattern.raw!r} has a frame token in its folder: "
                       "put [#####] in the file name")
    for f in (frames[0], frames[-1]):
        name = os.path.basename(pattern.path_for(f))
        if len(os.fsencode(name)) > NAME_MAX:
            raise BadInput(f"--output file name is {len(os.fsencode(name))} bytes long: "
                           f"file systems allow {NAME_MAX}; shorten it")
    probe = out_dir
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        why = "is not a folder" if not os.path.isdir(probe) else "is not writable"
        raise BadInput(f"output directory cannot be created: {out_dir} ({probe} {why}): "
                       "fix --output or the folder's permissions")


def _make_dirs(path: str, made: list[str]) -> None:
    """``os.makedirs`` that records each folder it created (to undo on a later failure)."""
    path = os.path.abspath(path)
    todo = []
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        todo.append(path)
        path = os.path.dirname(path)
    for d in reversed(todo):
        os.mkdir(d)
        made.append(d)


def create_outputs(prep: Prepared) -> None:
    """The last step before the run starts, once every check passed: create the output
    and log folders and prove the summary can be written; on a failure, remove what this
    created and raise :class:`BadInput`."""
    o = prep.options
    made: list[str] = []
    what = ""
    try:
        if o.log_dir:
            what = f"--log-dir {o.log_dir} cannot be created"
            _make_dirs(o.log_dir, made)
        if o.summary:
            what = f"--summary {o.summary} cannot be written"
            folder = os.path.dirname(os.path.abspath(o.summary))
            _make_dirs(folder, made)
            probe = os.path.join(folder, f".stmpo-probe-{os.getpid()}")
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
        out_dir = os.path.dirname(prep.pattern.path_for(prep.frames[0])) or "."
        what = f"output directory cannot be created: {out_dir}"
        _make_dirs(out_dir, made)
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
    except OSError as exc:
        for d in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(d)
        raise BadInput(f"{what} ({exc.strerror or exc}): fix the path or the folder's "
                       "permissions") from None
