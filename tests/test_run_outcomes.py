"""How a run's outcome is told when its host, not its render, fails — in process: a
:class:`Run` fed events (built as ``test_orchestrator_inprocess`` builds them)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_orchestrator_inprocess import _stolen_run

from stmpo_celery.broker import events
from stmpo_celery.errors import ExitCode
from stmpo_celery.orchestrator import Run


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    """A run of two chunks, the second a thief's (see ``_stolen_run``)."""
    r = _stolen_run(tmp_path, "png")
    try:
        yield r
    finally:
        shutil.rmtree(r.run_dir, ignore_errors=True)


def test_frames_done_then_removed_from_disk_are_said_once_not_per_frame(
        tmp_path: Path) -> None:
    """The output folder removed mid-render (by hand, a cleanup script): every frame it
    held is no longer done — and that is one line naming them, not a line per frame
    claiming each "was written again"."""
    from stmpo_celery.aerender._fakeframes import frame_bytes

    r = _stolen_run(tmp_path, "png")
    try:
        r._on_event(events.ChunkStart(slot=0, index=0, start=1, end=10, frames="1-10"))
        for f in range(1, 9):
            (tmp_path / f"f_{f:02d}.png").write_bytes(frame_bytes("x.png", f))
            r._on_event(events.Frame(slot=0, index=0, frame=f, done=f))
        assert sorted(r.verified) == list(range(1, 9))
        for f in range(1, 9):
            (tmp_path / f"f_{f:02d}.png").unlink()
        gone = r._recheck(sorted(r.verified), then="it is missing")
        said = r.stdout.getvalue()  # type: ignore[attr-defined]
        assert gone == list(range(1, 9)) and not r.verified
        assert said.count("no longer on disk") == 1 and "(1-8; first: " in said, said
        assert "written again" not in said
    finally:
        import shutil

        shutil.rmtree(r.run_dir, ignore_errors=True)


def test_a_broker_error_at_the_chords_end_is_no_failed_chunk(run: Run) -> None:
    """Celery reports an error sending the chord's last task (the broker out of clients or
    file descriptors, a broken pipe) through the chord's error callback as "Callback
    error: …" — after every chunk has reported. That failed runs whose frames were all
    whole (exit 1, "FAILED: Callback error"). It is a warning: the frames on disk decide."""
    run._on_event(events.Abort(slot=0, reason="Callback error: OperationalError('Error 32 "
                                              "while writing to socket. Broken pipe.')"))
    assert run.stop_reason is None and run.exit_code == ExitCode.OK
    assert run.finalized
    said = run.stdout.getvalue()  # type: ignore[attr-defined]
    assert "WARNING: the broker failed at the chord's end (OperationalError(" in said, said
    run._on_event(events.Abort(slot=1, reason="frame 7: aerender ERROR: out of memory"))
    assert run.stop_reason is not None  # a chunk's own failure still stops the run


@pytest.mark.parametrize(("reason", "fix"), [
    ("chunk 1 frames 11-20 on slot 1: can't start new thread", "ulimit -u"),
    ("chunk 1: aerender could not start: Resource temporarily unavailable", "ulimit -u"),
    ("chunk 1: slot error: OSError: [Errno 24] Too many open files", "ulimit -n"),
    ("chunk 1: OperationalError: max number of clients reached", "maxclients"),
])
def test_a_slot_that_hits_its_hosts_limits_is_the_hosts_problem(
        run: Run, reason: str, fix: str) -> None:
    """A slot out of processes, threads or file descriptors (or its broker out of
    clients) failed the run with exit 1 and the raw reason; it is the host's problem:
    exit 3, the reason and its fix."""
    run._on_event(events.Abort(slot=1, reason=reason))
    assert run.exit_code == ExitCode.ENVIRONMENT, run.stop_reason
    assert run.stop_reason is not None and reason in run.stop_reason and fix in run.stop_reason


def test_a_cleanup_step_that_fails_leaves_the_others_to_run(run: Run) -> None:
    """Out of file descriptors at the end, stopping the embedded Redis failed — and with
    it, in the same step, the run folder (its spec holds the broker's password) was left
    and the warden never released. Each part of the cleanup now runs on its own."""
    import errno

    from stmpo_celery.orchestrator._ending import teardown

    released: list[bool] = []

    class Embedded:
        def stop(self) -> None:
            raise OSError(errno.EMFILE, "Too many open files")

    class Warden:
        def release(self) -> None:
            released.append(True)

    run.embedded = Embedded()  # type: ignore[assignment]
    run.warden = Warden()  # type: ignore[assignment]
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "spec.json").write_text("{}")
    teardown(run)
    assert not run.run_dir.exists() and released == [True]
    said = run.stdout.getvalue()  # type: ignore[attr-defined]
    assert "WARNING: the run's cleanup (stop embedded) failed" in said, said
    assert run.exit_code == ExitCode.ENVIRONMENT and "out of file descriptors" in str(
        run.stop_reason)


@pytest.mark.parametrize(("reasons", "code"), [
    (["chunk 0: slot error: OSError: [Errno 24] Too many open files",
      "chunk 2: aerender could not start: Resource temporarily unavailable"],
     ExitCode.ENVIRONMENT),
    (["chunk 0: slot error: OSError: [Errno 24] Too many open files",
      "frame 7: aerender ERROR: missing effect"], ExitCode.RENDER_FAILED),
])
def test_without_fail_fast_chunks_failed_on_host_limits_are_the_hosts_problem(
        run: Run, reasons: list[str], code: ExitCode) -> None:
    """With --no-fail-fast the run finishes what it can and reports every failure; when
    every failure was its host's limit, the outcome is the host's (exit 3, the fix said),
    as it is when failing fast — it was exit 1, a render failure, and no fix. One failure
    of the render's own makes it a render failure."""
    from stmpo_celery.orchestrator._ending import finish

    run.o.fail_fast = False
    for index, reason in zip((0, 2), reasons, strict=True):
        run._on_event(events.ChunkFailed(slot=index // 2, index=index, reason=reason))
    assert run.stop_reason is None  # the run went on
    said = run.stdout.getvalue()  # type: ignore[attr-defined]
    assert "continuing (--no-fail-fast)" in said and "ulimit -n" in said, said
    assert finish(run) == code
    said = run.stdout.getvalue()  # type: ignore[attr-defined]
    last = [ln for ln in said.splitlines() if "FAILED: 2 chunks failed" in ln]
    assert last and "Too many open files: raise" in last[0], said
