"""The orchestrator's side of the slot protocol: one handler per event kind, and what
happens when a slot process dies. Runs in ``stmpo render`` (mixed into :class:`Run`)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import redis

from ..aerender import missing_frames, signature, untrusted_since, written_whole
from ..broker import events, keys, missing_frames_suspect, requeue_unacked
from ..config import defaults
from ..errors import ExitCode
from ..host import HostPlan
from ..plan import can_check, format_frames, parse_runs
from ..slot import (
    close_range,
    ledger_dir,
    mark_finished,
    next_attempt,
    set_retry,
    settle_ledgers,
)
from ..text import one_line
from . import _report as report
from ._summary import ChunkRecord, ChunkStatus

if TYPE_CHECKING:
    from ..config import RenderOptions
    from ._flowerrun import RunRow
    from ._pool import Slot, SlotPool
    from ._progress import Progress
    from ._validate import Prepared


class EventHandlers:
    """``_on_<kind>`` for every :class:`~stmpo_celery.broker.events.Kind`; ``Run`` owns
    the state they change."""

    o: RenderOptions
    prep: Prepared
    plan: HostPlan
    run_id: str
    queue: str
    client: redis.Redis | None
    pool: SlotPool | None
    progress: Progress | None
    row: RunRow | None
    chunks: dict[int, ChunkRecord]
    failures: list[ChunkRecord]
    warnings: list[str]
    done_frames: set[int]
    reporters: dict[int, set[int]]
    verified: dict[int, tuple[int, int, int] | None]
    verified_at: dict[int, float]
    unverified: set[int]
    late: set[int]
    launch_end: dict[int, int]
    unresolved: dict[tuple[int, int], int]
    stop_reason: str | None
    finalized: bool
    slot_deaths: int
    start_deaths: dict[int, int]
    spoke: set[int]
    t_first_launch: float | None
    t_last_frame: float | None

    def _say(self, text: str) -> None:
        raise NotImplementedError

    def _stop(self, reason: str, code: ExitCode) -> None:
        raise NotImplementedError

    def _on_event(self, ev: events.Event) -> None:
        """One event from a slot: handled by ``_on_<kind>``."""
        handler = getattr(self, "_on_" + ev.kind.value.replace("-", "_"))
        if ev.slot is not None:  # it speaks: the slot started
            self.spoke.add(ev.slot)
            self.start_deaths.pop(ev.slot, None)
        handler(ev)

    def _record_of(self, ev: events.Event) -> ChunkRecord | None:
        index = getattr(ev, "index", None)
        return self.chunks.get(index) if isinstance(index, int) else None

    def _on_chunk_start(self, ev: events.ChunkStart) -> None:
        rec = self._record_of(ev)
        if rec is None:
            return
        rec.slot, rec.start, rec.end = ev.slot, ev.start, ev.end
        rec.status, rec.t0 = ChunkStatus.RUNNING, ev.ts
        self._note(f"retry:{rec.index}", None)
        rec.task_id, rec.frames = ev.task_id, ev.frames
        rec.frames_done = 0  #: a launch's own count (a retry's starts again from 0)
        rec.log = ev.log or None
        self.launch_end[rec.index] = ev.end
        self.t_first_launch = self.t_first_launch or time.time()

    def _on_chunk_retry(self, ev: events.ChunkRetry) -> None:
        rec = self._record_of(ev)
        if rec is None:
            return
        rec.finish(ev, ChunkStatus.RETRYING)
        self._recheck_past_cut(ev)
        rec.reason = ev.reason
        self._uncount(ev.redo)
        which = ("not counted: a renderer stopped at a cut wrote over them" if ev.overwritten
                 else f"retry {ev.attempts} of {self.o.retries}")
        self._say(f"retrying {len(ev.redo)} frame(s) of chunk {rec.index} ({which}): "
                  f"{rec.reason}")
        self._note(f"retry:{rec.index}", f"retrying {len(ev.redo)} frame(s) of chunk "
                   f"{rec.index} ({which})")

    def _on_frame(self, ev: events.Frame) -> None:
        rec = self._record_of(ev)
        if rec is None:
            return
        rec.frames_done = max(rec.frames_done, ev.done)
        self.t_last_frame = time.time()
        if ev.frame is not None:
            self.done_frames.add(ev.frame)
            self.reporters.setdefault(ev.frame, set()).add(rec.index)
            self.unverified.add(ev.frame)
        else:
            key = (rec.index, rec.attempts)
            self.unresolved[key] = max(self.unresolved.get(key, 0), ev.done)
        self._verify_frames()
        if os.environ.get("STMPO_INJECT_FAULT") == "orchestrator-crash":
            raise RuntimeError("injected orchestrator fault (STMPO_INJECT_FAULT)")

    def _verify_frames(self) -> None:
        """Progress counts a reported frame once its file is whole on disk and is not the
        file that was there before the run — not on aerender's word: a renderer can report
        a frame it never wrote, or report it a moment before the file is closed (looked
        at again every second)."""
        for f in sorted(self.unverified):
            path = self.prep.pattern.path_for(f)
            if written_whole(path, self.prep.before.get(f)):
                self.unverified.discard(f)
                self.verified[f] = signature(path)
                self.verified_at[f] = time.monotonic()
        self._show_done()

    def _show_done(self) -> None:
        if self.progress is not None:
            self.progress.set_done(len(self.verified) + sum(self.unresolved.values()))

    def _uncount(self, frames: list[int]) -> None:
        """Frames to be rendered again are not done, whatever was counted before (a file
        counted whole and deleted since, or rewritten by a stopped renderer)."""
        counted = [f for f in frames if f in self.verified]
        self._forget(frames)
        if counted:
            self._show_done()

    def _forget(self, frames: Iterable[int]) -> None:
        """Whatever was reported or counted of ``frames`` (progress shown as it was)."""
        for f in frames:
            self.verified.pop(f, None)
            self.verified_at.pop(f, None)
            self.done_frames.discard(f)
            self.unverified.discard(f)

    def _note(self, key: str, text: str | None) -> None:
        """What the run is doing besides rendering, in the Deadline status (None: over)."""
        if self.progress is not None:
            self.progress.note(key, text)

    def _recheck_past_cut(self, ev: events.ChunkOutcome) -> None:
        """A renderer stopped at a steal's cut is dead now, but with MFR it renders ahead:
        it may have written past its cut, over frames the thief had already finished, and
        been killed in the middle of one. Every frame past the cut (up to where this launch
        was to end) whose file changed since it was counted is looked at again
        (:func:`~stmpo_celery.aerender.untrusted_since`), and so is one counted so shortly
        before the stop that the count may have seen the stopped renderer's first bytes
        (:meth:`first_bytes_maybe`): one that cannot be trusted is deleted and rendered
        again — by the thief's own check while it runs, else in a late re-render once
        every chunk has ended (:attr:`late`). Never kept. A frame past the cut that only
        the stopped renderer reported, and that a running chunk owns and has yet to
        report, is not looked at: that chunk writes it (maybe at this moment: deleting it
        would cut the write short) and it is counted when that chunk reports it."""
        if ev.cut is None:
            return
        end = self.launch_end.get(ev.index, ev.cut)
        past = [f for f in sorted(self.verified) if ev.cut < f <= end]
        ahead = [f for f in past if self._owner_will_write(f, ev.index)]
        self._forget(ahead)
        self.late.update(self._recheck([f for f in past if f not in ahead],
                                       f"by the renderer stopped after frame {ev.cut}",
                                       just_stopped=True))

    def _owner_will_write(self, frame: int, stopped: int) -> bool:
        """Whether a chunk other than ``stopped``, not ended, owns ``frame`` and has not
        reported it yet."""
        return any(rec.index != stopped and not rec.terminal and rec.start <= frame <= rec.end
                   and rec.index not in self.reporters.get(frame, ())
                   for rec in self.chunks.values())

    def first_bytes_maybe(self, frame: int) -> float | None:
        """Seconds since ``frame`` was counted, when its format does not say where it ends
        and that was less than ``REWRITE_QUIET_S`` ago (else None): a renderer stopped just
        now may have begun rewriting it just before it was counted (the count then saw its
        first bytes) and been killed before writing more, leaving a cut-short file that
        nothing tells from the counted one."""
        age = time.monotonic() - self.verified_at.get(frame, float("-inf"))
        if age >= defaults.REWRITE_QUIET_S or can_check(self.prep.pattern.path_for(frame)):
            return None
        return age

    def unsettled(self, frame: int) -> bool:
        """Whether a stopped launch's in-flight ``frame`` may be deleted when its ledger is
        settled: not when this run verified the file whole and it has not changed since
        (another chunk — a thief — finished it; the stopped launch never touched it),
        unless the count may have seen the stopped renderer's first bytes."""
        sig = self.verified.get(frame)
        if sig is None or signature(self.prep.pattern.path_for(frame)) != sig:
            return True
        return self.first_bytes_maybe(frame) is not None

    def _recheck(self, frames: list[int], by: str = "",
                 then: str = "so it is rendered again", just_stopped: bool = False) -> list[int]:
        """Frames counted done whose file changed since and cannot be trusted now (or,
        ``just_stopped``, whose count may have seen a stopped renderer's first bytes):
        deleted and no longer counted (returned). The rest keep their new signature."""
        gone: list[int] = []
        vanished: list[int] = []  # removed from disk (a folder deleted): said once
        for f in frames:
            path = self.prep.pattern.path_for(f)
            why = untrusted_since(path, self.verified[f])
            age = self.first_bytes_maybe(f) if just_stopped and why is None else None
            if age is not None:
                why = (f"counted {age:.1f} s before that renderer stopped, and its format "
                       "does not say where a file ends")
            if why is None:
                self.verified[f] = signature(path)
                continue
            with contextlib.suppress(OSError):
                os.unlink(path)
            del self.verified[f]
            self.verified_at.pop(f, None)
            self.done_frames.discard(f)
            gone.append(f)
            if why == "deleted":
                vanished.append(f)
                continue
            said = "may have been written again" if age is not None else "was written again"
            self._say(f"frame {f} {said}{' ' + by if by else ''} after it was "
                      f"done ({why}): deleted, {then}")
        if vanished:
            self._say(f"{len(vanished)} frame(s) counted done are no longer on disk "
                      f"({format_frames(vanished)}; first: "
                      f"{self.prep.pattern.path_for(vanished[0])}): removed by something "
                      f"else, {then}")
        if gone:
            self._show_done()
        return gone

    def _on_chunk_done(self, ev: events.ChunkDone) -> None:
        rec = self._record_of(ev)
        if rec is not None:
            rec.finish(ev, ChunkStatus.DONE)
        self._recheck_past_cut(ev)

    def _on_chunk_shrink(self, ev: events.ChunkShrink) -> None:
        rec = self._record_of(ev)
        if rec is not None:
            rec.end = ev.end
            rec.stolen_by.append(ev.thief)

    def _on_chunk_idle(self, ev: events.ChunkIdle) -> None:
        rec = self._record_of(ev)
        if rec is not None:
            rec.status = ChunkStatus(ev.status)

    def _on_chunk_failed(self, ev: events.ChunkFailed) -> None:
        rec = self._record_of(ev)
        if rec is None:
            return
        rec.finish(ev, ChunkStatus.FAILED)
        self._recheck_past_cut(ev)
        rec.reason, rec.tail = ev.reason, list(ev.tail)
        if ev.stopped or self.stop_reason is not None:
            rec.status = ChunkStatus.STOPPED  # a sibling stopped by the run's stop: no cause
            return
        self.failures.append(rec)
        if events.broker_failed(ev.reason):  # the host's broker, not the render: stop all
            self._stop(rec.describe(), ExitCode.ENVIRONMENT)
        elif self.o.fail_fast:  # its host's limits are the host's problem, with their fix
            limited = report.slot_limit_fix(ev.reason) is not None
            self._stop(report.with_limit_fix(rec.describe(), ev.reason),
                       ExitCode.ENVIRONMENT if limited else ExitCode.RENDER_FAILED)
        else:
            self._continue_after(rec)

    def _continue_after(self, rec: ChunkRecord) -> None:
        """A failed chunk under ``--no-fail-fast``: said, and the rest render on."""
        self._note(f"retry:{rec.index}", None)
        self._say(f"chunk failed, continuing (--no-fail-fast): {report.cause_line(rec)}"
                  + (f" (log: {rec.log})" if rec.log else ""))
        self._note("failed", f"{len(self.failures)} chunk(s) failed, rendering the rest")

    def _on_abort(self, ev: events.Abort) -> None:
        if events.chord_end_failed(ev.reason):
            # Celery could not send the chord's last task (the broker refused a write, a
            # connection, a file descriptor): every chunk has reported by then, so that is
            # bookkeeping, not a failed chunk — the frames on disk decide, as always
            why = (ev.reason or "").removeprefix(events.CHORD_END_FAILED).strip()
            text = (f"the broker failed at the chord's end ({why}): every chunk had ended; "
                    "the frames on disk decide the outcome")
            if text not in self.warnings:
                self.warnings.append(text)
                self._say(f"WARNING: {text}")
            self.finalized = True  # nothing more comes from this chord
            return
        if events.broker_failed(ev.reason):
            self._stop(ev.reason, ExitCode.ENVIRONMENT)
        elif report.slot_limit_fix(ev.reason) is not None:  # its host's limits
            self._stop(report.with_limit_fix(ev.reason, ev.reason), ExitCode.ENVIRONMENT)
        elif self.o.fail_fast:
            self._stop(ev.reason or "a chunk failed", ExitCode.RENDER_FAILED)

    def _on_warning(self, ev: events.SlotWarning) -> None:
        text = one_line(ev.text)
        if text not in self.warnings:
            self.warnings.append(text)
            self._say(f"WARNING (slot {ev.slot}): {report.warning_text(text)}")

    def _on_slot_ready(self, _ev: events.SlotReady) -> None:
        """Nothing more than every event does: the slot has started (see ``_slot_died``)."""

    def _on_finalized(self, _ev: events.Finalized) -> None:
        self.finalized = True

    def _observe(self, _ev: events.Event) -> None:
        """After an event: the bar's per-slot frames (and, with Flower, the run's row)."""
        if self.progress is not None and self.progress.tty:
            self.progress.track(self.chunks.values())
        if self.row is not None:
            self.row.update()

    def _started(self, slot: Slot) -> bool:
        """Whether the slot's process had started: it sent an event, or its worker said it
        was ready in the run's state (its ``slot-ready`` may predate our subscription)."""
        if slot.index in self.spoke:
            return True
        assert self.client is not None
        try:
            ready = self.client.hget(keys.state_key(self.run_id),
                                     keys.SLOT_READY_FIELD.format(slot.index))
            return ready is not None and int(ready) == slot.pid
        except (redis.RedisError, ValueError):
            return False

    def _slot_died(self, slot: Slot) -> None:
        """A slot died: replace it on the same CPUs; re-enqueue its chunk's missing frames."""
        assert self.pool is not None and self.client is not None
        code = slot.proc.returncode
        self.slot_deaths += 1
        rec = next((c for c in self.chunks.values()
                    if c.status is ChunkStatus.RUNNING and c.slot == slot.index), None)
        what = f"slot {slot.index} (pid {slot.pid}) died (exit code {code})"
        if rec is None and not self._started(slot):
            deaths = self.start_deaths[slot.index] = self.start_deaths.get(slot.index, 0) + 1
            if deaths >= defaults.SLOT_START_DEATHS:  # replacing it again would loop for ever
                said = self.pool.last_error(slot.index)
                self._stop(f"slot {slot.index} died {deaths} times in a row before taking any "
                           "work" + (f": {said[0]} (see {said[1]})" if said else
                                     f" (see its logs in {self.pool.log_dir})"),
                           ExitCode.ENVIRONMENT)
                return
        self.spoke.discard(slot.index)
        self.pool.replace(slot.index)
        if rec is None:
            self._say(f"{what} while idle; replaced")
            return
        attempts = next_attempt(self.client, self.run_id, rec.index)
        rec.reason = f"{what} while rendering chunk {rec.index}"
        frames = parse_runs(rec.frames) if rec.frames else list(range(rec.start, rec.end + 1))
        end = close_range(self.client, self.run_id, rec.index) if (
            self.plan.schedule == "adaptive") else None
        if end is not None:  # a stolen tail is the thief's: neither redone nor deleted here
            frames = [f for f in frames if f <= end]
            rec.end = min(rec.end, end)
        tag = f"-slot{slot.index}-{slot.pid}-"
        settle_ledgers(ledger_dir(self.prep.pattern),
                       lambda e: e.run_id == self.run_id and tag in e.path.name,
                       owned=lambda f: (end is None or f <= end) and self.unsettled(f))
        redo = [f for f in frames if f not in self.done_frames]
        redo += [f for f in frames if f in self.done_frames and f in set(
            missing_frames(self.prep.pattern, [f]))]
        suspect = missing_frames_suspect(self.prep.pattern, frames, self.done_frames)
        for f in suspect:  # written by a dying renderer: maybe partial
            with contextlib.suppress(OSError):
                os.unlink(self.prep.pattern.path_for(f))
        rec.suspect = sorted(set(rec.suspect) | set(suspect))
        redo = sorted(set(redo) | set(suspect))
        self._uncount(redo)
        if attempts > self.o.retries:
            if end is not None:  # spare tasks waiting for a steal: it no longer runs
                mark_finished(self.client, self.run_id, rec.index)
            rec.status = ChunkStatus.FAILED
            rec.reason += f" (after {self.o.retries} retries)"
            self.failures.append(rec)
            if self.o.fail_fast:
                self._stop(rec.describe(), ExitCode.RENDER_FAILED)
            else:
                self._continue_after(rec)
            return
        set_retry(self.client, self.run_id, rec.index, redo)
        if rec.task_id is None or not requeue_unacked(self.client, self.run_id, self.queue,
                                                      rec.task_id):
            self._stop(f"{rec.reason}: its message could not be re-enqueued",
                       ExitCode.RENDER_FAILED)
            return
        rec.remember_attempt(rec.reason)
        rec.status = ChunkStatus.RETRYING
        rec.attempts = attempts
        self._say(f"{rec.reason}; replaced it and re-enqueued {len(redo)} frame(s) "
                  f"(retry {attempts} of {self.o.retries})")
        self._note(f"retry:{rec.index}", f"slot {slot.index} died: rendering {len(redo)} "
                   f"frame(s) of chunk {rec.index} again (retry {attempts} of "
                   f"{self.o.retries})")
