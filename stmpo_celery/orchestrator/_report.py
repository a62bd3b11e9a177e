"""What the terminal says about a run: the short plan, and the final block.

Formatting from the run's records (no I/O), so the wording is tested on its own:

* :func:`plan_lines` — the spawn plan in three or four lines; the per-slot CPU list and
  the sizing notes only with ``-v`` (they are always written to ``run.log``).
* :func:`final_block` — after a failure: the root cause once, the chunk's log, the
  chunks that were merely stopped as one line, the missing frames as a frame spec and
  the command that resumes the render; after a cancel: "CANCELLED", never "FAILED";
  after success: one line. Warnings seen during the run are repeated at the end.
"""

from __future__ import annotations

import errno
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import redis
from kombu.exceptions import KombuError

from ..broker import mask_url
from ..config import defaults
from ..errors import ExitCode, cancel_words
from ..host import fd_limit, no_space, shell_join
from ..plan import format_frames
from ..text import one_line

if TYPE_CHECKING:
    from ._run import Run

#: chunk statuses of a sibling that was stopped by the run's own stop, not failed
STOPPED = "stopped"

def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def plan_lines(plan: Any, verbose: bool) -> tuple[list[str], list[str]]:
    """(lines for the terminal, lines only for ``run.log``) of a :class:`HostPlan`."""
    limits = ", ".join(f"{k} {v}" for k, v in plan.limits.items() if v)
    mfr = f"-mfr {'ON' if plan.mfr else 'OFF'} {plan.mfr_max_cpu}"
    pinned = [b for b in plan.blocks if b]
    cpus = (_plural(plan.threads_per_slot, "CPU") if not pinned
            else _plural(len(pinned[0]), "CPU") + " pinned" if len({len(b) for b in pinned}) == 1
            else "pinned CPU blocks")
    head = [
        f"plan: {_plural(plan.n_slots, 'slot')} x {cpus}, {plan.ram_per_slot_gb:g} GB RAM each,"
        f" {mfr}; bound by {plan.bound_by}" + (f" ({limits})" if limits else ""),
        f"plan: {_plural(len(plan.chunks), 'chunk')}, schedule {plan.schedule}; "
        f"host {plan.topology}",
    ]
    detail = list(plan.lines())
    notes = list(plan.notes)
    if notes and not verbose:
        head.append(f"plan: {notes[0]}" + (
            f" (+{len(notes) - 1} more with -v)" if len(notes) > 1 else ""))
    if verbose:
        return detail, []
    return head, detail


def warning_text(text: str) -> str:
    """``WARNING:After Effects warning: X`` -> ``After Effects warning: X`` (said once)."""
    t = text.strip()
    while t.upper().startswith("WARNING:"):
        t = t[len("WARNING:"):].strip()
    return t


def frame_spec(frames: Sequence[int]) -> str:
    return format_frames(sorted(frames)) if frames else "none"


#: options whose value is a secret as a whole (a broker URL only when it holds a password)
_SECRET_OPTIONS = ("--flower-auth",)
#: where such a value can come from instead of the command line
_SECRET_ENV = {"--flower-auth": defaults.FLOWER_AUTH_ENV, "--broker": defaults.BROKER_ENV}


def resume_command(argv: Sequence[str] | None = None, skip_existing: bool = True,
                   missing: Sequence[int] = ()) -> str:
    """The command that was run, as ``stmpo ...``: run again, it renders only what is
    missing — by ``--skip-existing`` (the command as typed), or, for a run that was to
    replace the frames already there (``--no-skip-existing``), by naming the ``missing``
    frames: a file from before it that it did not replace is whole, and skipping it would
    keep it. A password never appears: an option that holds one is left out, and the line
    says which environment variable gives it back."""
    args = list(sys.argv[1:] if argv is None else argv)
    named = not skip_existing and bool(missing)  # the frames are named: --frames replaced
    replaced = ("--frames", "--task") if named else ()
    shown: list[str] = []
    dropped: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        name, eq, value = arg.partition("=")
        secret_value = value if eq else (args[i + 1] if i + 1 < len(args) else "")
        if name in replaced:
            skip = not eq
            continue
        if name in _SECRET_OPTIONS or (name == "--broker" and mask_url(secret_value)
                                       != secret_value):
            if _SECRET_ENV[name] not in dropped:
                dropped.append(_SECRET_ENV[name])
            skip = not eq
            continue
        shown.append(mask_url(arg) if "://" in arg else arg)
    if named:
        shown += ["--frames", frame_spec(missing)]
    line = shell_join(["stmpo", *shown])
    if dropped:
        line += f"   # with {' and '.join(f'${e}' for e in dropped)} set (passwords not shown)"
    return line


def stopped_line(stopped: Iterable[Any], why: str, other: bool = True) -> str | None:
    """``stopped: N other chunks on slots … (why)``; ``other``: a failed chunk was named."""
    recs = sorted(stopped, key=lambda c: c.index)
    if not recs:
        return None
    slots = sorted({c.slot for c in recs if c.slot is not None})
    where = f" on slot{'s' if len(slots) > 1 else ''} {', '.join(map(str, slots))}" if (
        slots) else ""
    noun = "other chunk" if other else "chunk"
    return f"  stopped: {_plural(len(recs), noun)}{where} ({why})"


def cause_line(rec: Any) -> str:
    """A failed chunk in one line: its frames, slot and reason (and the fix, when the
    reason is its host's limit)."""
    frames = rec.frames or (f"{rec.start}-{rec.end}" if rec.end >= rec.start else "?")
    return with_limit_fix(f"chunk {rec.index} (frames {frames}, slot {rec.slot}): "
                          f"{rec.reason}", rec.reason)


def final_block(*, ok: bool, cancelled_by: str | None, failures: Sequence[Any],
                stopped: Sequence[Any], reason: str | None, fail_fast: bool,
                requested: int, missing: Sequence[int], skipped: int, elapsed_s: float,
                warnings: Sequence[str], resume: str, movie: bool = False) -> list[str]:
    """The lines printed (each prefixed ``stmpo: ``) when the run ends (``movie``: the
    output is one file, rendered whole or not at all)."""
    n = requested
    on_disk = n - len(missing)
    out: list[str] = []
    if ok:
        out.append(f"OK: {on_disk} of {n} frame(s) on disk ({skipped} skipped) "
                   f"in {elapsed_s:.1f} s")
    elif cancelled_by is not None:
        out.append(f"CANCELLED by {cancel_words(cancelled_by)} after {elapsed_s:.1f} s: "
                   f"{on_disk} of {n} frame(s) on disk")
        line = stopped_line(stopped, "cancel", other=False)
        if line:
            out.append(line)
    else:
        root = failures[0] if failures else None
        if root is not None and len(failures) > 1:
            rest = "; ".join(f"chunk {f.index}: {f.reason}" for f in failures[1:3])
            more = f" (+{len(failures) - 3} more)" if len(failures) > 3 else ""
            out.append(f"FAILED: {len(failures)} chunks failed; first: {cause_line(root)}")
            out.append(f"  also: {rest}{more}")
        elif root is not None:
            out.append(f"FAILED: {cause_line(root)}")
        else:
            out.append(f"FAILED: {reason or 'render failed'}")
        if root is not None and root.log:
            out.append(f"  log: {root.log}")
        line = stopped_line(stopped, "fail-fast" if fail_fast and root is not None
                            else "the run stopped", other=root is not None)
        if line:
            out.append(line)
    if not ok and missing and movie:
        out.append(f"  missing: the movie (frames {frame_spec(missing)}); running again "
                   f"renders it whole")
        out.append(f"  resume: {resume}")
    elif not ok and missing:
        kept = (f"the {on_disk} on disk are kept and running again renders only these"
                if on_disk else "none is on disk")
        out.append(f"  missing: {frame_spec(missing)} ({len(missing)} of {n} frame(s)); {kept}")
        out.append(f"  resume: {resume}")
    for w in warnings[:3]:
        out.append(f"  warning: {warning_text(w)}")
    if len(warnings) > 3:
        out.append(f"  (+{len(warnings) - 3} more warnings in the run log)")
    return out


def fail_line(block: Sequence[str]) -> str:
    """One line for ``openjd_fail``: the cause and, if known, the log."""
    first = block[0] if block else "FAILED"
    log = next((b.strip() for b in block if b.strip().startswith("log: ")), "")
    return f"{first} ({log})" if log else first


def block_for(run: Run, missing: list[int], ok: bool | None = None) -> list[str]:
    """:func:`final_block` for a :class:`Run` as it stands."""
    cancelled = (signal.Signals(run.cancel_signal).name
                 if run.cancel_signal is not None and not run.failures else None)
    root = {id(f) for f in run.failures}
    stopped = [c for c in run.chunks.values() if id(c) not in root and (
        c.status == STOPPED or (c.status in ("running", "retrying")
                                and run.stop_reason is not None))]
    return final_block(
        ok=run.exit_code == ExitCode.OK if ok is None else ok, cancelled_by=cancelled,
        failures=run.failures, stopped=stopped, reason=run.stop_reason,
        fail_fast=run.o.fail_fast, requested=len(run.prep.frames), missing=missing,
        skipped=len(run.prep.skipped), elapsed_s=time.time() - run.t_start,
        warnings=run.warnings,
        resume=resume_command(skip_existing=run.o.skip_existing, missing=missing),
        movie=not run.prep.pattern.is_sequence)


#: the fix for each of a host's limits (said for the orchestrator's errors and a slot's)
FIX_FILES = "raise this user's open-file limit (`ulimit -n`"
FIX_PROCESSES = "raise this user's process limit (`ulimit -u`) or free memory"
FIX_MEMORY = "free memory, or run fewer slots"

#: words of a slot's failure that are its host's limits, not the render: and their fix
_SLOT_LIMITS = (
    ("Too many open files", FIX_FILES + ")"),
    ("can't start new thread", FIX_PROCESSES),
    ("Resource temporarily unavailable", FIX_PROCESSES),
    ("Cannot allocate memory", FIX_MEMORY),
    ("MemoryError", FIX_MEMORY),
    ("max number of clients reached",
     "raise the broker's maxclients (or its open-file limit)"),
)


def slot_limit_fix(reason: str | None) -> str | None:
    """The fix when a slot's failure ``reason`` is its host's limit (exit 3), else None."""
    return next((fix for words, fix in _SLOT_LIMITS if words in (reason or "")), None)


def with_limit_fix(text: str, reason: str | None) -> str:
    """``text`` about a slot's failure, and the fix when ``reason`` is its host's limit."""
    fix = slot_limit_fix(reason)
    return f"{text}: {fix}" if fix else text


def host_problem(exc: BaseException) -> str | None:
    """The stop reason for an error that is the host's, not the render's (exit 3), or
    None: a full disk under the run's own files (its run folder in the temp folder, its
    logs); this process out of file descriptors, processes or threads (its limits); a
    broker that refuses writes because it cannot save its data (Redis's ``MISCONF``: its
    folder is full), is out of memory (``maxmemory``) or takes no more clients."""
    text = str(exc)
    if no_space(exc):
        where = f" {getattr(exc, 'filename', None)}" if getattr(exc, "filename", None) else ""
        return f"cannot write{where} ({getattr(exc, 'strerror', None) or exc}): free space there"
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE) or (
            "Too many open files" in text):
        return f"out of file descriptors ({one_line(text)}): {FIX_FILES}, now {fd_limit()})"
    if isinstance(exc, MemoryError):
        return f"out of memory (MemoryError): {FIX_MEMORY}"
    if isinstance(exc, BlockingIOError) or "can't start new thread" in text:
        return (f"out of processes or threads ({type(exc).__name__}: {one_line(text)}): "
                f"{FIX_PROCESSES}")
    if not isinstance(exc, (redis.RedisError, KombuError)):
        return None
    if "MISCONF" in text:
        return (f"the broker refuses writes because it cannot save its data "
                f"({text.split('MISCONF', 1)[1].strip().splitlines()[0]}): free space "
                "in its folder (the host service's is STMPO_HOST_DIR: `stmpo host info`)")
    if "maxmemory" in text or "OOM command not allowed" in text:
        return ("the broker refuses writes: it is out of memory (its maxmemory): raise its "
                "maxmemory or free it")
    if "max number of clients reached" in text:
        return ("the broker takes no more clients (its maxclients, or its open-file "
                "limit): raise them")
    return None
