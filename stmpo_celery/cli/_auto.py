"""What the "auto" values of ``stmpo config show`` resolve to on this host.

``concurrency 0``, ``threads_per_slot None``, ``stall_timeout 0.0``... mean "decide
for me"; this says what that decision is here and now (or by which rule it is made).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import defaults


def _slots(values: dict[str, Any]) -> str:
    from ..host import this_host
    from ..plan import default_threads_per_slot, size_slots

    facts = this_host(values.get("numa_map"))
    threads = values.get("threads_per_slot") or default_threads_per_slot(bool(values["mfr"]))
    sizing = size_slots(
        usable_cpus=len(facts.topology.cpus), total_ram_gb=facts.total_ram_gb,
        available_ram_gb=facts.available_ram_gb,
        ram_per_process_gb=float(values["ram_per_process_gb"]), threads_per_slot=threads,
        max_concurrency=int(values["max_concurrency"]), frames=10_000)
    return (f"auto: {sizing.n} slot(s) on this host for a long frame range "
            f"(bound by {sizing.bound_by}; fewer frames, fewer slots)")


def _threads(values: dict[str, Any]) -> str:
    from ..plan import default_threads_per_slot

    mfr = bool(values["mfr"])
    return f"auto: {default_threads_per_slot(mfr)} (MFR {'on' if mfr else 'off'})"


def _broker(_values: dict[str, Any]) -> str:
    from ..broker import mask_url
    from ..monitor import discover_broker

    url = discover_broker()
    return (f"auto: the host service's Redis {mask_url(url)}" if url
            else "auto: an embedded Redis per run")


#: what ``chunk_size auto`` means for each schedule (``plan._chunks``, ``plan._steal``)
_AUTO_CHUNK = {
    "fixed": "auto: four chunks per slot (frames / (4 x slots), rounded up)",
    "guided": "auto: no smallest chunk (down to 1 frame)",
    "adaptive": "auto: a stolen tail may be 1 frame",
    "static": "auto: unused (static is one block per slot)",
}


_RULES: dict[str, tuple[Callable[[Any], bool], Callable[[dict[str, Any]], str]]] = {
    "concurrency": (lambda v: v == 0, _slots),
    "threads_per_slot": (lambda v: v is None, _threads),
    "stall_timeout": (lambda v: not v, lambda _v: (
        f"auto: {defaults.STALL_FLOOR_S:g} s, or {defaults.STALL_FACTOR:g}x the slowest "
        "frame seen if longer")),
    "chunk_timeout": (lambda v: not v, lambda _v: "none: no cap"),
    "chunk_size": (lambda v: v == "auto", lambda v: _AUTO_CHUNK.get(
        str(v.get("schedule")), "auto: unused by this schedule")),
    "numa_map": (lambda v: v is None, lambda _v: "none: topology detected on this host"),
    "broker": (lambda v: v is None, _broker),
    "log_dir": (lambda v: v is None, lambda _v: f"auto: {_log_root()}/<run>"),
    "flower_auth": (lambda v: v is None, lambda _v: "none: Flower on loopback only"),
}


def auto_notes(values: dict[str, Any]) -> dict[str, str]:
    """Setting name -> what its "auto"/unset value means on this host."""
    out: dict[str, str] = {}
    for name, (is_auto, say) in _RULES.items():
        if name in values and is_auto(values[name]):
            try:
                out[name] = say(values)
            except Exception as exc:  # noqa: BLE001 - a hint only; never fail `config show`
                out[name] = f"auto (cannot resolve here: {exc})"
    return out


def _log_root() -> str:
    from ..orchestrator import default_log_root

    return str(default_log_root())
