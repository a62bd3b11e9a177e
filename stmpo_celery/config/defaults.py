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
SCHEDULE: Final = "adaptive"  #: adaptive | guided | static | fixed
CHUNK_SIZE: Final = "auto"  #: auto or a frame count (fixed schedule)
LAUNCH_COST_S: Final = 30.0  #: seed for aerender start-up time (learned during the run)
SPAWN_DELAY_S: Final = 0.0  #: stagger of each slot's first aerender launch
#: adaptive steals (plan/_steal.py): how far, in frames, a rendered frame's cost is
#: assumed to carry over to unrendered neighbours before fading into the run's average
STEAL_REACH_FRAMES: Final = 120.0
STEAL_MARGIN: Final = 0.5  #: a steal must bring a finish forward by launch x margin ...
STEAL_MARGIN_MAX: Final = 2.0  #: ... margin learned from the launches' spread, capped here
HISTORY: Final = True  #: plan first blocks from a previous render's frame costs

# --- failure handling -------------------------------------------------------------
FAIL_FAST: Final = True
SKIP_EXISTING: Final = True
RETRIES: Final = 1  #: retries of a crashed chunk's missing frames
STALL_FLOOR_S: Final = 600.0  #: no chunk is called stalled before this much silence
STALL_FACTOR: Final = 3.0  #: ... or this many times the slowest frame seen, if longer
CHUNK_TIMEOUT_S: Final = 0.0  #: 0 = no hard cap on one chunk

# --- broker -----------------------------------------------------------------------
BROKER_ENV: Final = "STMPO_BROKER_URL"
CONNECT_TIMEOUT_S: Final = 3.0  #: a wrong host or password fails this fast, not in 20 s
VISIBILITY_TIMEOUT_S: Final = 30 * 24 * 3600  #: far beyond any chunk: never redeliver
WATCHDOG_INTERVAL_S: Final = 1.0  #: how often the orchestrator pings the broker
BROKER_LOSS_GRACE_S: Final = 5.0  #: how long an external broker may be gone

# --- orchestrator -------------------------------------------------------------------
KILL_WAIT_S: Final = 2.0  #: wait for killed processes to be reaped
FINALIZE_WAIT_S: Final = 5.0  #: wait for the chord body after the last chunk
LOG_TAIL_LINES: Final = 8  #: aerender lines quoted in a failure summary
