"""The inputs of one ``stmpo render``, after settings resolution (see :mod:`.settings`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import defaults


def origin(name: str, source: str) -> str:
    """Setting ``name`` as a message names it, from where its value came (a source of
    :func:`resolve`): the profile key, the flag for a default, else the source itself (the
    flag, the variable, or what the caller of :func:`resolve` named it)."""
    if source.startswith("profile "):
        return f"{source} key {name}"
    if source in ("", "default"):
        return "--" + name.replace("_", "-")
    return source


@dataclass
class RenderOptions:
    project: str
    frames: str
    output: str
    comp: str | None = None
    rqindex: int | None = None
    aerender: str | None = None
    concurrency: int = defaults.CONCURRENCY
    max_concurrency: int = defaults.MAX_CONCURRENCY
    ram_per_process_gb: float = defaults.RAM_PER_PROCESS_GB
    threads_per_slot: int | None = None  #: None = by MFR (16 on, 8 off)
    mfr: bool = defaults.MFR
    mfr_max_cpu: int = defaults.MFR_MAX_CPU
    affinity: bool = defaults.AFFINITY
    numa_map: str | None = None
    schedule: str = defaults.SCHEDULE
    chunk_size: str | int = defaults.CHUNK_SIZE
    launch_cost: float = defaults.LAUNCH_COST_S
    spawn_delay: float = defaults.SPAWN_DELAY_S
    history: bool = defaults.HISTORY
    fail_fast: bool = defaults.FAIL_FAST
    skip_existing: bool = defaults.SKIP_EXISTING
    retries: int = defaults.RETRIES
    stall_timeout: float = 0.0
    chunk_timeout: float = defaults.CHUNK_TIMEOUT_S
    output_lock_wait: float = defaults.OUTPUT_LOCK_WAIT_S
    broker: str | None = None
    log_dir: str | None = None
    summary: str | None = None
    rs_template: str | None = None
    om_template: str | None = None
    mem_usage: tuple[int, int] | None = None
    continue_on_missing_footage: bool = False
    ignore_missing_effects: bool = False
    flower: str | None = None
    flower_auth: str | None = None
    flower_url_prefix: str | None = None
    flower_linger: float = 0.0  #: seconds the run's Flower stays up after a failure
    verbose: bool = False
    progress: str = "auto"  #: auto | bar | openjd
    #: setting -> where its value came from (``$STMPO_…``, ``profile P``), when not a flag
    sources: dict[str, str] = field(default_factory=dict)

    def origin(self, name: str) -> str:
        """How to name setting ``name`` in a message: the flag, the variable or the
        profile key its value came from."""
        return origin(name, self.sources.get(name, ""))
