"""``stmpo status``: the runs on this host, per slot, from what the run keeps in Redis.

Sources, in order: ``--broker``; else ``$STMPO_BROKER_URL``; else the host service's
broker (:func:`hostsvc.read_broker_url`) plus every embedded run of this user on this
host (each run's private directory in the temp dir holds its ``spec.json`` with the
broker URL; it is 0700, so only the user who started the run can read it).

Per run: the host registry entry (``stmpo:runs``), the queue length (chunks not yet
taken) and the state hash the slots write (:mod:`.slotmon`): one JSON record per slot
and a ``frames_done`` counter.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis

from ..broker import (
    BrokerUrl,
    delete_run,
    expire_orphans,
    judge,
    keys,
    mask_url,
    say_farewell,
)
from ..config import defaults
from ..host import read_run_end, written_here
from ..text import duration

STATES = tuple(s.value for s in keys.RunState)


def run_state(entry: dict[str, Any], this_host: str) -> str:
    """rendering | failed | cancelled | done (from the run's own record) or dead: the
    record says rendering but its orchestrator (on this host) is gone."""
    state = str(entry.get("state") or "rendering")
    pid = entry.get("pid")
    if state in ("rendering", "failed", "cancelled") and not entry.get("ended") and (
            isinstance(pid, int) and written_here(entry, this_host)
            and not psutil.pid_exists(pid)):
        return "dead"
    return state if state in STATES else "rendering"


def what(entry: dict[str, Any]) -> str:
    """``shot.aep / Main Comp`` (or ``render queue item 2``)."""
    project = os.path.basename(str(entry.get("project") or "?"))
    comp = entry.get("comp")
    if comp is None and entry.get("rqindex") is not None:
        comp = f"render queue item {entry['rqindex']}"
    return f"{project} / {comp}" if comp is not None else project


@dataclass(frozen=True)
class Source:
    broker: BrokerUrl
    origin: str
    only_run: str | None = None  #: an embedded Redis serves one run


def embedded_sources(tmp: Path | None = None) -> list[Source]:
    out = []
    root = tmp or Path(tempfile.gettempdir())
    for spec in sorted(root.glob("stmpo-*-*/spec.json")):
        if not (spec.parent / "redis.sock").exists():
            continue  # a run that uses another broker, or one that is gone
        try:
            data = json.loads(spec.read_text())
            out.append(Source(BrokerUrl(data["broker_url"]), f"embedded runs in {root}",
                              str(data["run_id"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def sources(broker: str | None, origin: str) -> list[Source]:
    """Where runs are looked for: the ``broker`` set for renders (``origin``: the flag,
    variable or profile key it came from), else the host service's and every embedded
    Redis of this host."""
    if broker:
        return [Source(BrokerUrl(broker), origin)]
    from ._hostdir import read_broker_url

    found = []
    url = read_broker_url()
    if url:
        found.append(Source(BrokerUrl(url), "host service"))
    return found + embedded_sources()


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def read_run(client: redis.Redis, entry: dict[str, Any], origin: str,
             now: float) -> dict[str, Any]:
    run = str(entry["run"])
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.state_key(run))
    pipe.llen(keys.prefix(run) + str(entry.get("queue", keys.queue(run))))
    state, queued = pipe.execute()
    # the run's times are its host's clock: measured against this host's, a host a few
    # minutes off showed live slots as silent for minutes (or never silent)
    clock = now if written_here(entry, keys.host_name()) else (_num(entry.get("beat")) or now)
    slots = []
    for name, raw in state.items():
        if not name.startswith("slot"):
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        age = clock - float(rec.get("updated", clock))
        rec["silent_s"] = round(age, 1) if age > defaults.SLOT_SILENT_AFTER_S and rec.get(
            "state") not in ("idle", "failed") else None
        slots.append(rec)
    slots.sort(key=lambda r: int(r.get("slot", 0)))
    frames = int(entry.get("frames", 0))
    done = max(int(state.get(keys.FRAMES_DONE_FIELD, 0) or 0), int(entry.get("frames_done") or 0))
    done = min(done, frames) if frames else done
    fps = sum(_num(s.get("fps")) or 0.0 for s in slots if s.get("state") == "rendering")
    started = _num(entry.get("started"))
    ended = _num(entry.get("ended"))
    status = run_state(entry, keys.host_name())
    eta = _num(entry.get("eta_s"))  # the orchestrator's, from the recent rate
    if eta is None and fps and frames:
        eta = (frames - done) / fps
    return {
        "run": run, "host": entry.get("host"), "queue": entry.get("queue"),
        "project": entry.get("project"), "comp": entry.get("comp"),
        "rqindex": entry.get("rqindex"), "what": what(entry),
        "frames_spec": entry.get("frames_spec"), "state": status,
        "broker": origin, "frames": frames, "frames_done": done,
        "percent": round(100.0 * done / frames, 1) if frames else None,
        "slots_planned": entry.get("slots"), "queue_length": int(queued),
        "fps": round(fps, 3) if fps else None,
        "eta_s": round(eta, 1) if eta is not None and status == "rendering" else None,
        "started": started, "ended": ended,
        "elapsed_s": round((ended or clock) - started, 1) if started else None,
        "reason": entry.get("reason"), "log": entry.get("log"),
        "missing_spec": entry.get("missing_spec"),
        "log_dir": entry.get("log_dir"), "slots": slots,
    }


def _newest_first(ended: Mapping[Any, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The ended runs' records, the one that ended last first (damaged ones left out)."""
    out = []
    for key, raw in ended.items():
        with contextlib.suppress(ValueError):
            entry = json.loads(raw)
            if isinstance(entry, dict):
                out.append((str(key), entry))
    return sorted(out, key=lambda kv: -(_num(kv[1].get("ended")) or 0.0))


def snapshot(srcs: list[Source]) -> dict[str, Any]:
    now = time.time()
    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: set[str] = set()
    for src in srcs:
        client = src.broker.client(timeout=2.0)
        try:
            registry = client.hgetall(keys.REGISTRY)
            if src.only_run is None:  # keys of runs killed with all their processes
                expire_orphans(client, {str(k) for k in registry})
            for key, raw in sorted(registry.items()):
                run_id = str(key)
                if (src.only_run and run_id != src.only_run) or run_id in seen:
                    continue
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(entry, dict):
                    continue
                seen.add(run_id)
                ending = None
                if not entry.get("ended") and written_here(entry, keys.host_name()):
                    # its end never reached this broker (lost, then back from its file)
                    ending = read_run_end(entry.get("log_dir"), run_id)
                    entry = {**entry, **ending} if ending else entry
                run = read_run(client, entry, src.origin, now)
                verdict = judge(entry, keys.host_name(), now,
                                alive=bool(client.exists(keys.alive_key(run_id))))
                if verdict.dead:  # shown once (as dead unless it said how it ended)
                    if ending is None:
                        run["state"] = "dead"
                        run["dead_because"] = verdict.why
                    why = str((ending or {}).get("reason") or verdict.why)
                    say_farewell(client, src.broker, run_id, entry, why)
                    delete_run(client, run_id)
                runs.append(run)
            if src.only_run is None:  # runs that ended on a shared broker, for a while
                for key, entry in _newest_first(client.hgetall(keys.ENDED)):
                    if str(key) in seen:
                        continue
                    if now - (_num(entry.get("ended")) or 0.0) > defaults.ENDED_RUN_SHOWN_S:
                        continue
                    seen.add(str(key))
                    runs.append(read_run(client, entry, src.origin, now))
        except (redis.RedisError, OSError) as exc:
            if src.only_run is None:  # an embedded run that just ended is no problem
                problems.append(f"{mask_url(src.broker.url)} ({src.origin}): "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        finally:
            client.close()
    return {"time": now, "runs": runs, "sources": sorted({s.origin for s in srcs}),
            "problems": problems}


def _slot_line(s: dict[str, Any]) -> str:
    state = str(s.get("state", "?"))
    if s.get("silent_s"):
        state += f" (silent {duration(s['silent_s'])})"
    if s.get("state") in ("idle",) or s.get("total") is None:
        extra = f"  {s.get('reason')}" if s.get("reason") else ""
        return f"  slot{s.get('slot')}  {state:<22} chunks done {s.get('chunks_done', 0)}{extra}"
    prog = f"{s.get('done', 0)}/{s.get('total')}"
    fps = _num(s.get("fps"))
    line = (f"  slot{s.get('slot')}  {state:<22} {s.get('label') or '':<26} {prog:>9}"
            f"  {f'{fps:.2f} f/s' if fps else '-':>10}  ETA {duration(_num(s.get('eta_s')))}")
    if s.get("reason"):
        line += f"  {s['reason']}"
    return line


def render_text(snap: dict[str, Any]) -> str:
    lines: list[str] = []
    if not snap["runs"]:
        where = ", ".join(snap["sources"]) or "no broker configured and no embedded runs"
        lines.append(f"no stmpo runs found (looked in: {where})")
    for r in snap["runs"]:
        if r.get("state") == "dead":  # judged now, or recorded as such when it ended
            why = (r.get("dead_because") or str(r.get("reason") or "").removeprefix("DEAD: ")
                   or "its orchestrator is gone")
            lines.append(f"run {r['run']} on {r['host']}: DEAD ({why}); "
                         f"its keys were removed  [{r['broker']}]")
            continue
        pct = f" ({r['percent']:.0f}%)" if r.get("percent") is not None else ""
        eta = f", ETA {duration(r['eta_s'])}" if r.get("eta_s") is not None else ""
        fps = f", {r['fps']:.2f} f/s" if r.get("fps") else ""
        state = str(r.get("state", "rendering")).upper()
        frames = f" f{r['frames_spec']}" if r.get("frames_spec") else ""
        lines.append(
            f"run {r['run']} {state}: {r.get('what')}{frames}: "
            f"{r['frames_done']}/{r['frames']} frames{pct}{eta}{fps}, "
            f"{'took' if r.get('ended') else 'running'} {duration(r.get('elapsed_s'))}"
            f"  [{r['host']}, {r['broker']}]")
        if r.get("state") in ("failed", "cancelled", "dead") and (r.get("reason") or r.get(
                "log")):
            lines.append(f"  {r.get('reason') or ''}" + (f"  log: {r['log']}" if r.get(
                "log") else ""))
        if r.get("state") == "rendering":
            lines.extend(_slot_line(s) for s in r["slots"])
    lines.extend(f"warning: cannot read {p}" for p in snap["problems"])
    return "\n".join(lines)
