"""Frame costs of previous renders, so a re-render plans its first blocks from them.

A successful adaptive render records the per-frame costs and the aerender launch cost
it measured, under two keys: the project's *content* + the comp (a copied or moved
project still matches), and the project's *path* + the comp (the same project saved
again after a change). Records live on the host, one JSON file per key in
``$STMPO_HISTORY_DIR`` (default ``$XDG_STATE_HOME/stmpo/history``, i.e.
``~/.local/state/stmpo/history``), and — when the render uses a host or farm Redis
(``--broker``) — in that Redis' hash ``stmpo:history``, so every host of a farm shares
them. Lookups try the farm Redis first, then the host files.

The next render of the same comp cuts its first blocks to equal predicted cost
(:func:`stmpo_celery.plan._chunks.cost_blocks`) and hands the costs to the thieves as a
prior (:class:`stmpo_celery.plan._steal.CostModel`): measured frames always win over
it, so a render that differs from its history still steals. A record found by path
only (the project changed since) is used the same way, and said so in the plan lines.
``--no-history`` (or ``STMPO_HISTORY=0``) turns all of this off.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from ..broker import BrokerUrl, bounded, keys
from ..config import RenderOptions, defaults
from ..host import read_text, replace_file
from ..plan import CostModel, cost_blocks, learn_launch
from ..slot import observed

REDIS_HASH = keys.HISTORY
_READ = 1 << 20
_WHOLE = 64 << 20  #: projects up to this size are hashed whole
_SAMPLE = 8 << 20  #: ... bigger ones by their size, head and tail


@dataclass
class History:
    costs: dict[int, float]
    launch: float
    exact: bool  #: recorded for this very project content (False: the project changed)
    recorded_at: float

    def default(self) -> float:
        return statistics.median(self.costs.values()) if self.costs else 1.0

    def describe(self) -> str:
        how = "same project" if self.exact else "project changed since: used as a prior"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.recorded_at))
        return (f"history of this comp ({how}): {len(self.costs)} frame cost(s), launch "
                f"{self.launch:.1f} s, recorded {when}")


def history_dir() -> Path:
    env = os.environ.get(defaults.HISTORY_DIR_ENV)
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "stmpo" / "history"


def content_digest(project: str) -> str:
    """SHA-256 of the project file's content: all of it up to ``_WHOLE`` bytes, else its
    size and its first and last ``_SAMPLE`` bytes (a multi-GB project would otherwise
    delay the first launch; a change the sample misses only makes the history a prior
    that steals still correct)."""
    h = hashlib.sha256()
    size = os.path.getsize(project)
    with open(project, "rb") as fh:
        if size <= _WHOLE:
            while block := fh.read(_READ):
                h.update(block)
        else:
            h.update(f"sampled {size}".encode())
            h.update(fh.read(_SAMPLE))
            fh.seek(size - _SAMPLE)
            h.update(fh.read(_SAMPLE))
    return h.hexdigest()


def _key(kind: str, value: str, comp: str) -> str:
    return hashlib.sha256(f"{kind}\0{value}\0{comp}".encode()).hexdigest()[:32]


def keys_for(project: str, comp: str) -> tuple[str, str]:
    """(content key, path key) of ``comp`` in ``project``."""
    return (_key("content", content_digest(project), comp),
            _key("path", os.path.realpath(project), comp))


def _read_file(key: str) -> dict[str, Any] | None:
    try:
        data = json.loads(read_text(history_dir() / f"{key}.json"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_redis(client: redis.Redis | None, key: str) -> dict[str, Any] | None:
    if client is None:
        return None
    try:
        raw = client.hget(REDIS_HASH, key)
        data = json.loads(raw) if raw else None
    except (redis.RedisError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _client(broker: BrokerUrl | None) -> redis.Redis | None:
    if broker is None:
        return None
    try:
        return broker.client(timeout=defaults.CONNECT_TIMEOUT_S)
    except redis.RedisError:
        return None


def _parse(data: Any, exact: bool) -> History | None:
    """A record as saved, or None for anything else (a file edited or damaged by hand:
    history is a hint, never a reason to fail)."""
    try:
        costs = {int(f): float(c) for f, c in data["costs"].items()}
        launch = float(data["launch"])
        if not all(math.isfinite(c) and c >= 0 for c in [launch, *costs.values()]):
            return None
        return History(costs, launch, exact, float(data.get("t", 0.0)))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def load(project: str, comp: str, broker: BrokerUrl | None) -> History | None:
    """The newest record of ``comp`` in ``project`` (exact content first), or None."""
    try:
        content, path = keys_for(project, comp)
    except OSError:
        return None
    client = _client(broker)
    try:
        for key, exact in ((content, True), (path, False)):
            data = _read_redis(client, key) or _read_file(key)
            if isinstance(data, dict) and (hist := _parse(data, exact or
                                                          data.get("digest_key") == content)):
                return hist
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
    return None


def save(project: str, comp: str, costs: Mapping[int, float], launch: float,
         problems: list[str] | None = None) -> dict[str, str]:
    """Record a render's costs in this host's files (best effort: history never fails a
    render, but a folder it cannot write is said in ``problems``); returns the records
    by key, for a farm's Redis."""
    if not costs:
        return {}
    try:
        content, path = keys_for(project, comp)
    except OSError:
        return {}
    data = json.dumps({"comp": comp, "digest_key": content, "t": time.time(),
                       "launch": round(launch, 4),
                       "costs": {str(f): round(c, 4) for f, c in sorted(costs.items())}})
    folder = history_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for key in (content, path):
            tmp = folder / f".{key}.{os.getpid()}.tmp"
            try:
                tmp.write_text(data)
                replace_file(tmp, folder / f"{key}.json")
            finally:  # a full disk: no temporary file left (each run would add one)
                with contextlib.suppress(OSError):
                    tmp.unlink()
    except OSError as exc:
        if problems is not None:
            problems.append(f"the comp's frame costs could not be kept for its next render "
                            f"in {folder} ({exc.strerror or exc}): set "
                            f"{defaults.HISTORY_DIR_ENV} to a folder this user can write")
    prune_files(folder)
    return {content: data, path: data}


def prune_files(folder: Path, now: float | None = None) -> None:
    """Keep the newest ``HISTORY_KEEP`` records, none older than ``HISTORY_KEEP_DAYS``
    (every project saved again adds one: the folder must not grow for ever); temporary
    files a killed render left are removed after an hour."""
    now = time.time() if now is None else now
    oldest = now - defaults.HISTORY_KEEP_DAYS * 86400
    found: list[tuple[float, Path]] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            with contextlib.suppress(OSError):
                age = entry.stat().st_mtime
                if entry.name.endswith(".json"):
                    found.append((age, Path(entry.path)))
                elif entry.name.endswith(".tmp") and age < now - 3600:
                    os.unlink(entry.path)
    found.sort(reverse=True)
    for k, (mtime, path) in enumerate(found):
        if k >= defaults.HISTORY_KEEP or mtime < oldest:
            with contextlib.suppress(OSError):
                path.unlink()


def share(client: redis.Redis, records: Mapping[str, str]) -> None:
    """Put records :func:`save` returned in a farm's Redis, where every host finds them."""
    with contextlib.suppress(redis.RedisError, OSError):
        pipe = client.pipeline(transaction=False)
        for key, data in records.items():
            pipe.hset(REDIS_HASH, key, data)
        pipe.hlen(REDIS_HASH)
        size = pipe.execute()[-1]
        if int(size) > defaults.HISTORY_KEEP * 1.1:  # pruned now and then, not each time
            prune_redis(client)


def prune_redis(client: redis.Redis, now: float | None = None) -> None:
    """The farm Redis' records pruned as :func:`prune_files` prunes the host's (by the
    time each was recorded; one that cannot be read goes first)."""
    now = time.time() if now is None else now
    oldest = now - defaults.HISTORY_KEEP_DAYS * 86400
    dated: list[tuple[float, str]] = []
    for key, raw in client.hgetall(REDIS_HASH).items():
        try:
            t = float(json.loads(raw)["t"])
        except (ValueError, KeyError, TypeError):
            t = -math.inf
        dated.append((t, str(key)))
    dated.sort(reverse=True)
    drop = [key for k, (t, key) in enumerate(dated) if k >= defaults.HISTORY_KEEP or t < oldest]
    if drop:
        client.hdel(REDIS_HASH, *drop)


def fill(costs: Mapping[int, float], frames: list[int], default: float) -> dict[int, float]:
    """Costs for every frame: recorded where known, else the nearest recorded frame's
    (a chunk's first frame is never timed on its own: its time includes the launch)."""
    known = sorted(costs)
    if not known:
        return {f: default for f in frames}
    out: dict[int, float] = {}
    for f in frames:
        if f in costs:
            out[f] = costs[f]
            continue
        i = bisect.bisect_left(known, f)
        near = [k for k in (known[i - 1] if i > 0 else None,
                            known[i] if i < len(known) else None) if k is not None]
        out[f] = max(costs[k] for k in near)
    return out


def plan_blocks(hist: History, frames: list[int], n_slots: int) -> list[tuple[int, int]]:
    """The first blocks of a re-render: equal predicted cost under the history."""
    return cost_blocks(frames, n_slots, fill(hist.costs, frames, hist.default()),
                       hist.default())


def record_run(client: redis.Redis, run_id: str, project: str, o: RenderOptions, *,
               farm: bool, wait: float = defaults.CLEANUP_BROKER_WAIT_S) -> list[str]:
    """Save what run ``run_id`` measured (from its schedule keys) as the comp's history;
    into ``client``'s Redis too when it is a host or farm Redis (``farm``). A hint for the
    next render: each broker call waits at most ``wait`` s (a frozen broker must not hold
    the end of a run), and the files are written here, never by a thread left behind.
    Returns what could not be kept (for the run's warnings)."""
    got: list[tuple[dict[int, float], list[tuple[int, float]]]] = []
    problems: list[str] = []
    bounded(lambda: got.append(observed(client, run_id)), wait)
    if not got or not got[0][0]:
        return problems
    costs, launches = got[0]
    with contextlib.suppress(ValueError, statistics.StatisticsError):
        model = CostModel(costs, statistics.median(costs.values()))
        comp = o.comp if o.comp is not None else f"rqindex {o.rqindex}"
        data = save(project, comp, costs, learn_launch(launches, model, o.launch_cost),
                    problems)
        if farm and data:
            bounded(lambda: share(client, data), wait)
    return problems
