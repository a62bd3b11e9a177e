"""Check a render's inputs before anything starts: one clear line, exit 2 or 3."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field

from ..aerender import (
    RenderTarget,
    check_target,
    missing_frames,
    resolve_aerender,
    signatures,
)
from ..broker import (
    BrokerUrl,
    check_reachable,
    find_redis_server,
    keys,
    no_redis_server_problem,
    parse_broker_url,
)
from ..config import (
    MFR_CPU_IDLE,
    SETTINGS,
    RenderOptions,
    check_combinations,
    defaults,
    idle_flag,
    parse_chunk_size,
    refuse_for_movie,
)
from ..errors import BadInput, EnvironmentProblem
from ..host import (
    check_output_names,
    check_start_method,
    long_path,
    make_dirs,
    no_space,
    remove_made,
    uncreatable,
    write_all,
)
from ..monitor import check_bind, discover_broker
from ..plan import (
    NAME_MAX,
    OutputPattern,
    name_bytes,
    parse_frames,
    parse_output,
)
from ..slot import ledger_dir, settle_ledgers
from ..text import directive
from ._logdir import check_log_dir, check_summary
from ._outlock import Busy, OutputLock, acquire, stopped


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
    run_id: str = field(default_factory=keys.new_run_id)
    lock: OutputLock | None = None  #: this run's claim on its output frames
    made: list[str] = field(default_factory=list)  #: folders this run created, in order
    #: the files of frames to render that exist before the run (a frame counts once its
    #: file is whole and not this one)
    before: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    def render_target(self) -> RenderTarget:
        """What every aerender of this run renders (the slots' part of the command line)."""
        o = self.options
        return RenderTarget(
            project=self.project, output=self.pattern.raw, comp=o.comp,
            rqindex=o.rqindex, mfr=o.mfr, mfr_max_cpu=o.mfr_max_cpu,
            rs_template=o.rs_template, om_template=o.om_template, mem_usage=o.mem_usage,
            continue_on_missing_footage=o.continue_on_missing_footage,
            ignore_missing_effects=o.ignore_missing_effects,
        )

    def release(self) -> None:
        """Give up the output claim, and remove the folders this run created that are
        still empty (a run cancelled before its first frame leaves nothing behind)."""
        if self.lock is not None:
            self.lock.release()
        remove_made(self.made)

    @property
    def skipped(self) -> list[int]:
        todo = set(self.to_render)
        return [f for f in self.frames if f not in todo]




#: still-image formats After Effects writes one file per frame: without a frame token
#: every frame would overwrite the same file
STILL_FORMATS = frozenset({"png", "jpg", "jpeg", "exr", "tif", "tiff", "dpx", "cin", "tga",
                           "bmp", "psd", "iff", "hdr", "sgi", "pic", "pxr"})


def check_output_kind(pattern: OutputPattern, n_frames: int) -> None:
    """An output that is a folder, or a still-image name without a frame token for more
    than one frame, would render for nothing: refuse it before anything starts."""
    raw = pattern.raw
    if raw.endswith(("/", os.sep)) or os.path.isdir(raw):
        raise BadInput(f"--output {raw!r} is a folder: name the files, e.g. "
                       f"{os.path.join(raw, 'shot_[#####].png')}")
    ext = os.path.splitext(raw)[1].lower().lstrip(".")
    if not pattern.is_sequence and ext in STILL_FORMATS and n_frames > 1:
        stem = os.path.splitext(os.path.basename(raw))[0].rstrip("#_.-") or "frame"
        raise BadInput(f"--output {raw!r} is a .{ext} image but has no [#####] frame token, "
                       f"so every frame would overwrite one file: write e.g. "
                       f"{stem}_[#####].{ext}")


def check_idle_flags(o: RenderOptions, movie: bool = False, planning: bool = False) -> None:
    """Flags typed on the command line that the rest of it makes do nothing (an
    environment variable or a profile may set them for every render: not refused). A
    ``movie`` is rendered whole by one process (no schedule to steer); ``planning``
    (``stmpo plan``) uses the launch cost for every schedule's predicted makespan."""
    def typed(name: str) -> bool:
        return o.sources.get(name, "").startswith("--")

    idle: list[tuple[str, str]] = []  # (flag, why it does nothing)
    if typed("mfr_max_cpu") and not o.mfr:
        idle.append((o.origin("mfr_max_cpu"), MFR_CPU_IDLE))
    for name in ("launch_cost", "history"):
        if not typed(name) or (name == "history" and not o.history) or \
                (name == "launch_cost" and planning):
            continue
        if movie:
            idle.append((o.origin(name), "a movie is rendered whole by one aerender "
                                         "process, with no steals to plan"))
        elif o.schedule != "adaptive":
            idle.append((o.origin(name), f"only the adaptive schedule uses it, and "
                                         f"{o.origin('schedule')} is {o.schedule}"))
    if typed("flower_auth") and not o.flower:
        idle.append((o.origin("flower_auth"), "no Flower is started without --flower"))
    if idle:
        raise idle_flag(*idle[0])


def check_numbers(o: RenderOptions, movie: bool = False, planning: bool = False) -> int | None:
    """Every setting's own range (from the settings table), then the combinations;
    returns the chunk size (None = auto). For a ``movie``, one aerender process renders
    it whole: a flag given for how frames are shared out over slots does nothing, and is
    refused as ``stmpo bundle`` refuses it (``--concurrency 1`` says what happens).
    ``planning``: for ``stmpo plan`` (see :func:`check_idle_flags`)."""
    for setting in SETTINGS.values():
        setting.check(getattr(o, setting.name))
    check_combinations({"schedule": o.schedule, "chunk_size": o.chunk_size}, o.origin)
    check_idle_flags(o, movie, planning)
    if movie:
        refuse_for_movie(o.output, [s.spelled(getattr(o, s.name)) for s in SETTINGS.values()
                                    if s.image_only
                                    and o.sources.get(s.name, "").startswith("--")
                                    and not (s.name == "concurrency" and o.concurrency == 1)])
    return parse_chunk_size(o.chunk_size)


def prepare(o: RenderOptions) -> Prepared:
    """Validate everything, in an order that creates nothing until all else is known good."""
    check_target(o.comp, o.rqindex)
    bad_method = check_start_method()
    if bad_method:
        raise BadInput(bad_method)
    frames = parse_frames(o.frames)
    pattern = parse_output(o.output)
    check_output_names(pattern, frames)
    check_output_kind(pattern, len(frames))
    chunk_size = check_numbers(o, movie=not pattern.is_sequence)
    if o.flower:
        check_bind(o.flower, o.flower_auth, o.flower_url_prefix)
    else:
        idle = [flag for flag, value in (("--flower-url-prefix", o.flower_url_prefix),
                                         ("--flower-linger", o.flower_linger)) if value]
        if idle:
            raise BadInput(f"{', '.join(idle)} set(s) up the run's own Flower, which only "
                           "--flower [HOST:]PORT starts: add --flower, or drop "
                           f"{'them' if len(idle) > 1 else 'it'}")
    if not o.project or not o.project.strip():
        raise BadInput("--project is empty: pass the .aep file to render")
    project = os.path.abspath(o.project)
    if not os.path.exists(project):
        raise BadInput(f"project file does not exist: {project}: check --project (a relative "
                       "path starts in the current folder)")
    if not os.path.isfile(project):
        raise BadInput(f"project is not a file: {project}: pass the .aep file itself")
    if os.path.getsize(project) == 0:  # a copy or a save that failed half-way
        raise BadInput(f"project file is empty (0 bytes): {project}: save the project again "
                       "or pass the right file")
    aerender = resolve_aerender(o.aerender)
    broker: BrokerUrl | None = None
    notes: list[str] = []
    url = o.broker or os.environ.get(defaults.BROKER_ENV) or None
    if not url:
        url = discover_broker(why=notes)
        if url:
            notes.append("using the host service's Redis (stmpo host up)")
    if url:
        broker = parse_broker_url(url)
        check_reachable(broker)
    elif find_redis_server() is None:
        raise no_redis_server_problem()
    pattern = OutputPattern(os.path.abspath(pattern.raw))
    check_output_path(pattern, frames)
    check_log_dir(o.log_dir)
    check_summary(o.summary)
    # what to render is decided by create_outputs, under the output lock
    return Prepared(o, project, pattern, frames, frames, aerender, broker, chunk_size, notes)


def check_output_path(pattern: OutputPattern, frames: list[int]) -> None:
    """The output's folder can be created and written, and each frame's name is legal;
    nothing is created yet (:func:`create_output_dir` does, once every check passed)."""
    out_dir = os.path.dirname(pattern.path_for(frames[0])) or "."
    if "[#" in os.path.dirname(pattern.raw):
        raise BadInput(f"--output {pattern.raw!r} has a frame token in its folder: "
                       "put [#####] in the file name")
    for f in (frames[0], frames[-1]):
        name = os.path.basename(pattern.path_for(f))
        if name_bytes(name) > NAME_MAX:
            raise BadInput(f"--output file name is {name_bytes(name)} bytes long: "
                           f"file systems allow {NAME_MAX}; shorten it")
    blocked = uncreatable(out_dir)
    if blocked is not None:
        raise BadInput(f"output directory cannot be created: {out_dir} ({' '.join(blocked)}): "
                       "fix --output or the folder's permissions")


def create_outputs(prep: Prepared) -> None:
    """The last step before the run starts, once every check passed: create the output
    and log folders and prove the summary can be written (on a failure, remove what this
    created and raise :class:`BadInput`), then :func:`claim_output`."""
    o = prep.options
    made = prep.made
    what = ""
    try:
        if o.log_dir:
            what = f"{o.origin('log_dir')} {o.log_dir} cannot be created"
            make_dirs(o.log_dir, made)
            what = f"{o.origin('log_dir')} {o.log_dir} cannot be written"
            probe_space(o.log_dir)
        if o.summary:
            what = f"--summary {o.summary} cannot be written"
            folder = os.path.dirname(os.path.abspath(o.summary))
            make_dirs(folder, made)
            probe_space(folder)
        out_dir = os.path.dirname(prep.pattern.path_for(prep.frames[0])) or "."
        what = f"output directory cannot be created: {out_dir}"
        make_dirs(long_path(out_dir), made)
        if not os.access(long_path(out_dir), os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
        what = f"output directory cannot be written: {out_dir}"
        probe_space(long_path(out_dir))
        temp = tempfile.gettempdir()  # the run's own folder: its spec, its Redis, its logs
        what = f"the temp folder {temp} cannot be written"
        probe_space(temp)
    except OSError as exc:
        remove_made(made)
        if no_space(exc):  # the host, not the job: exit 3
            raise EnvironmentProblem(f"{what} ({exc.strerror or exc}): free space there") from None
        raise BadInput(f"{what} ({exc.strerror or exc}): fix the path or the folder's "
                       "permissions") from None
    claim_output(prep)


PROBE_BYTES = 64 * 1024  #: a folder must take this much before the run starts


def probe_space(folder: str) -> None:
    """Write (and flush to the file system) ``PROBE_BYTES`` in ``folder``, then remove them:
    creating an empty file succeeds on a full disk, writing does not. The probe is named
    by host and pid, so one that is there already was left by a process of this pid on
    this host that was killed mid-probe — pids come back (at once on Windows, always 32
    under Wine, 1 in a container) — and is removed, not taken for an unwritable folder."""
    probe = os.path.join(folder, f".stmpo-probe-{keys.host_name()}-{os.getpid()}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.unlink(probe)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_all(fd, bytes(PROBE_BYTES), probe)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(probe)


def claim_output(prep: Prepared) -> None:
    """Claim the output (refused if a live run renders any of these frames), delete what
    dead runs left half-written (their in-flight ledgers), then decide what to render:
    with ``--skip-existing``, the frames not already whole on disk."""
    pattern, frames, notes = prep.pattern, prep.frames, prep.notes
    o = prep.options
    openjd = o.progress == "openjd" or (o.progress == "auto" and not sys.stdout.isatty())

    def waiting(busy: Busy, left: float) -> None:
        text = (f"frames {busy.shared} are being rendered by {busy.holder()}: waiting up to "
                f"{left:.0f} s more for it to end ({o.origin('output_lock_wait')})")
        print(f"stmpo: {text}", flush=True)
        if openjd:
            print(directive("openjd_status", f"waiting for {busy.holder()} to end"), flush=True)

    prep.lock, live = acquire(pattern, frames, prep.run_id, o.output_lock_wait, waiting)
    partial = settle_ledgers(ledger_dir(pattern), stopped(pattern, live))
    if partial:
        notes.append(f"deleted {len(partial)} frame(s) a stopped run left half-written "
                     f"(first: {partial[0]})")
    # still half-written, and another process has them open: never taken for frames
    held = partial.held(pattern, frames)
    if held:
        notes.append(f"WARNING: {len(held)} frame(s) a stopped run left half-written could "
                     f"not be deleted (another process has them open; first: "
                     f"{partial.kept[0]}): they are rendered again")
    prep.to_render = frames
    if prep.options.skip_existing and pattern.is_sequence:
        missing = set(missing_frames(pattern, frames)) | held
        prep.to_render = [f for f in frames if f in missing]
        if len(prep.to_render) < len(frames):
            notes.append(f"skipping {len(frames) - len(prep.to_render)} frame(s) already "
                         "whole on disk")
    prep.before = signatures(pattern, prep.to_render)
