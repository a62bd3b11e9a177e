"""NUMA maps: ``numa_map.json`` files that override topology detection.

Two formats, documented in ``worker_config/README.md`` and
``worker_config/numa_map.schema.json``: the reference orchestrator's
``{"group_0": [0, 1, ...], "group_1": [...]}`` (nested lists allowed, one NUMA node per
group) and the richer ``{"nodes": [{"id": 0, "cpus": "0-31,128-159", "cores": [[0,128],
...], "group": 0}, ...]}``. Every problem is one :class:`~stmpo_celery.errors.BadInput`
line naming the file and the fix.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..plan import GROUP_MAX, MAX_CPU_ID, Cpu, Topology, format_cpulist, parse_cpulist
from ._topology import _process_cpus

_GROUP_KEY = re.compile(r"^(?:group_|node_)?(\d+)$")
_NODE_KEYS = {"id", "cpus", "cores", "group", "socket"}
_NODE_KEYS_TEXT = "id, cpus, cores, group, socket"
_TOP_KEYS = {"nodes", "comment", "description", "$schema"}


def _int_id(value: Any, bad: Any, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{label} has {value!r}, which is not a CPU id: use integers like 0 or 17")
    if value < 0 or value > MAX_CPU_ID:
        raise bad(f"{label} has CPU id {value}: ids run from 0 to {MAX_CPU_ID}")
    return value


def _flat_ids(raw: Any, bad: Any, label: str) -> list[int]:
    if isinstance(raw, str):
        try:
            return parse_cpulist(raw)
        except BadInput as exc:
            raise bad(f"{label}: {exc.message}") from None
    if not isinstance(raw, list):
        raise bad(f"{label} CPUs are a {type(raw).__name__}: give a list or a string like 0-31")
    out: list[int] = []
    for item in raw:
        out.extend(_flat_ids(item, bad, label) if isinstance(item, list) else
                   [_int_id(item, bad, label)])
    return out


def _opt_int(entry: dict[str, Any], key: str, bad: Any, label: str) -> int | None:
    value = entry.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise bad(f"{label} has \"{key}\": {value!r}: use a whole number 0 or more")
    return value


def parse_numa_map(data: Any, where: str, windows: bool = False) -> list[Cpu]:
    """Validate decoded numa-map JSON (either format) and return its CPUs."""

    def bad(msg: str) -> BadInput:
        return BadInput(f"numa map {where} {msg}")

    shape = 'expected {"group_0": [0, 1, ...], ...} or {"nodes": [{"id": 0, "cpus": "0-31"}]}'
    if not isinstance(data, dict) or not data:
        what = "no nodes" if isinstance(data, dict) else f"the wrong shape ({type(data).__name__})"
        raise bad(f"has {what}: {shape}")
    raw: list[tuple[int, Any, dict[str, Any]]] = []  # (node id, cpus, the rich entry or {})
    if "nodes" in data:
        extra = sorted(set(data) - _TOP_KEYS)
        if extra:
            raise bad(f"has unknown key {extra[0]!r} beside \"nodes\": remove it")
        if not isinstance(data["nodes"], list) or not data["nodes"]:
            raise bad(f"has no node list under \"nodes\": {shape}")
        for idx, item in enumerate(data["nodes"]):
            if isinstance(item, list):
                raw.append((idx, item, {}))
            elif isinstance(item, dict):
                unknown = sorted(set(item) - _NODE_KEYS)
                if unknown:
                    raise bad(f"node #{idx} has unknown key {unknown[0]!r}: use {_NODE_KEYS_TEXT}")
                nid = _opt_int(item, "id", bad, f"node #{idx}")
                if "cpus" not in item:
                    raise bad(f'node #{idx} has no "cpus": list them like "0-31,128-159"')
                raw.append((idx if nid is None else nid, item["cpus"], item))
            else:
                raise bad(f"node #{idx} is a {type(item).__name__}: {shape}")
    else:
        for key, value in data.items():
            m = _GROUP_KEY.match(str(key))
            if not m:
                raise bad(f"has unknown key {key!r}: name nodes group_0, group_1, ... ({shape})")
            raw.append((int(m.group(1)), value, {}))
    owner: dict[int, int] = {}
    cpus: list[Cpu] = []
    pieces: set[tuple[int, int]] = set()
    grouped = [e for _, _, e in raw if "group" in e]
    if grouped and len(grouped) != len(raw):
        raise bad('gives "group" for some nodes only: give it for every node or for none')
    for nid, value, entry in sorted(raw, key=lambda r: r[0]):
        label = f"node {nid}"
        group = _opt_int(entry, "group", bad, label) or 0
        if (nid, group) in pieces:
            raise bad(f"defines {label} twice: give each node its own id (a node may repeat "
                      "only to split it across processor groups)")
        pieces.add((nid, group))
        ids = _flat_ids(value, bad, label)
        if not ids:
            raise bad(f"{label} has no CPUs: list at least one or remove the node")
        dups = sorted(i for i, k in Counter(ids).items() if k > 1 or i in owner)
        if dups:
            others = sorted({owner[i] for i in dups if i in owner} | {nid})
            raise bad(
                f"lists CPUs {format_cpulist(dups)} twice (node {', node '.join(map(str, others))})"
                ": each CPU belongs to exactly one node"
            )
        owner.update(dict.fromkeys(ids, nid))
        core_of = {i: i for i in ids}
        if entry.get("cores") is not None:
            if not isinstance(entry["cores"], list):
                raise bad(f'{label} "cores" is not a list of sibling lists: write [[0,64],[1,65]]')
            seen: set[int] = set()
            for core in entry["cores"]:
                sib = _flat_ids(core if isinstance(core, list) else [core], bad, f"{label} cores")
                stray = sorted(set(sib) - set(ids))
                twice = sorted(set(sib) & seen)
                if stray or twice or not sib:
                    what = (f"names CPUs {format_cpulist(stray)} outside the node" if stray else
                            f"puts CPUs {format_cpulist(twice)} in two cores" if twice else
                            "has an empty core")
                    raise bad(f'{label} "cores" {what}: list each node CPU in exactly one core')
                seen.update(sib)
                core_of.update(dict.fromkeys(sib, min(sib)))
        socket = _opt_int(entry, "socket", bad, label)
        cpus += [Cpu(i, nid, nid if socket is None else socket, core_of[i], group) for i in ids]
    last = -1
    for g in sorted({c.group for c in cpus}) if grouped else []:
        members = [c.id for c in cpus if c.group == g]
        if max(members) - min(members) >= GROUP_MAX or min(members) <= last:
            raise bad(
                f"puts CPUs {format_cpulist(members)} in processor group {g}: Windows numbers "
                f"CPUs group after group, at most {GROUP_MAX} per group; fix the groups"
            )
        last = max(members)
    if windows and not grouped and max(owner) >= GROUP_MAX:
        raise bad(
            f"lists CPUs up to {max(owner)} but no processor groups: on Windows give every "
            'node a "group" (see worker_config/numa_maps/windows-4groups.json)'
        )
    return cpus


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"has the key {key!r} twice")
        seen.add(key)
    return dict(pairs)


def load_numa_map(
    path: str | os.PathLike[str], allowed: set[int] | None = None, *, this_host: bool = True
) -> Topology:
    """Load a numa_map.json (reference ``group_N`` format or the rich ``nodes`` format).

    ``allowed`` defaults to this process's CPUs; ``this_host=False`` (planning another host)
    checks no CPU against this process. Every problem is a one-line BadInput.
    """
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BadInput(f"cannot read numa map {where}: {reason}: pass an existing file") from None
    try:
        data: Any = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"numa map {where} is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            "fix the syntax"
        ) from None
    except ValueError as exc:
        raise BadInput(f"numa map {where} {exc}: give each key once") from None
    cpus = parse_numa_map(data, where, windows=this_host and sys.platform == "win32")
    allow = (allowed if allowed is not None else _process_cpus()) if this_host else None
    foreign = sorted(c.id for c in cpus if allow is not None and c.id not in allow)
    if allow is not None and foreign:
        raise BadInput(
            f"numa map {where} names CPUs {format_cpulist(foreign)} that this process may not "
            f"use (allowed: {format_cpulist(allow)}): use a map made for this host or drop "
            "--numa-map to detect the topology"
        )
    return Topology(cpus=tuple(sorted(cpus, key=lambda c: c.id)), source=f"numa-map:{where}")
