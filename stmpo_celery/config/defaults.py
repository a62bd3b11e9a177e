"""Every default of stmpo-celery, in one place.

Settings resolve in one order: these defaults < a profile (``--profile``) <
``STMPO_*`` environment variables < command-line flags. ``stmpo config show`` prints
the effective value of each and where it came from. Nothing else in the package
hard-codes a tunable number.
"""

from __future__ import annotations

from typing import Final

# --- slots and sizing -----------------------------------------------------------
CONCURRENCY: Final = 0  #: 0 = auto (RAM, CPUs, MFR, frames)
MAX_CONCURRENCY: Final = 24  #: upper bound on slots for one task, even when forced
RAM_PER_PROCESS_GB: Final = 32.0  #: RAM budget of one aerender process
RAM_FRACTION: Final = 0.8  #: share of total RAM the slots may plan to use
THREADS_PER_SLOT_MFR: Final = 16  #: CPUs one slot wants with Multi-Frame Rendering on
THREADS_PER_SLOT_NO_MFR: Final = 8  #: ... and with MFR off
AFFINITY: Final = True  #: pin each slot to its CPU block

# --- aerender -------------------------------------------------------------------
MFR: Final = True
MFR_MAX_CPU: Final = 90  #: aerender's positional -mfr percentage
VERBOSITY: Final = "ERRORS_AND_PROGRESS"

# --- chunk plan -----------------------------------------------------------------
SCHEDULES: Final = ("adaptive", "guided", "static", "fixed")  #: the chunk plans there are
SCHEDULE: Final = "adaptive"  #: one of SCHEDULES
CHUNK_SIZE: Final = "auto"  #: auto or a frame count (fixed schedule)
LAUNCH_COST_S: Final = 30.0  #: seed for aerender start-up time (learned during the run)
SPAWN_DELAY_S: Final = 0.0  #: stagger of each slot's first aerender launch
#: adaptive steals (plan/_steal.py): how far, in frames, a rendered frame's cost is
#: assumed to carry over to unrendered neighbours before fading into the run's average
STEAL_REACH_FRAMES: Final = 120.0
STEAL_MARGIN: Final = 0.5  #: a steal must bring a finish forward by launch x margin ...
STEAL_MARGIN_MAX: Final = 2.0  #: ... margin learned from the launches' spread, capped here
STEAL_GAIN_SD: Final = 0.25  #: ... plus this many SDs of the victim's estimated remaining cost
HISTORY: Final = True  #: plan first blocks from a previous render's frame costs
HISTORY_KEEP: Final = 1000  #: history records kept (host files; farm Redis) ...
HISTORY_KEEP_DAYS: Final = 90.0  #: ... and none older than this: the newest win

# --- failure handling -------------------------------------------------------------
FAIL_FAST: Final = True
SKIP_EXISTING: Final = True
IGNORE_MISSING_EFFECTS: Final = False  #: missing effects fail the chunk (frames render wrong)
RETRIES: Final = 1  #: retries of a crashed chunk's missing frames
STALL_FLOOR_S: Final = 600.0  #: no chunk is called stalled before this much silence
STALL_FACTOR: Final = 3.0  #: ... or this many times the slowest frame seen, if longer
CHUNK_TIMEOUT_S: Final = 0.0  #: 0 = no hard cap on one chunk

# --- broker -----------------------------------------------------------------------
BROKER_ENV: Final = "STMPO_BROKER_URL"
FLOWER_AUTH_ENV: Final = "STMPO_FLOWER_AUTH"
HISTORY_DIR_ENV: Final = "STMPO_HISTORY_DIR"  #: where a host keeps the comps' frame-cost history
CONNECT_TIMEOUT_S: Final = 3.0  #: a wrong host or password fails this fast, not in 20 s
VISIBILITY_TIMEOUT_S: Final = 30 * 24 * 3600  #: far beyond any chunk: never redeliver
WATCHDOG_INTERVAL_S: Final = 1.0  #: how often the orchestrator pings the broker
BROKER_LOSS_GRACE_S: Final = 5.0  #: an external broker unreachable this long fails the run
WATCHDOG_TIMEOUT_S: Final = 1.0  #: one watchdog ping waits this long for an answer
FLOWER_ROW_WAIT_S: Final = 1.0  #: a Flower row update waits this long: a view never holds a run
#: the orchestrator's event subscription is pinged when quiet this long: a connection that
#: breaks stops the run (its events would be lost), so it must not be dropped for idling
EVENTS_PING_S: Final = 30.0
#: the run's start on its broker (registry, plan, chord) may take this long: a slow broker
#: (200 ms a round trip) needs ~13 s, a frozen one fails the run with exit 3 after it
START_BROKER_WAIT_S: Final = 30.0
STOP_BROKER_WAIT_S: Final = 0.5  #: a stop waits this long for abort/purge/revoke on the broker
CLEANUP_BROKER_WAIT_S: Final = 2.0  #: teardown waits this long to delete the run's keys
FORCED_EXIT_WORDS_S: Final = 0.5  #: a forced exit deletes half-written frames, writes the summary
WARDEN_GRACE_S: Final = 1.0  #: a killed run's warden lets live slots clean up first ...
WARDEN_WAIT_S: Final = 30.0  #: ... and waits this long for a run folder still locked
FDS_PER_RUN: Final = 64  #: open files a run needs (its Redis's own, connections) ...
FDS_PER_SLOT: Final = 16  #: ... and per slot: the open-file limit is raised to fit
FDS_HOST_SERVICE: Final = 1024  #: the host service's Redis: clients of several runs
RUN_KEY_TTL_S: Final = 30  #: every key of a run expires this long after its last heartbeat
HEARTBEAT_INTERVAL_S: Final = 2.0  #: how often a run refreshes the TTL of its keys
ORPHAN_QUIET_S: Final = 0.25  #: orphaned slots delete run keys until none is back this long
ORPHAN_BROKER_WAIT_S: Final = 5.0  #: ... and wait at most this long on the broker for it

# --- orchestrator -------------------------------------------------------------------
KILL_WAIT_S: Final = 2.0  #: wait for killed processes to be reaped
#: a renderer writing a frame changes its file at least this often: a frame of a format
#: that does not say where it ends, counted less than this before another renderer that
#: could be rewriting it was stopped, is not trusted (the count may have seen that
#: renderer's first bytes)
REWRITE_QUIET_S: Final = 2.0
FINALIZE_WAIT_S: Final = 5.0  #: wait for the chord body after the last chunk
LOG_TAIL_LINES: Final = 8  #: aerender lines quoted in a failure summary

# --- slots ------------------------------------------------------------------------------
STEAL_WAIT_STEP_S: Final = 0.1  #: a spare task with nothing worth stealing looks again after this
STEAL_WAIT_FRESH_S: Final = 1.0  #: a thief that has not looked for this long no longer counts
SLOT_HEARTBEAT_S: Final = 2.0  #: a slot's worker heartbeat (Flower, ``stmpo status``)
FAILURE_FLUSH_WAIT_S: Final = 2.0  #: a failing chunk waits this long for its event to be sent

# --- monitoring ---------------------------------------------------------------------------
SLOT_HUNG_S: Final = 60.0  #: a slot with a chunk and no state beat this long is killed ...
SLOT_HUNG_BEATS: Final = 4  #: ... (or after --stall-timeout, at least this many beats)
#: a slot that dies this many times in a row before it takes any work stops the run (exit
#: 3) instead of being replaced again: each death is a start-up that already retried its
#: broker connection for ~30 s (a broker refusing its connections, a broken environment)
SLOT_START_DEATHS: Final = 2
SLOT_SILENT_AFTER_S: Final = 15.0  #: ``stmpo status`` calls a slot this long without a beat silent
HOST_REDIS_PORT: Final = 6389  #: the host service's Redis: beside a system Redis on 6379
HOST_FLOWER_PURGE_OFFLINE_S: Final = 600  #: the host Flower forgets ended runs' slots after this
#: the host Flower keeps this many task rows in memory, the oldest go first: about 100
#: runs of 20 chunks (each run is its chunks plus one ``stmpo.run`` row)
HOST_FLOWER_MAX_TASKS: Final = 2000
ENDED_RUN_SHOWN_S: Final = 3600.0  #: ``stmpo status`` lists a run that ended this long (host Redis)

# --- farm (stmpo farm) ------------------------------------------------------------------
FARM_URL_ENV: Final = "STMPO_FARM_URL"  #: the farm Redis (else the host service's Redis)
#: variables that hold a password: read once, then gone from the environment of every
#: process started after (slots, aerender, After Effects, Flower, the warden, a task)
SECRET_ENVS: Final = (BROKER_ENV, FLOWER_AUTH_ENV, FARM_URL_ENV)
FARM_DIR_ENV: Final = "STMPO_FARM_DIR"  #: job folders (snapshots, logs): storage all hosts see
FARM_QUEUE: Final = "stmpo.farm"  #: the Celery queue every render host consumes
FARM_PRIORITY: Final = 50  #: 0-100, higher runs first
FARM_MAX_RETRIES: Final = 1  #: a failed task runs again this many times (per job)
FARM_HEARTBEAT_S: Final = 1.5  #: how often a farm worker says it is alive
FARM_DEAD_AFTER_S: Final = 6.0  #: a worker silent this long is dead: its task runs elsewhere
FARM_POLL_S: Final = 0.25  #: how often a running task checks for cancel
FARM_ORPHAN_GRACE_S: Final = 10.0  #: a dead worker's render gets SIGTERM, then SIGKILL after this
#: a task requeued from a worker that stopped answering (frozen, cut off) may meet that
#: worker's render still holding the output: it waits this long for it to end (the worker,
#: once it answers again, stops a render whose task it lost) before the attempt fails
FARM_OUTPUT_LOCK_WAIT_S: Final = 3600.0
LOG_KEEP_RUNS: Final = 20  #: run folders kept under the default log root (older ones pruned)
OUTPUT_LOCK_REFRESH_S: Final = 10.0  #: how often a run re-stamps its output lock
OUTPUT_LOCK_STALE_S: Final = 120.0  #: another host's lock not re-stamped this long is dead
OUTPUT_LOCK_WAIT_S: Final = 0.0  #: wait for a live run on the same frames (0: refuse at once)
OUTPUT_LOCK_POLL_S: Final = 1.0  #: ... looking again this often

#: OpenJD extensions the shipped job templates use (bundle checks and the farm's sessions)
OPENJD_EXTENSIONS: Final = ("TASK_CHUNKING",)
