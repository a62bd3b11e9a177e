"""Settings resolution: defaults < profile < ``STMPO_*`` environment < flags.

Each setting has one entry in :data:`SETTINGS`; ``stmpo config show`` prints the
effective value of every one and where it came from.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ..errors import BadInput
from . import defaults

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class Command(str, Enum):
    """The commands a setting can be given to."""

    RENDER = "render"
    """``stmpo render``: every setting."""
    PLAN = "plan"
    """``stmpo plan``: the settings that change the spawn plan."""
    CONFIG = "config"
    """``stmpo config show``: every setting."""
    BUNDLE = "bundle"
    """``stmpo bundle``: settings that travel to the workers as job parameters."""


#: Commands a setting is offered on unless it says otherwise.
RUN = frozenset({Command.RENDER, Command.CONFIG})
PLANNED = RUN | {Command.PLAN}


def parse_chunk_size(value: Any, origin: str = "--chunk-size") -> int | None:
    """``--chunk-size``: ``auto`` (None) or a frame count above zero."""
    size = str(value).strip().lower()
    if size == "auto":
        return None
    if not size.lstrip("-").isdigit() or int(size) <= 0:
        raise BadInput(f"{origin} {value!r} is not a frame count: use auto or e.g. 10")
    return int(size)


def check_combinations(values: dict[str, Any], origin: Callable[[str], str]) -> None:
    """Settings each fine alone that do nothing together: refused wherever settings meet
    (``stmpo render``, ``stmpo config show`` and so the job's StmpoSettings, ``stmpo
    bundle``), not first in a task. ``values`` may lack a setting (a bundle names only
    what it sets); ``origin(name)`` names where a value came from. A chunk size from a
    lower layer than the schedule (a profile's, under a typed ``--schedule static``) is
    a host-wide setting for the schedules that use it, not refused."""
    def layer(name: str) -> int:  # profile < STMPO_* < a flag or job parameter
        where = origin(name)
        return 0 if where.startswith("profile ") else 1 if where.startswith("$") else 2

    size = values.get("chunk_size")
    if (size is not None and parse_chunk_size(size, origin("chunk_size")) is not None
            and values.get("schedule") == "static"
            and layer("chunk_size") >= layer("schedule")):
        raise BadInput(f"{origin('chunk_size')} does nothing with {origin('schedule')} "
                       "static (N equal blocks): drop it, or choose the fixed schedule")


#: why ``--mfr-max-cpu`` does nothing with MFR off (``stmpo render`` and ``stmpo bundle``)
MFR_CPU_IDLE = "MFR is off, and it is MFR's CPU share"


def idle_flag(flag: str, why: str) -> BadInput:
    """The refusal of a typed flag that the rest of the command line makes do nothing."""
    return BadInput(f"{flag} does nothing here: {why}. Drop it, or change the other")


def refuse_for_movie(output: str, flags: list[str]) -> None:
    """``flags`` given for how frames are shared out over slots cannot apply to a movie,
    which one aerender process renders whole: refused wherever they meet one (``stmpo
    render``, ``plan``, ``bundle``)."""
    if flags:
        raise BadInput(f"--output {output!r} is a movie (no [#####] token), which one "
                       f"aerender process renders whole: {', '.join(flags)} cannot apply "
                       "to it. Drop them, or render an image sequence")


@dataclass(frozen=True)
class Setting:
    """One setting, declared once: its CLI options, environment variable, profile key,
    bundle parameter, checks and help all come from here."""

    name: str  #: also the profile key and the ``RenderOptions`` field
    kind: type  #: int, float, bool or str
    default: Any  #: from :mod:`.defaults` (None = decided later, see ``auto``)
    help: str
    env: str  #: the ``STMPO_*`` variable
    commands: frozenset[Command] = PLANNED
    aliases: tuple[str, ...] = ()  #: other spellings (the reference orchestrator's)
    off_aliases: tuple[str, ...] = ()  #: booleans: other spellings of the off flag
    choices: tuple[str, ...] = ()
    minimum: float | None = None  #: the smallest value allowed
    positive: bool = False  #: the value must be above ``minimum`` (0 by default), not equal
    maximum: float | None = None
    unit: str = "value"  #: what a number between ``minimum`` and ``maximum`` is called
    auto: str | None = None  #: what the default means when it is "decide for me"
    bundle: str | None = None  #: the job bundle parameter, if the setting travels there
    image_only: bool = False  #: cannot change one aerender process rendering a movie
    secret: bool = False  #: never printed
    #: a value with its own syntax: (value, origin) -> parsed, or BadInput naming origin
    parse: Callable[[Any, str], Any] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def spelled(self, value: Any) -> str:
        """The flag as a command line gives ``value``: ``--no-…`` for a boolean off."""
        return "--no-" + self.flag[2:] if self.kind is bool and value is False else self.flag

    def check(self, value: Any, origin: str | None = None) -> None:
        """Refuse an out-of-range value with one line naming where it came from (the flag
        unless ``origin`` says: ``$STMPO_…``, a profile key)."""
        name = origin or self.flag
        if self.parse is not None and value is not None:
            self.parse(value, name)
            return
        if value is None or self.kind is bool or self.kind is str and not self.choices:
            return
        if self.choices:
            if str(value) not in self.choices:
                raise BadInput(f"{name} {value!r} is unknown: use one of "
                               f"{', '.join(self.choices)}")
            return
        number = float(value)
        if not math.isfinite(number):
            raise BadInput(f"{name} is {value}: it must be a finite number")
        if self.minimum is not None and self.maximum is not None:
            if not self.minimum <= number <= self.maximum:
                raise BadInput(f"{name} is {value}: use a {self.unit} from "
                               f"{self.minimum:g} to {self.maximum:g}")
            return
        low = 0.0 if self.minimum is None else self.minimum
        if number < low or (self.positive and number == low):
            need = f"more than {low:g}" if self.positive else f"{low:g} or more"
            if low == 0:
                need = "more than zero" if self.positive else "zero or more"
            raise BadInput(f"{name} is {value:g}: it must be {need}"
                           + (f" ({value:g} = {self.auto})" if self.auto and number == 0
                              and not self.positive else ""))
        if self.maximum is not None and number > self.maximum:
            raise BadInput(f"{name} is {value:g}: it must be at most {self.maximum:g}")

    def shown(self, value: Any) -> str:
        """The value as ``config show`` prints it."""
        if self.secret and value:
            return "***"
        if value is None or (self.auto and value in (0, 0.0)):
            return f"{value} ({self.auto})" if self.auto else str(value)
        return str(value)


def _s(name: str, kind: type, default: Any, help: str, env: str | None = None,
       **more: Any) -> Setting:
    return Setting(name, kind, default, help, env or f"STMPO_{name.upper()}", **more)


SETTINGS: dict[str, Setting] = {s.name: s for s in [
    _s("concurrency", int, defaults.CONCURRENCY,
       "Slots to start; 0 = auto from RAM, CPUs, MFR and frames.",
       auto="auto", bundle="Concurrency", image_only=True),
    _s("max_concurrency", int, defaults.MAX_CONCURRENCY,
       "Upper bound on slots, also for --concurrency.", aliases=("--max_concurrency",),
       positive=True, bundle="MaxConcurrency", image_only=True),
    _s("ram_per_process_gb", float, defaults.RAM_PER_PROCESS_GB,
       "RAM budget of one aerender process (GB): sizes the automatic slot count; with "
       "--concurrency N, a warning when N slots do not fit.", aliases=("--ram_per_process_gb",),
       positive=True, bundle="RamPerProcessGB", image_only=True),
    _s("threads_per_slot", int, None,
       "CPUs one slot needs, for the automatic slot count (usable CPUs / this); with "
       "--concurrency N, a warning when N slots get fewer. Each slot is pinned to its share "
       "of the host's CPUs either way.",
       positive=True,
       auto=f"auto: {defaults.THREADS_PER_SLOT_MFR} with MFR, "
            f"{defaults.THREADS_PER_SLOT_NO_MFR} without",
       bundle="ThreadsPerSlot", image_only=True),
    _s("mfr", bool, defaults.MFR, "Multi-Frame Rendering in each aerender.",
       off_aliases=("--disable_mfr",), bundle="Mfr"),
    _s("mfr_max_cpu", int, defaults.MFR_MAX_CPU, "aerender -mfr CPU percentage (1-100).",
       minimum=1, maximum=100, unit="percentage", bundle="MfrMaxCpu"),
    _s("affinity", bool, defaults.AFFINITY, "Pin each slot to its CPU block.",
       aliases=("--enable_affinity",), off_aliases=("--disable_affinity",),
       bundle="Affinity", image_only=True),
    _s("numa_map", str, None, "NUMA map JSON file overriding detection.",
       aliases=("--numa_map",), auto="detect this host", bundle="NumaMap", image_only=True),
    _s("schedule", str, defaults.SCHEDULE,
       "Chunk plan: adaptive (N blocks, idle slots steal tails), guided, static, fixed.",
       choices=defaults.SCHEDULES, bundle="Schedule", image_only=True),
    _s("chunk_size", str, defaults.CHUNK_SIZE,
       "auto or frames per chunk (fixed), smallest chunk (guided), shortest stolen tail "
       "(adaptive).", parse=parse_chunk_size, bundle="ChunkSize", image_only=True),
    _s("launch_cost", float, defaults.LAUNCH_COST_S,
       "Seed for aerender's start-up seconds (adaptive learns the real one)."),
    _s("history", bool, defaults.HISTORY,
       "Plan the first blocks from a previous render of the comp (adaptive schedule).",
       commands=RUN),
    _s("spawn_delay", float, defaults.SPAWN_DELAY_S,
       "Seconds between the slots' first aerender launches (in the order slots come up).",
       aliases=("--spawn_delay",), commands=RUN, bundle="SpawnDelay", image_only=True),
    _s("fail_fast", bool, defaults.FAIL_FAST, "Stop everything on the first failed chunk.",
       commands=RUN, bundle="FailFast", image_only=True),
    _s("skip_existing", bool, defaults.SKIP_EXISTING,
       "Do not re-render frames already on disk.", commands=RUN, bundle="SkipExisting",
       image_only=True),
    _s("ignore_missing_effects", bool, defaults.IGNORE_MISSING_EFFECTS,
       "Missing effects and layer dependencies warn instead of failing the chunk.",
       commands=RUN, bundle="IgnoreMissingEffects"),
    _s("retries", int, defaults.RETRIES, "Retries of a crashed chunk's missing frames.",
       commands=RUN),
    _s("stall_timeout", float, 0.0,
       "Seconds of no output and no CPU before a chunk is stalled (and of silence "
       f"before a stopped slot is replaced, at least "
       f"{defaults.SLOT_HUNG_BEATS * defaults.SLOT_HEARTBEAT_S:g} s; auto: "
       f"{defaults.SLOT_HUNG_S:g} s).", commands=RUN,
       auto=f"auto: {defaults.STALL_FACTOR:g} x the slowest frame, at least "
            f"{defaults.STALL_FLOOR_S:g} s"),
    _s("chunk_timeout", float, defaults.CHUNK_TIMEOUT_S, "Hard cap on one chunk (s).",
       commands=RUN, auto="none"),
    _s("output_lock_wait", float, defaults.OUTPUT_LOCK_WAIT_S,
       "Seconds to wait for another live render of the same frames to end before "
       "refusing (0: refuse at once).", commands=RUN),
    _s("broker", str, None, "Redis URL.", env=defaults.BROKER_ENV, commands=RUN,
       auto="the host service's Redis, else an embedded one", bundle="BrokerUrl"),
    _s("log_dir", str, None, "The run's log directory.", commands=RUN,
       auto="a private per-user folder"),
    _s("flower_auth", str, None, "user:pass for Flower's basic auth (required off loopback).",
       commands=RUN, secret=True),
]}


def for_command(command: Command) -> list[Setting]:
    """The settings ``command`` offers, in table order."""
    return [s for s in SETTINGS.values()
            if command in s.commands or (command is Command.BUNDLE and s.bundle)]


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def convert(setting: Setting, value: Any, origin: str) -> Any:
    if value is None:
        return None
    try:
        if setting.kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(value)
        if isinstance(value, bool):  # a profile's `retries = true` is no number of retries
            raise ValueError(value)
        if setting.kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        out = setting.kind(value) if setting.kind is not str else str(value)
        if isinstance(out, float) and not math.isfinite(out):
            raise ValueError(value)  # inf or nan: a duration that never ends
    except (TypeError, ValueError):
        want = {bool: "true or false", int: "a whole number", float: "a finite number"}.get(
            setting.kind, "text")
        raise BadInput(f"{origin} is {value!r}: it must be {want}") from None
    setting.check(out, origin)  # the range, in the words of where the value came from
    return out


def config_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("STMPO_CONFIG_DIR"):
        dirs.append(Path(os.environ["STMPO_CONFIG_DIR"]))
    here = Path(__file__).resolve().parents[1]  # the package directory
    dirs.append(here.parent / "worker_config")
    dirs.append(Path(sys.prefix) / "share" / "stmpo-celery" / "worker_config")
    return dirs


def load_profile(name_or_file: str) -> tuple[dict[str, Any], str]:
    """A profile by name (``hero``, ``farm``) or by path to a TOML file."""
    path = Path(name_or_file)
    if not (path.suffix == ".toml" or os.sep in name_or_file):
        for d in config_dirs():
            candidate = d / "profiles" / f"{name_or_file}.toml"
            if candidate.is_file():
                path = candidate
                break
        else:
            known = sorted({p.stem for d in config_dirs() for p in (d / "profiles").glob("*.toml")})
            raise BadInput(f"unknown profile {name_or_file!r}: use one of "
                           f"{', '.join(known) or '(none installed)'} or a .toml file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"profile {path} cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise BadInput(f"profile {path} is not UTF-8 text: save it as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"profile {path} is not valid TOML ({exc})") from None
    unknown = sorted(k for k in data if k not in SETTINGS)
    if unknown:
        raise BadInput(f"profile {path} sets unknown key(s) {', '.join(unknown)}: "
                       f"known keys are {', '.join(SETTINGS)}")
    return data, f"profile {path.stem}"


def resolve(flags: dict[str, Any], profile: str | None = None,
            env: Mapping[str, str] | None = None,
            env_label: Callable[[str], str] | None = None,
            only: Collection[str] | None = None) -> dict[str, tuple[Any, str]]:
    """Every setting's value and its source (``only``: just these settings); ``flags``
    holds None for flags not given. A value from ``env`` has the source ``$VAR``, or
    ``env_label(VAR)`` (what a caller that built ``env`` calls it: a job parameter)."""
    env = dict(os.environ) if env is None else env
    label = env_label or (lambda var: f"${var}")
    prof: dict[str, Any] = {}
    prof_label = ""
    profile = profile or env.get("STMPO_PROFILE") or None
    if profile:
        prof, prof_label = load_profile(profile)
    out: dict[str, tuple[Any, str]] = {}
    for name, s in SETTINGS.items():
        if only is not None and name not in only:
            continue
        value, source = s.default, "default"
        if name in prof:
            value, source = convert(s, prof[name], f"{prof_label} key {name}"), prof_label
        raw = env.get(s.env)
        if raw is not None and raw != "":
            value, source = convert(s, raw, label(s.env)), label(s.env)
        if flags.get(name) is not None:
            flag = "--" + name.replace("_", "-")
            value, source = convert(s, flags[name], flag), flag
        out[name] = (value, source)
    return out


def broker_setting(flag: str | None,
                   env: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """The broker URL a render would be given, and where it came from, in the order
    :func:`resolve` takes it: ``--broker`` (``flag``), ``$STMPO_BROKER_URL``, the broker
    key of ``$STMPO_PROFILE``; (None, "") when none is set (the host service's Redis or
    an embedded one, which the caller looks for)."""
    from ._options import origin

    value, source = resolve({"broker": flag or None}, env=env, only=("broker",))["broker"]
    return (str(value), origin("broker", source)) if value else (None, "")
