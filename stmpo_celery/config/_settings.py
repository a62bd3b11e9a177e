"""Settings resolution: defaults < profile < ``STMPO_*`` environment < flags.

Each setting has one entry in :data:`SETTINGS`; ``stmpo config show`` prints the
effective value of every one and where it came from.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInput
from . import defaults

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Setting:
    name: str
    kind: type
    default: Any
    env: str
    help: str


def _s(name: str, kind: type, default: Any, help: str, env: str | None = None) -> Setting:
    return Setting(name, kind, default, env or f"STMPO_{name.upper()}", help)


SETTINGS: dict[str, Setting] = {s.name: s for s in [
    _s("concurrency", int, defaults.CONCURRENCY, "slots to start; 0 = auto"),
    _s("max_concurrency", int, defaults.MAX_CONCURRENCY, "cap on slots, even when forced"),
    _s("ram_per_process_gb", float, defaults.RAM_PER_PROCESS_GB, "RAM budget per aerender"),
    _s("threads_per_slot", int, None, "CPUs per slot; default 16 with MFR, 8 without"),
    _s("mfr", bool, defaults.MFR, "Multi-Frame Rendering in each aerender"),
    _s("mfr_max_cpu", int, defaults.MFR_MAX_CPU, "aerender's -mfr CPU percentage"),
    _s("affinity", bool, defaults.AFFINITY, "pin each slot to its CPU block"),
    _s("numa_map", str, None, "JSON NUMA map overriding detection"),
    _s("schedule", str, defaults.SCHEDULE, "adaptive | guided | static | fixed"),
    _s("chunk_size", str, defaults.CHUNK_SIZE, "auto or frames per chunk"),
    _s("launch_cost", float, defaults.LAUNCH_COST_S, "seed for aerender start-up seconds"),
    _s("history", bool, defaults.HISTORY, "plan first blocks from a previous render's costs"),
    _s("spawn_delay", float, defaults.SPAWN_DELAY_S, "stagger of first launches, seconds"),
    _s("fail_fast", bool, defaults.FAIL_FAST, "stop everything on the first failure"),
    _s("skip_existing", bool, defaults.SKIP_EXISTING, "do not re-render frames on disk"),
    _s("retries", int, defaults.RETRIES, "retries of a crashed chunk's missing frames"),
    _s("stall_timeout", float, 0.0, "seconds of silence+idle CPU; 0 = derived"),
    _s("chunk_timeout", float, defaults.CHUNK_TIMEOUT_S, "hard cap per chunk; 0 = none"),
    _s("broker", str, None, "Redis URL; unset = embedded Redis", env=defaults.BROKER_ENV),
    _s("log_dir", str, None, "the run's log directory"),
    _s("flower_auth", str, None, "user:pass for Flower's basic auth"),
]}

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
        if setting.kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return setting.kind(value) if setting.kind is not str else str(value)
    except (TypeError, ValueError):
        want = {bool: "true or false", int: "a whole number", float: "a number"}.get(
            setting.kind, "text")
        raise BadInput(f"{origin} is {value!r}: it must be {want}") from None


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
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"profile {path} is not valid TOML ({exc})") from None
    unknown = sorted(k for k in data if k not in SETTINGS)
    if unknown:
        raise BadInput(f"profile {path} sets unknown key(s) {', '.join(unknown)}: "
                       f"known keys are {', '.join(SETTINGS)}")
    return data, f"profile {path.stem}"


def resolve(flags: dict[str, Any], profile: str | None = None,
            env: dict[str, str] | None = None) -> dict[str, tuple[Any, str]]:
    """Every setting's value and its source; ``flags`` holds None for flags not given."""
    env = dict(os.environ) if env is None else env
    prof: dict[str, Any] = {}
    prof_label = ""
    profile = profile or env.get("STMPO_PROFILE") or None
    if profile:
        prof, prof_label = load_profile(profile)
    out: dict[str, tuple[Any, str]] = {}
    for name, s in SETTINGS.items():
        value, source = s.default, "default"
        if name in prof:
            value, source = convert(s, prof[name], f"{prof_label} key {name}"), prof_label
        raw = env.get(s.env)
        if raw is not None and raw != "":
            value, source = convert(s, raw, f"${s.env}"), f"${s.env}"
        if flags.get(name) is not None:
            flag = "--" + name.replace("_", "-")
            value, source = convert(s, flags[name], flag), flag
        out[name] = (value, source)
    return out
