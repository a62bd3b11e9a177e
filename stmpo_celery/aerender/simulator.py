"""A stand-in for ``aerender`` that behaves like the real program, without After Effects.

Run as ``stmpo-fake-aerender`` or ``python -m stmpo_celery.aerender.simulator`` with aerender's
command line (``-project P -comp NAME|-rqindex N -s S -e E -output PATTERN -mfr ON|OFF PCT
-v ... -close ... -sound OFF [-RStemplate T] [-OMtemplate T] [-mem_usage A B]
[-continueOnMissingFootage]``, or ``-version``). Like the real one it is a launcher: the
``aerender`` process starts a separate renderer named ``AfterFX`` (Linux) and relays its
output per line; its exit code is the renderer's (128+signal if killed). On SIGTERM the
launcher dies at once and the renderer keeps rendering despite the broken pipe: only
killing the whole tree stops it. The renderer starts slowly, prints the real log format
(``PROGRESS:  0:00:04:18 (118): 1 Seconds``, 24 fps) and writes, in place, one small but
structurally real file per frame (every still format After Effects writes:
``_fakeframes``), or one file at the end for a movie. A missing output folder prints
``aerender ERROR`` and exits 0; a write that fails (a full disk) prints After Effects'
``After Effects error: Rendering error while writing to file (PATH). REASON. ( 33 :: 7 )``
with no ``aerender ERROR`` marker, leaves what it wrote, and exits 0; a missing project or
an unknown flag exits 1.

Knobs (environment variables, all optional; a frame may also be a list ``N,M``):

``STMPO_FAKE_STARTUP``         seconds of start-up before rendering (default 2.0)
``STMPO_FAKE_FRAME_COST``      seconds per frame (default 0.05)
``STMPO_FAKE_HEAVY``           cost multipliers, e.g. ``100-149x10,200-210x3``
``STMPO_FAKE_RAMP``            ``1-240x10``: cost rises linearly from 1x at 1 to 10x at 240
                               (1x outside); cost depends only on the frame number
``STMPO_FAKE_FAIL_FRAME``      print ``aerender ERROR: After Effects error: ...``, stop, exit 0
``STMPO_FAKE_CRASH_FRAME``     the renderer SIGKILLs itself on reaching that frame
``STMPO_FAKE_CRASH_EXIT``      with CRASH_FRAME: exit with this code instead, silently
``STMPO_FAKE_HANG_FRAME``      stop printing at that frame and sleep forever (no CPU)
``STMPO_FAKE_BUSY_FRAME``      ``N:SECONDS``: frame N burns SECONDS of CPU, silently
``STMPO_FAKE_ONCE_DIR``        CRASH/HANG/FAIL/ORPHAN trigger once per frame: each first
                               creates ``DIR/<kind>-<frame>`` (O_EXCL); if that exists, the
                               frame renders normally
``STMPO_FAKE_IGNORE_SIGTERM``  ``1``: the renderer ignores SIGTERM (only SIGKILL works)
``STMPO_FAKE_MISSING_FONTS``   ``1``: warn ``Project has missing fonts`` (still succeeds)
``STMPO_FAKE_NO_WRITE_FRAME``  print that frame's progress line but write no file
``STMPO_FAKE_EMPTY_FRAME``     write a zero-byte file for that frame
``STMPO_FAKE_TRUNCATE_FRAME``  write only the first half of that frame's file, then go on
``STMPO_FAKE_WRITE_TIME``      seconds to write each frame in pieces (a big EXR): a kill
                               meanwhile leaves a partial file
``STMPO_FAKE_QUIT_TIME``       seconds After Effects takes to quit after its last frame
                               (its frames are all on disk; the chunk is not over yet)
``STMPO_FAKE_ORPHAN_FRAME``    after that frame the renderer SIGKILLs its launcher and renders
                               on holding the launcher's output pipe: no EOF for the reader
``STMPO_FAKE_MFR_SHUFFLE``     ``1``: with ``-mfr ON`` frames finish out of order in small
                               deterministic groups
``STMPO_FAKE_NUMBERING``       ``relative``: 1-based chunk numbers in parentheses; ``count``:
                               the number of frames done so far (wrong with MFR shuffle)
``STMPO_FAKE_FIELDS``          ``U`` or ``L``: field rendering, the number in parentheses
                               carries the field order (``(12U)``)
``STMPO_FAKE_FAILURE``         print a fatal-or-benign line: ``licence``/``startup`` (stop,
                               exit 0), ``serial``, ``missing-effect``, ``missing-deps``,
                               ``logged-error``, ``read-source`` (bare, no error marker),
                               ``outside-range``, ``autosave`` (render every frame, exit 0)
``STMPO_FAKE_OMP_CONFLICT``    ``1``: without ``KMP_DUPLICATE_LIB_OK=TRUE`` the renderer
                               prints ``OMP: Error #15`` and aborts
``STMPO_FAKE_JOURNAL``         append ``launch <launcher-pid> <s> <e> <time> cpus=<ids>`` at
                               start-up (``ids``: the CPUs the launcher may use),
                               ``begin|frame <f> <renderer-pid> <time>`` as a frame's file is
                               opened|written (movie: rendered), ``error``/``orphan`` likewise
                               at a strong error/launcher kill; one O_APPEND write per line
``STMPO_FAKE_ARGV_DUMP``       write the launcher's argv as a JSON list to this file
``STMPO_FAKE_ENV_DUMP``        ... its environment (what AE's plug-ins could read), a JSON object
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..plan import OutputPattern
from ._fakeframes import frame_writes, write_in_place
from ._simknobs import _TRUE, FAILURES, Knobs, UsageError, _env, frame_cost

VERSION = "24.6x1"
FPS = 24
MOVIE_FRAME_BYTES = 32 << 10  #: each frame of a movie adds this much to its file
RENDERER_FLAG = "--renderer"
_ONE_VALUE = {
    "-project", "-comp", "-rqindex", "-s", "-e", "-i", "-output", "-v", "-close",
    "-sound", "-rstemplate", "-omtemplate", "-log", "-r", "-t", "-f",
}  # fmt: skip
_TWO_VALUES = {"-mfr", "-mem_usage"}
_NO_VALUE = {"-continueonmissingfootage", "-reuse", "-mp", "-version"}


@dataclass
class Args:
    project: str = ""
    comp: str | None = None
    rqindex: int | None = None
    start: int = 0
    end: int = 0
    output: str = ""
    mfr: bool = False


def _int(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{flag} expects an integer, got {value!r}") from None


def scan_flags(argv: list[str]) -> dict[str, list[str]]:
    """Split aerender's single-dash command line by hand: values are taken verbatim."""
    values: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        flag = argv[i].lower()
        count = 1 if flag in _ONE_VALUE else 2 if flag in _TWO_VALUES else 0
        if count == 0 and flag not in _NO_VALUE:
            raise UsageError(f"Unrecognized flag or argument: {argv[i]!r}")
        if i + count >= len(argv):
            raise UsageError(f"{argv[i]} requires {count} value(s)")
        values[flag] = argv[i + 1 : i + 1 + count]
        i += 1 + count
    return values


def parse_args(argv: list[str]) -> Args:
    """Parse and check a render command line (flags are case-insensitive, last wins)."""
    values = scan_flags(argv)
    args = Args()
    if "-project" not in values:
        raise UsageError("No project specified: pass -project <path.aep>")
    args.project = values["-project"][0]
    if "-comp" in values:
        args.comp = values["-comp"][0]
    elif "-rqindex" in values:
        args.rqindex = _int("-rqindex", values["-rqindex"][0])
    else:
        raise UsageError("this renderer needs -comp NAME or -rqindex N")
    for flag in ("-s", "-e", "-output"):
        if flag not in values:
            raise UsageError(f"missing {flag}")
    args.start = _int("-s", values["-s"][0])
    args.end = _int("-e", values["-e"][0])
    if args.end < args.start:
        raise UsageError(f"end frame {args.end} is before start frame {args.start}")
    args.output = values["-output"][0]
    if "-mfr" in values:
        state, pct = values["-mfr"]
        if state.upper() not in ("ON", "OFF") or not 1 <= _int("-mfr", pct) <= 100:
            raise UsageError(f"-mfr expects ON|OFF and a percentage, got {state} {pct}")
        args.mfr = state.upper() == "ON"
    return args


# --- helpers -------------------------------------------------------------------------


def timecode(frame: int) -> str:
    """``118 -> 0:00:04:22`` at 24 fps (negative frames get a leading ``-``)."""
    sign, n = ("-" if frame < 0 else ""), abs(frame)
    ff, secs = n % FPS, n // FPS
    return f"{sign}{secs // 3600}:{secs // 60 % 60:02d}:{secs % 60:02d}:{ff:02d}"


def _set_process_name(name: str) -> None:
    """Best-effort, so ps/psutil show ``name`` (Linux only)."""
    from ..host import set_process_name

    with contextlib.suppress(Exception):
        set_process_name(name)


def _affinity() -> str:
    """The CPUs this launcher may run on, as pinned by its slot ("-" where unknowable)."""
    with contextlib.suppress(Exception):
        import psutil

        return ",".join(map(str, sorted(psutil.Process().cpu_affinity() or [])))
    return "-"


class _Out:
    """Line writer to fd 1 that goes quiet, instead of dying, once the reader is gone."""

    def __init__(self) -> None:
        self.broken = False

    def __call__(self, text: str) -> None:
        if self.broken:
            return
        try:
            os.write(1, (text + "\n").encode("utf-8", "replace"))
        except OSError:
            self.broken = True


def _journal(path: str, line: str) -> None:
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def _once(knobs: Knobs, kind: str, frame: int) -> bool:
    if not knobs.once_dir:
        return True
    try:
        fd = os.open(os.path.join(knobs.once_dir, f"{kind}-{frame}"), os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))


def _order(args: Args, knobs: Knobs) -> list[int]:
    frames = list(range(args.start, args.end + 1))
    if not (args.mfr and knobs.shuffle):
        return frames
    rng = random.Random(args.start * 7919 + args.end)
    out: list[int] = []
    for i in range(0, len(frames), 4):
        group = frames[i : i + 4]
        rng.shuffle(group)
        out.extend(group)
    return out


def _stamp() -> str:
    t = time.localtime()
    return f"{t.tm_mon}/{t.tm_mday}/{t.tm_year} {time.strftime('%I:%M:%S %p', t)}"


def _project_problem(args: Args) -> str | None:
    """What After Effects would refuse in a project it can read (a real .aep that py-aep
    parses): a comp that is not in it, a render-queue index past its queue."""
    try:
        with open(args.project, "rb") as fh:
            if fh.read(4) != b"RIFX":
                return None
        import py_aep

        proj = py_aep.parse(args.project).project
    except Exception:  # not readable here: After Effects would find out later
        return None
    if args.comp is not None and args.comp not in {c.name for c in proj.compositions}:
        return "No comp was found with the given name."
    queue = proj.render_queue.items if proj.render_queue else []
    if args.rqindex is not None and not 1 <= args.rqindex <= len(queue):
        return f"Render queue item {args.rqindex} does not exist."
    return None


# --- renderer ("AfterFX") ------------------------------------------------------------


def run_renderer(argv: list[str]) -> int:
    if _env("IGNORE_SIGTERM").lower() in _TRUE:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _set_process_name("AfterFX")  # after the handler: seeing the name means it is in place
    out = _Out()
    try:
        args, knobs = parse_args(argv), Knobs.from_env()
    except UsageError as exc:
        out(f"aerender ERROR: {exc}")
        return 1
    began = time.monotonic()
    _sleep(knobs.startup)
    if knobs.omp_conflict and os.environ.get("KMP_DUPLICATE_LIB_OK", "").upper() != "TRUE":
        out("OMP: Error #15: Initializing libiomp5md.dll, but found libiomp5md.dll already "
            "initialized.")
        out("OMP: Hint This means that multiple copies of the OpenMP runtime have been linked "
            "into the program.")
        os.kill(os.getpid(), getattr(signal, "SIGABRT", signal.SIGTERM))
        time.sleep(5)
        return 3
    failure, renders_on = FAILURES.get(knobs.failure, ("", True))
    if failure and not renders_on:
        out(failure)  # licence / start-up: After Effects never gets going, and exits 0
        return 0
    if not os.path.isfile(args.project):
        out(f"aerender ERROR: No project found at specified path: {args.project}")
        return 1
    out("PROGRESS: ...After Effects successfully launched")
    problem = _project_problem(args)
    if problem:
        out(f"aerender ERROR: {problem}")  # and exit 0, as After Effects does
        return 0
    if failure:
        out(failure)
    if knobs.missing_fonts:
        out("WARNING:After Effects warning: Project has missing fonts")
    name = args.comp if args.comp is not None else f"Comp {args.rqindex}"
    count = args.end - args.start + 1
    out("PROGRESS: Adding specified comp to Render Queue")
    out(f"PROGRESS:  {_stamp()}: Starting composition {name}.")
    out("PROGRESS:  Render Settings: Best Settings")
    out("PROGRESS:      Quality: Best")
    out("PROGRESS:      Resolution: Full")
    out(f"PROGRESS:      Start: {timecode(args.start)}")
    out(f"PROGRESS:      End: {timecode(args.end)}")
    out(f"PROGRESS:      Duration: {timecode(count)} ({count})")
    out(f"PROGRESS:      Frame Rate: {FPS:.2f} (comp)")
    out("PROGRESS:  Output Module: Lossless")
    out(f"PROGRESS:      Output To: {args.output}")
    pattern = OutputPattern(args.output)
    folder = os.path.dirname(os.path.abspath(pattern.path_for(args.start)))
    if not os.path.isdir(folder):
        out(f"aerender ERROR: Unable to render: output folder does not exist: {folder}")
        return 0
    pid = os.getpid()
    # A movie is written as it renders, like After Effects does: a header first, one
    # record per frame, the index at the end. A renderer stopped mid-way leaves a file
    # of non-zero size that no player can open.
    def write_failed(path: str, exc: OSError) -> int:  # After Effects' words; exit 0
        out(f"After Effects error: Rendering error while writing to file ({path}). "
            f"{exc.strerror or exc}. ( 33 :: 7 )")
        if movie is not None:  # a full disk: what is left is unfinished, and stays so
            with contextlib.suppress(OSError):
                movie.close()
        return 0

    movie = None
    if not pattern.is_sequence:
        try:
            movie = open(pattern.raw, "wb")  # noqa: SIM115
            movie.write(b"stmpo fake movie: unfinished\n")
            movie.flush()
        except OSError as exc:
            return write_failed(pattern.raw, exc)
    for done, frame in enumerate(_order(args, knobs), 1):
        if frame in knobs.fail and _once(knobs, "fail", frame):
            _journal(knobs.journal, f"error {frame} {pid} {time.time():.6f}")
            out("aerender ERROR: After Effects error: Unable to allocate enough memory to "
                f"render frame {frame}. ( 23 :: 46 )")  # fmt: skip
            return 0
        if frame in knobs.crash and _once(knobs, "crash", frame):
            if knobs.crash_exit is not None:
                return knobs.crash_exit
            os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
            time.sleep(5)
            return 3
        if frame in knobs.hang and _once(knobs, "hang", frame):
            while True:
                time.sleep(3600)
        t0 = time.monotonic()
        if frame in knobs.busy:  # CPU seconds, as the knob says: a loaded host takes longer
            deadline = time.process_time() + knobs.busy[frame]
            while time.process_time() < deadline:
                sum(i * i for i in range(1000))
        else:
            _sleep(frame_cost(frame, knobs))
        if pattern.is_sequence and frame not in knobs.no_write:
            _journal(knobs.journal, f"begin {frame} {pid} {time.time():.6f}")
            try:
                writes = [] if frame in knobs.empty else frame_writes(pattern.path_for(frame),
                                                                      frame)
                if frame in knobs.truncate:
                    writes = writes[: max(1, len(writes) // 2)]
                write_in_place(pattern.path_for(frame), writes, knobs.write_time)
            except OSError as exc:
                return write_failed(pattern.path_for(frame), exc)
        if movie is not None and frame not in knobs.no_write:
            try:
                # a frame of a movie is tens of KiB at least, not a line of text
                movie.write(f"frame {frame}\n".encode() + bytes(MOVIE_FRAME_BYTES))
                movie.flush()
            except OSError as exc:
                return write_failed(pattern.raw, exc)
        if frame not in knobs.no_write:
            _journal(knobs.journal, f"frame {frame} {pid} {time.time():.6f}")
        if frame in knobs.orphan and _once(knobs, "orphan", frame):
            _journal(knobs.journal, f"orphan {frame} {pid} {time.time():.6f}")
            with contextlib.suppress(OSError):  # the launcher dies; we render on
                os.kill(os.getppid(), getattr(signal, "SIGKILL", signal.SIGTERM))
        number = done if knobs.count else frame - args.start + 1 if knobs.relative else frame
        seconds = round(time.monotonic() - t0)
        out(f"PROGRESS:  {timecode(frame)} ({number}{knobs.fields}): {seconds} Seconds")
    if movie is not None:
        try:
            movie.seek(0)
            movie.write(b"stmpo fake movie: complete  \n")  # same length: in place
            movie.close()
        except OSError as exc:
            return write_failed(pattern.raw, exc)
    out(f"PROGRESS:  {_stamp()}: Finished composition {name}.")
    out(f"PROGRESS:  Total Time Elapsed: {round(time.monotonic() - began)} Seconds")
    time.sleep(knobs.quit_time)
    return 0


# --- launcher ("aerender") ------------------------------------------------------------


def run_launcher(argv: list[str]) -> int:
    _set_process_name("aerender")
    out = _Out()
    out(f"aerender version {VERSION}")
    for knob, what in (("ARGV_DUMP", argv), ("ENV_DUMP", dict(os.environ))):
        if dump := _env(knob):
            Path(dump).write_text(json.dumps(what, ensure_ascii=False), encoding="utf-8")
    try:
        if "-version" in scan_flags(argv):
            return 0
        args, knobs = parse_args(argv), Knobs.from_env()
    except UsageError as exc:
        out(f"aerender ERROR: {exc}")
        out("Usage: aerender -project <path> -comp <name> -s <start> -e <end> -output <path>")
        return 1
    _journal(knobs.journal, f"launch {os.getpid()} {args.start} {args.end} {time.time():.6f} "
                            f"cpus={_affinity()}")
    out("PROGRESS: Launching After Effects...")
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "stmpo_celery.aerender.simulator", RENDERER_FLAG, *argv]
    # ORPHAN_FRAME: the renderer inherits our stderr (the caller's pipe) and holds it
    stderr = None if knobs.orphan else subprocess.STDOUT
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=stderr, env=env)  # fmt: skip
    assert proc.stdout is not None
    for raw in proc.stdout:
        out(raw.decode("utf-8", "replace").rstrip("\r\n"))
    code = proc.wait()
    return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == [RENDERER_FLAG]:
            return run_renderer(argv[1:])
        return run_launcher(argv)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
