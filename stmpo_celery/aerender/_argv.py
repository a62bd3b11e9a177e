"""aerender: where it is and what to tell it (pure except for path look-ups)."""

from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass, field

from ..config import defaults
from ..errors import BadInput, EnvironmentProblem
from ..host import OS, install_globs, newest_first, runs_batch_files

AERENDER_ENV = "AERENDER_PATH"
#: the variable the official Deadline Cloud After Effects adaptor reads: a host set up for
#: it finds its aerender here too (after AERENDER_PATH)
ADAPTOR_AERENDER_ENV = "AFTEREFFECTS_ADAPTOR_AERENDER_EXE"


@dataclass(frozen=True)
class RenderTarget:
    """What one aerender run renders; the parts that never change within a run."""

    project: str
    output: str
    comp: str | None = None
    rqindex: int | None = None
    mfr: bool = True
    mfr_max_cpu: int = 90
    verbosity: str = field(default_factory=lambda: defaults.VERBOSITY)
    rs_template: str | None = None
    om_template: str | None = None
    mem_usage: tuple[int, int] | None = None
    continue_on_missing_footage: bool = False
    #: missing effects / layer dependencies are warnings instead of failing the chunk
    ignore_missing_effects: bool = False


def check_target(comp: str | None, rqindex: int | None) -> None:
    """Exactly one of ``-comp NAME`` and ``-rqindex N``, each well formed."""
    if (comp is None) == (rqindex is None):
        raise BadInput("pass exactly one of --comp NAME or --rqindex N")
    if comp is not None and not str(comp).strip():
        raise BadInput("--comp is empty: pass the composition's name as After Effects shows it")
    if rqindex is not None and rqindex < 1:
        raise BadInput(f"--rqindex {rqindex} is not a render-queue index: they start at 1")


def build_argv(aerender: str, target: RenderTarget, start: int, end: int) -> list[str]:
    """The aerender command line for frames ``start..end`` (a list: never a shell).

    ``-mfr`` is always sent with its positional percentage; ``-reuse`` and ``-mp``
    never are (concurrent processes fail with ``-reuse``; ``-mp`` is legacy).
    """
    argv = [aerender, "-project", target.project]
    if target.comp is not None:
        argv += ["-comp", target.comp]
    else:
        argv += ["-rqindex", str(target.rqindex)]
    argv += ["-s", str(start), "-e", str(end), "-output", target.output]
    argv += ["-mfr", "ON" if target.mfr else "OFF", str(target.mfr_max_cpu)]
    argv += ["-v", target.verbosity, "-close", "DO_NOT_SAVE_CHANGES", "-sound", "OFF"]
    if target.rs_template:
        argv += ["-RStemplate", target.rs_template]
    if target.om_template:
        argv += ["-OMtemplate", target.om_template]
    if target.mem_usage:
        argv += ["-mem_usage", str(target.mem_usage[0]), str(target.mem_usage[1])]
    if target.continue_on_missing_footage:
        argv.append("-continueOnMissingFootage")
    return argv


def standard_locations(env: dict[str, str] | None = None) -> list[str]:
    """aerender in the platform's standard After Effects install folders, newest first."""
    env = dict(os.environ) if env is None else env
    found: list[str] = []
    for pat in install_globs(OS, env):
        found.extend(glob.glob(pat))
    return newest_first(found)


def _usable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


_MAGIC = (b"\x7fELF", b"MZ", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe",
          b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")


def why_not_runnable(path: str) -> str | None:
    """Why the OS could not start ``path`` (not a program, a missing interpreter), or None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if head.startswith(_MAGIC):
        return None
    if head.startswith(b"#!"):
        line = head[2:].split(b"\n", 1)[0].strip().split()
        interp = line[0].decode(errors="replace") if line else ""
        if not interp or not os.path.exists(interp):
            return f"its interpreter {interp or '(none)'} does not exist"
        return None
    if runs_batch_files() and path.lower().endswith((".bat", ".cmd")):
        return None
    return "is not a program (no executable header or #! line)"


def resolve_aerender(explicit: str | None, env: dict[str, str] | None = None) -> str:
    """``--aerender``, else ``$AERENDER_PATH`` (else the official adaptor's
    ``$AFTEREFFECTS_ADAPTOR_AERENDER_EXE``), else ``aerender`` on PATH, else a standard
    install location. An explicit value that is a bare name is looked up on PATH."""
    env = dict(os.environ) if env is None else env
    given = [("--aerender", explicit), (f"${AERENDER_ENV}", env.get(AERENDER_ENV)),
             (f"${ADAPTOR_AERENDER_ENV}", env.get(ADAPTOR_AERENDER_ENV))]
    for label, value in given:
        if not value:
            continue
        path = value if os.sep in value or (os.altsep and os.altsep in value) else (
            shutil.which(value, path=env.get("PATH")) or value
        )
        if not os.path.exists(path):
            raise EnvironmentProblem(f"aerender from {label} does not exist: {value}: point it "
                                     "at aerender in the After Effects install folder")
        if os.path.isdir(path):
            raise EnvironmentProblem(f"aerender from {label} is a directory: {value}: name the "
                                     "aerender program in it")
        if not os.access(path, os.X_OK):
            raise EnvironmentProblem(
                f"aerender from {label} is not executable: {value} (chmod +x it)"
            )
        problem = why_not_runnable(path)
        if problem:
            raise EnvironmentProblem(f"aerender from {label} cannot run: {value} {problem}")
        return os.path.abspath(path)
    on_path = shutil.which("aerender", path=env.get("PATH"))
    if on_path:
        return on_path
    for candidate in standard_locations():
        if _usable(candidate):
            return candidate
    raise EnvironmentProblem(
        f"aerender not found: pass --aerender PATH, set ${AERENDER_ENV}, put aerender on PATH, "
        "or install After Effects in its standard location"
    )
