"""The slot -> orchestrator protocol: one JSON message per PUBLISH on the run's channel.

Every message is an envelope ``{"t": <kind>, "ts": <unix time>, "slot": <K>, ...}`` whose
other fields are those of the event's dataclass. :func:`encode` and :func:`decode` are the
only places that turn events into text and back; each side handles a kind in one method
(``Run._on_<kind>`` in the orchestrator, ``SlotMonitor`` for the slot's Flower events).

=================  ==========================  =============================================
kind               published by                means
=================  ==========================  =============================================
``chunk-start``    the slot running the chunk  aerender is being launched for these frames
``frame``          the slot running the chunk  aerender reported one more frame written
``chunk-shrink``   the thief's slot            a steal lowered a running chunk's end frame
``chunk-done``     the slot running the chunk  every frame of the chunk is on disk
``chunk-retry``    the slot running the chunk  the chunk failed and its frames are re-queued
``chunk-failed``   the slot running the chunk  the chunk failed for good
``chunk-idle``     the slot that took the task  nothing to render (spare task, or aborted)
``abort``          the chord's error callback  fail-fast: the run's abort flag was raised
``warning``        any slot                    a warning a wrangler should see once
``finalized``      the chord body              every chunk task has ended
``slot-ready``     a slot, once                its worker is connected and takes tasks
=================  ==========================  =============================================
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar, TypeVar

import redis

from . import keys


class Kind(str, Enum):
    """The kinds of event on a run's channel (the envelope's ``t``)."""

    CHUNK_START = "chunk-start"
    """aerender is being launched for a chunk's frames (:class:`ChunkStart`)."""
    FRAME = "frame"
    """aerender reported one more frame of a chunk (:class:`Frame`)."""
    CHUNK_SHRINK = "chunk-shrink"
    """An idle slot stole a running chunk's tail: the chunk ends earlier (:class:`ChunkShrink`)."""
    CHUNK_DONE = "chunk-done"
    """A chunk ended with every frame on disk (:class:`ChunkDone`)."""
    CHUNK_RETRY = "chunk-retry"
    """A chunk failed in a retryable way; its missing frames are re-queued (:class:`ChunkRetry`)."""
    CHUNK_FAILED = "chunk-failed"
    """A chunk failed for good (:class:`ChunkFailed`)."""
    CHUNK_IDLE = "chunk-idle"
    """A chunk task had nothing to render: a spare, or the run was aborted (:class:`ChunkIdle`)."""
    ABORT = "abort"
    """The chord's error callback raised the run's abort flag (:class:`Abort`)."""
    WARNING = "warning"
    """Something a wrangler should see once, e.g. missing fonts (:class:`SlotWarning`)."""
    FINALIZED = "finalized"
    """The chord body ran: every chunk task has ended (:class:`Finalized`)."""
    SLOT_READY = "slot-ready"
    """A slot's worker is connected to the broker and takes tasks (:class:`SlotReady`)."""


@dataclass
class Event:
    """Fields every event carries; subclasses name their :class:`Kind`."""

    kind: ClassVar[Kind]
    slot: int | None = None  #: the publishing slot (None: not from a slot)
    ts: float = field(default_factory=time.time)  #: when it was published


@dataclass
class ChunkStart(Event):
    kind: ClassVar[Kind] = Kind.CHUNK_START
    index: int = 0  #: the chunk task's index in the chord
    start: int = 0
    end: int = 0
    frames: str = ""  #: the exact frames, as a frame spec (a retry may have gaps)
    attempt: int = 0  #: 0 = first render, N = Nth retry
    task_id: str | None = None
    log: str = ""  #: the log of the chunk's first aerender launch (named if the slot dies)


@dataclass
class Frame(Event):
    kind: ClassVar[Kind] = Kind.FRAME
    index: int = 0
    frame: int | None = None  #: the frame number, when the log line proves it
    number: int | None = None  #: the ``(N)`` aerender printed
    done: int = 0  #: frames of this launch reported so far


@dataclass
class ChunkShrink(Event):
    kind: ClassVar[Kind] = Kind.CHUNK_SHRINK
    index: int = 0  #: the victim chunk
    end: int = 0  #: its new last frame
    thief: int = 0  #: the chunk task that took the tail
    gain: float = 0.0  #: seconds the steal is expected to save


#: in a chunk's failure reason (and so in the run's abort): the slot lost its broker,
#: which is the host's environment failing, not the render (exit 3, not 1)
BROKER_FAILED = "the broker failed under the slot"


#: how Celery words an error sending a chord's callback (after its last header task):
#: bookkeeping, not a failed chunk — the frames on disk decide
CHORD_END_FAILED = "Callback error:"


def chord_end_failed(reason: str | None) -> bool:
    return (reason or "").startswith(CHORD_END_FAILED)


def broker_failed(reason: str | None) -> bool:
    return BROKER_FAILED in (reason or "")


@dataclass
class ChunkOutcome(Event):
    """How one chunk task's render ended (the payload of done, retry and failed)."""

    index: int = 0
    start: int = 0
    end: int = 0
    frames: str = ""
    t0: float | None = None
    t1: float | None = None
    attempt: int = 0
    exit_code: int | None = None  #: aerender's, of the launch that decided the outcome
    launch_s: float | None = None  #: launch to first frame, seconds
    cut: int | None = None  #: the last frame, when a steal cut the chunk short
    frames_rendered: int = 0
    missing: list[int] = field(default_factory=list)  #: frames not on disk
    suspect: list[int] = field(default_factory=list)  #: deleted: possibly partial
    warnings: list[str] = field(default_factory=list)
    log: str = ""  #: the aerender log of the failing launch
    reason: str | None = None
    tail: list[str] = field(default_factory=list)  #: last aerender lines of a failure
    retryable: bool = False
    stopped: bool = False  #: stopped by the run's own stop (fail-fast, cancel): not a cause
    overwrote: list[int] = field(default_factory=list)  #: past its cut, by its stopped renderer

    def becomes(self, cls: type[_O], **extra: Any) -> _O:
        """This outcome published as ``cls`` (done, retry or failed), with ``extra`` fields."""
        return cls(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **extra})


_O = TypeVar("_O", bound=ChunkOutcome)


@dataclass
class ChunkDone(ChunkOutcome):
    kind: ClassVar[Kind] = Kind.CHUNK_DONE


@dataclass
class ChunkRetry(ChunkOutcome):
    kind: ClassVar[Kind] = Kind.CHUNK_RETRY
    attempts: int = 0  #: retries used so far, this one included
    redo: list[int] = field(default_factory=list)  #: the frames the retry renders
    #: not counted: every frame to redo was written over by another chunk's renderer
    #: stopped at a steal's cut (``Sched.OVERWRITTEN``)
    overwritten: bool = False


@dataclass
class ChunkFailed(ChunkOutcome):
    kind: ClassVar[Kind] = Kind.CHUNK_FAILED


@dataclass
class ChunkIdle(Event):
    kind: ClassVar[Kind] = Kind.CHUNK_IDLE
    index: int = 0
    status: str = "idle"  #: ``idle`` (nothing left to take) or ``skipped`` (run aborted)


@dataclass
class Abort(Event):
    kind: ClassVar[Kind] = Kind.ABORT
    reason: str = ""


@dataclass
class SlotWarning(Event):
    kind: ClassVar[Kind] = Kind.WARNING
    index: int | None = None  #: the chunk it concerns, if any
    text: str = ""


@dataclass
class Finalized(Event):
    kind: ClassVar[Kind] = Kind.FINALIZED
    chunks: int = 0
    frames: int = 0


@dataclass
class SlotReady(Event):
    kind: ClassVar[Kind] = Kind.SLOT_READY
    pid: int = 0  #: the slot's process (a replaced slot's index is its successor's too)


EVENT_TYPES: dict[Kind, type[Event]] = {cls.kind: cls for cls in (
    ChunkStart, Frame, ChunkShrink, ChunkDone, ChunkRetry, ChunkFailed, ChunkIdle, Abort,
    SlotWarning, Finalized, SlotReady)}


def encode(event: Event) -> str:
    """The wire form: the envelope's ``t`` plus every field of the event."""
    return json.dumps({"t": event.kind.value, **asdict(event)})


def decode(raw: Any) -> Event | None:
    """An event from the wire, or None for anything that is not one (never raises)."""
    try:
        data = json.loads(raw)
        kind = Kind(data["t"])
    except (TypeError, ValueError, KeyError, UnicodeDecodeError):
        return None
    cls = EVENT_TYPES[kind]
    known = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except TypeError:
        return None


def publish(client: redis.Redis, run_id: str, event: Event) -> None:
    client.publish(keys.events_channel(run_id), encode(event))


def publish_all(client: redis.Redis, run_id: str, evs: Sequence[Event]) -> None:
    """``evs`` in order, in one round trip (a slot's frames that came while the broker
    answered the last ones)."""
    pipe = client.pipeline(transaction=False)
    for event in evs:
        pipe.publish(keys.events_channel(run_id), encode(event))
    pipe.execute()


def registry_entry(run_id: str, host: str, queue: str, frames: int, slots: int,
                   log_dir: str, **extra: Any) -> str:
    """The host registry's record of a live run (read by ``stmpo status``); ``extra``:
    project, comp, pid, state, frames_done, eta_s (see ``orchestrator._flowerrun``)."""
    return json.dumps({"run": run_id, "host": host, "queue": queue, "frames": frames,
                       "slots": slots, "log_dir": log_dir, "started": time.time(), **extra})
