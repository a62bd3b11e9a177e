"""The end of a run, in ``stmpo render``: teardown (Flower, slots, half-written frames,
the run's keys, the broker, the run folder), the final check of every frame on disk, the
exit code it earns, the last lines and the summary — and, on a forced exit, the least
of that every cancel still owes."""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING

from ..aerender import delete_incomplete, missing_frames, signature
from ..broker import bounded
from ..config import defaults
from ..errors import ExitCode, cancel_words
from ..host import gone_within, no_space, remove_run_dir
from ..monitor import end_for_run as end_flower_for_run
from ..slot import ledger_dir, settle_ledgers
from . import _report as report
from ._dispatch import delete_run_keys
from ._history import record_run
from ._summary import ChunkStatus, write_summary

if TYPE_CHECKING:
    from ._run import Run


def missing_now(run: Run) -> list[int]:
    """The requested frames that are not whole on disk now."""
    pattern = run.prep.pattern
    if pattern.is_sequence:
        return sorted(set(missing_frames(pattern, run.prep.frames)) | set(stale_now(run))
                      | run.held)
    # a movie is on disk only as its chunk left it: written whole by this run (a file
    # that was there before, or that AE ended early, is not this render)
    done = bool(run.chunks) and all(c.status == ChunkStatus.DONE for c in run.chunks.values())
    whole = os.path.exists(pattern.raw) and os.path.getsize(pattern.raw) > 0
    return [] if done and whole else list(run.prep.frames)


def stale_now(run: Run) -> list[int]:
    """Frames this run was to render whose file is still the one that was there before
    it started (``--no-skip-existing``: a renderer reported them but never wrote them)."""
    before = run.prep.before
    return [f for f in run.prep.to_render
            if f in before and signature(run.prep.pattern.path_for(f)) == before[f]]


def teardown(run: Run) -> None:
    """Stop and remove everything the run started, whatever happened — also when a step
    of it fails (out of file descriptors, say): the others still run, the failure is a
    warning, and the run still ends with its last lines and its summary."""
    for step in (_end_monitoring, _stop_slots, _clean_broker, _stop_embedded,
                 _remove_run_folder, _release):
        try:
            step(run)
        except Exception as exc:  # noqa: BLE001 - the next step must run all the same
            text = (f"the run's cleanup ({step.__name__.strip('_').replace('_', ' ')}) "
                    f"failed: {type(exc).__name__}: {exc}")
            run.warnings.append(text)
            run._say(f"WARNING: {text}")
            if run.exit_code == ExitCode.OK and (problem := report.host_problem(exc)):
                run.exit_code = ExitCode.ENVIRONMENT
                run.stop_reason = problem


def _end_monitoring(run: Run) -> None:
    if run.row is not None:  # Flower: the run's row ends and every node goes offline
        run.row.end_of_run()
    if run.flower is not None:  # first: it must not re-create keys of the run
        failed = bool(run.failures) or (run.exit_code != ExitCode.OK
                                        and run.cancel_signal is None)
        end_flower_for_run(run.flower, run.o.flower_linger if failed else 0.0, run._say)


def _stop_slots(run: Run) -> None:
    if run.pool is not None:
        run.pool.kill_all()
        stopped_at = time.time()
        for chunk in run.chunks.values():  # what was rendering when the run stopped
            if chunk.status in (ChunkStatus.RUNNING, ChunkStatus.RETRYING):
                chunk.status, chunk.t1 = ChunkStatus.STOPPED, stopped_at
        # Frames our killed slots had in flight may be half-written: never leave them.
        partial = settle_ledgers(ledger_dir(run.prep.pattern), lambda e: e.run_id == run.run_id,
                                 owned=run.unsettled)
        if partial:
            run._say(f"deleted {len(partial)} frame(s) the stopped chunks had in flight, "
                     f"not known to be whole (first: {partial[0]})")
        if partial.kept:
            # whatever their format says, they are not frames
            run.held = partial.held(run.prep.pattern, run.prep.frames)
            run._forget(run.held)
            run.warnings.append(
                f"{len(partial.kept)} frame(s) the stopped chunks had in flight could not "
                f"be deleted: another process has them open (first: {partial.kept[0]}); "
                "they are not whole, and the next run on this output deletes and renders "
                "them")
            run._say(f"WARNING: {run.warnings[-1]}")


def _clean_broker(run: Run) -> None:
    if run.client is not None:
        if (run.o.history and run.plan.schedule == "adaptive" and not run.failures
                and run.exit_code == ExitCode.OK and run.cancel_signal is None):
            for text in record_run(run.client, run.run_id, run.prep.project, run.o,
                                   farm=run.embedded is None):
                run.warnings.append(text)
                run._say(f"WARNING: {text}")
        with contextlib.suppress(Exception):
            run.pubsub.close()
        if run.embedded is None:  # an embedded Redis is stopped with all it holds
            client = run.client  # what this cannot delete in time expires by itself
            bounded(lambda: delete_run_keys(client, run.run_id), defaults.CLEANUP_BROKER_WAIT_S)
        for c in (run.client, getattr(run, "watch_client", None)):
            with contextlib.suppress(Exception):
                c.close()  # type: ignore[union-attr]


def _stop_embedded(run: Run) -> None:
    if run.embedded is not None:
        run.embedded.stop()


def _remove_run_folder(run: Run) -> None:  # its spec holds the broker's password
    remove_run_dir(run.run_dir)


def _release(run: Run) -> None:
    if run.warden is not None:
        run.warden.release()
    run._restore_signals()


def _failed_code(run: Run) -> ExitCode:
    """A run whose chunks failed (``--no-fail-fast`` lets them all report): the host's
    problem (exit 3) when every one failed on its host's limits (processes, threads, file
    descriptors, memory, the broker's clients), else a render failure (exit 1)."""
    limited = run.failures and all(report.slot_limit_fix(f.reason) for f in run.failures)
    return ExitCode.ENVIRONMENT if limited else ExitCode.RENDER_FAILED


def finish(run: Run) -> ExitCode:
    """After teardown: check every frame on disk, settle the exit code, say it, write
    the summary, free the output."""
    pattern = run.prep.pattern
    if pattern.is_sequence:  # every renderer is dead: did one write over a finished frame?
        run._recheck(sorted(run.verified), then="it is missing")
    missing = missing_now(run)
    if pattern.is_sequence and missing:
        # a failed or stopped renderer's cut-short frames: never left to be taken as whole
        gone = delete_incomplete(pattern, missing)
        if gone:
            run._say(f"deleted {len(gone)} frame file(s) that were not whole "
                     f"(first: {gone[0]})")
    if run.exit_code == ExitCode.OK and missing:
        run.exit_code = _failed_code(run)
        run.stop_reason = (f"{len(missing)} requested frame(s) are not on disk "
                           f"(first: {pattern.path_for(missing[0])})")
        if stale := [f for f in stale_now(run) if f in set(missing)]:
            run.stop_reason = (f"{len(missing)} requested frame(s) are not on disk as this "
                               f"render wrote them: {len(stale)} are still the files from "
                               f"before it (first: {pattern.path_for(stale[0])})")
        if run.failures:  # the failed chunk is the reason; name it
            run.stop_reason = f"{run.failures[0].describe()}; {run.stop_reason}"
    if run.exit_code == ExitCode.OK and run.failures:
        run.exit_code = _failed_code(run)
    if run.funnel.log_error is not None:  # said on the terminal: the log lost lines
        exc = run.funnel.log_error
        fix = ("free space in the log folder" if no_space(exc) else
               report.host_problem(exc) or "check the log folder")
        text = f"the logs in {run.log_dir} are incomplete ({exc.strerror or exc}): {fix}"
        run.warnings.append(text)
        run._say(f"WARNING: {text}")
    if run.o.summary:  # first: a summary that cannot be written changes the outcome
        unwritten = write_summary(run, missing)
        if unwritten is not None and run.exit_code == ExitCode.OK:
            run.exit_code = ExitCode.ENVIRONMENT
            run.stop_reason = (f"every frame is whole on disk, but {unwritten}: free space "
                               "there (a re-run with --skip-existing renders nothing again)")
    if run.progress is not None:
        run.progress.close("done" if run.exit_code == ExitCode.OK
                           else "cancelled" if run.cancel_signal is not None else "failed")
        if run.exit_code == ExitCode.OK:  # every frame checked whole just now
            run.progress.confirm(f"Done: {len(run.prep.frames)} frame(s) whole on disk"
                                 + (f" ({len(run.prep.skipped)} were already)"
                                    if run.prep.skipped else ""))
    block = report.block_for(run, missing)
    for line in block:
        run.funnel.line(f"stmpo: {line}")
    if run.exit_code != ExitCode.OK and not run._bar_mode():
        run.funnel.directive("openjd_fail", report.fail_line(block))
    if run._run_log is not None:
        with contextlib.suppress(Exception):
            run._run_log.close()
    run.prep.release()  # frames verified and recorded: the output is free
    return run.exit_code


def forced_last_words(run: Run, code: ExitCode, signal_name: str, slots: list[int]) -> None:
    """A forced exit's last words (the slots already SIGKILLed): what every cancel leaves —
    the renderers gone, their half-written frames deleted, the summary."""
    if run.pool is not None:
        run.pool.job.kill_all()  # Windows: the Job Object, at once
    gone_within(slots, defaults.FORCED_EXIT_WORDS_S / 2)
    settle_ledgers(ledger_dir(run.prep.pattern), lambda e: e.run_id == run.run_id,
                   owned=run.unsettled)
    if run.o.summary:
        run.exit_code = code
        run.stop_reason = (f"cancelled by {cancel_words(signal_name)}, then forced to exit "
                           "by a second one")
        write_summary(run, missing_now(run))
