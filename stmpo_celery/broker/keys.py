"""Everything a run puts in Redis, and the Lua scripts that change it atomically (pure).

Every key of a run starts with ``stmpo:<run-id>:`` — Celery's and kombu's own keys too,
through their ``global_keyprefix`` option — so cleanup is one prefix scan and two runs on
one Redis never see each other's queues, results or control messages. Outside that prefix:
the host's run registry :data:`REGISTRY`, records of ended runs :data:`ENDED` (host
service only), and the comps' frame-cost history :data:`HISTORY` (kept on purpose: the
next render of a comp plans from it).

=====================================  =========  ===========================================
key (after ``stmpo:<run>:``)           type       holds
=====================================  =========  ===========================================
``stmpo.<host>.<run>``                 list       the run's Celery queue (kombu)
``unacked``, ``unacked_index``         hash/zset  messages taken by a slot, not yet acked
``celery-task-meta-<id>``, ...         string     Celery results and chord counters
``x:events``                           channel    the slot -> orchestrator events
``x:abort``                            string     set once: the reason the run stops
``x:row-closed``                       string     set once: who ended a dead run's Flower row
``x:alive``                            string     the heartbeat: gone = the run stopped beating
``x:launch-gate``                      string     when the latest first launch may start
``x:state``                            hash       ``slot<K>`` -> live JSON state;
                                                  ``frames_done`` -> count (``stmpo status``)
``x:sched:end``                        hash       chunk -> its current last frame
``x:sched:done``                       hash       chunk -> last frame finished in order
``x:sched:info``                       hash       chunk -> JSON {s, state, t0, tf, slot, from}
``x:sched:cost``                       hash       frame -> seconds it took
``x:sched:launch``                     hash       chunk -> seconds from launch to first frame
``x:sched:wait``                       hash       slot -> when it last looked for a steal
``x:sched:prior``                      hash       frame -> seconds from a previous render
``x:sched:retry``                      hash       chunk -> JSON list of frames its retry renders
``x:sched:attempts``                   hash       chunk -> retries used
=====================================  =========  ===========================================
"""

from __future__ import annotations

import re
import socket
from enum import Enum

REGISTRY = "stmpo:runs"  #: hash: run id -> JSON record of a live run on this Redis
FRAMES_DONE_FIELD = "frames_done"  #: the run-wide frame counter in :func:`state_key`
SLOT_STATE_FIELD = "slot{}"  #: a slot's field in :func:`state_key`
#: the pid of the slot's process whose worker is ready, in :func:`state_key` (what its
#: ``slot-ready`` event says, kept: an event sent before the orchestrator listened is lost)
SLOT_READY_FIELD = "ready{}"


class RunState(str, Enum):
    """A run's state in its :data:`REGISTRY` record (and in :data:`ENDED`)."""

    RENDERING = "rendering"
    """Its orchestrator is alive and the render goes on."""
    DONE = "done"
    """Every requested frame is whole on disk."""
    FAILED = "failed"
    """A chunk failed, or frames are missing; the record says why."""
    CANCELLED = "cancelled"
    """Stopped by a signal (Ctrl-C, OpenJD's or Deadline's cancel, a closed terminal)."""
    DEAD = "dead"
    """Its record says rendering, but its orchestrator is gone (killed): never written,
    only concluded by ``stmpo status`` and the reapers."""


class Sched(str, Enum):
    """The hashes of the shared chunk schedule (``x:sched:<name>``), each keyed by chunk
    index except :attr:`COST` (keyed by frame)."""

    END = "end"
    """The chunk's current last frame; a steal lowers it."""
    DONE = "done"
    """The last frame the chunk finished in order (start - 1 before the first)."""
    INFO = "info"
    """JSON: first frame ``s``, ``state``, start time ``t0``, last frame time ``tf``, ``slot``,
    and ``from`` (the victim) for a stolen tail."""
    COST = "cost"
    """Frame -> seconds that frame took."""
    LAUNCH = "launch"
    """Seconds from the chunk's aerender launch to its first frame."""
    WAIT = "wait"
    """Slot -> when it last looked for a steal (the thieves idle right now)."""
    PRIOR = "prior"
    """Frame -> seconds it took in a previous render of the comp (the history)."""
    RETRY = "retry"
    """JSON list of the frames the chunk's next attempt renders."""
    ATTEMPTS = "attempts"
    """Retries of the chunk used so far."""
    OVERWRITTEN = "overwritten"
    """Frame -> the chunk whose renderer, stopped at a steal's cut, wrote that frame past
    its cut (MFR renders ahead): the thief that owns the frame renders it again without
    counting a retry — nothing was wrong with its render."""
REGISTRY = "stmpo:runs"
#: Hash: run id -> the JSON record of a run that ended, kept a while for ``stmpo status``
#: (only on the host service's broker; each run prunes records older than an hour)
ENDED = "stmpo:ended"
#: Set by ``stmpo host up`` in its own Redis: a run on it keeps its record in ENDED
HOST_SERVICE = "stmpo:host-service"
HISTORY = "stmpo:history"  #: hash: history key -> JSON frame costs (orchestrator._history)


def host_name() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "host"


RUN_ID_LEN = 8  #: characters of every run id (``secrets.token_hex(4)``)
_RUN_ID = re.compile(f"[0-9a-f]{{{RUN_ID_LEN}}}")


def new_run_id() -> str:
    """A fresh run id: 8 lowercase hex digits."""
    import secrets

    return secrets.token_hex(RUN_ID_LEN // 2)


def is_run_id(text: str) -> bool:
    """Whether ``text`` has a run id's form: other keys under ``stmpo:`` (the farm's
    ``stmpo:farm:``, the history) are never a run's, whatever the registry says."""
    return _RUN_ID.fullmatch(text) is not None


def prefix(run_id: str) -> str:
    return f"stmpo:{run_id}:"


def queue(run_id: str, host: str | None = None) -> str:
    return f"stmpo.{host or host_name()}.{run_id}"


def node_name(slot: int, run_id: str, host: str | None = None) -> str:
    return f"slot{slot}.{run_id}@{host or host_name()}"


def events_channel(run_id: str) -> str:
    return f"stmpo:{run_id}:x:events"


def abort_key(run_id: str) -> str:
    return f"stmpo:{run_id}:x:abort"


def row_closed_key(run_id: str) -> str:
    """Taken (SET NX) by whoever ends a dead run's row in Flower: it fails once."""
    return f"stmpo:{run_id}:x:row-closed"


def state_key(run_id: str) -> str:
    """Hash: ``slot<K>`` -> the slot's live JSON state, and ``frames_done`` (``stmpo status``)."""
    return f"stmpo:{run_id}:x:state"


def alive_key(run_id: str) -> str:
    """Set by the orchestrator's heartbeat with the run's TTL: gone = the Redis lost the
    run's data (restarted empty) or the run stopped beating."""
    return f"stmpo:{run_id}:x:alive"


def launch_gate_key(run_id: str) -> str:
    """String: the wall-clock time the latest slot's first launch was given (``--spawn-delay``)."""
    return f"stmpo:{run_id}:x:launch-gate"


def sched_key(run_id: str, name: Sched | str) -> str:
    return f"stmpo:{run_id}:x:sched:{Sched(name).value}"


def unacked_keys(run_id: str) -> tuple[str, str]:
    """kombu's hash of taken-but-unacked messages and its index (under the run's prefix)."""
    return prefix(run_id) + "unacked", prefix(run_id) + "unacked_index"


def queue_key(run_id: str, queue_name: str) -> str:
    """The Redis list behind the run's Celery queue."""
    return prefix(run_id) + queue_name


#: The steal: lower a running chunk's end and hand the tail to the thief, atomically.
#:
#: ``KEYS[1]`` = :attr:`Sched.END` hash, ``KEYS[2]`` = :attr:`Sched.DONE` hash,
#: ``KEYS[3]`` = :attr:`Sched.INFO` hash.
#: ``ARGV[1]`` = victim chunk, ``ARGV[2]`` = the victim's end the thief planned from,
#: ``ARGV[3]`` = the victim's new end, ``ARGV[4]`` = thief chunk, ``ARGV[5]`` = the
#: thief's end (the victim's old end), ``ARGV[6]`` = the thief's JSON info.
#:
#: Returns 1 when the steal happened; 0 when the victim's end moved (another thief was
#: first) or the victim is already on its new end frame — it keeps the frame after the
#: one it last finished, so it never overruns into the thief's first frame — and the thief
#: looks again.
STEAL_CAS = """
local e = redis.call('HGET', KEYS[1], ARGV[1])
local d = redis.call('HGET', KEYS[2], ARGV[1])
if (not e) or tonumber(e) ~= tonumber(ARGV[2]) then return 0 end
if d and tonumber(d) >= tonumber(ARGV[3]) - 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[4], ARGV[5])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[6])
return 1
"""


#: Close a chunk's range: mark every frame up to its current end as taken, so no steal can
#: lower the end any more (:data:`STEAL_CAS` refuses once ``done`` >= the new end).
#:
#: ``KEYS[1]`` = :attr:`Sched.END` hash, ``KEYS[2]`` = :attr:`Sched.DONE` hash;
#: ``ARGV[1]`` = the chunk. Returns the chunk's end, or nil for an unknown chunk.
CLOSE_RANGE = """
local e = redis.call('HGET', KEYS[1], ARGV[1])
if not e then return nil end
redis.call('HSET', KEYS[2], ARGV[1], e)
return tonumber(e)
"""


#: Claim the closing of a dead run's row in Flower: only while the run is still registered
#: and nobody claimed it before, so the row fails once — also against a mourner that comes
#: after the first one deleted the run's keys (the marker with them: the registry line goes
#: first, see :func:`~stmpo_celery.broker.delete_run`).
#:
#: ``KEYS[1]`` = :data:`REGISTRY`, ``KEYS[2]`` = :func:`row_closed_key`; ``ARGV[1]`` = the
#: run id, ``ARGV[2]`` = the marker's TTL in seconds. Returns 1 to the one caller that
#: closes the row, else 0.
ROW_CLOSE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return 1 end
return 0
"""


#: The spawn-delay gate: hand each slot's first launch a start time at least the delay after
#: the previous one, in the order the slots arrive (not by slot number: spawned slots come
#: up in any order).
#:
#: ``KEYS[1]`` = :func:`launch_gate_key`; ``ARGV[1]`` = now (wall-clock seconds),
#: ``ARGV[2]`` = the delay in seconds, ``ARGV[3]`` = the key's TTL in seconds.
#: Returns the start time as a string (Lua numbers would reach the client truncated).
LAUNCH_GATE = """
local last = tonumber(redis.call('GET', KEYS[1]) or '-1e18')
local at = math.max(tonumber(ARGV[1]), last + tonumber(ARGV[2]))
redis.call('SET', KEYS[1], string.format('%.6f', at), 'EX', ARGV[3])
return string.format('%.6f', at)
"""
