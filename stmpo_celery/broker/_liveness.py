"""Every key of a run expires unless its orchestrator keeps it alive.

A live run beats every :data:`defaults.HEARTBEAT_INTERVAL_S`: it gives each of its
keys (``stmpo:<run>:*``, Celery's and kombu's included) and the host's run registry
``stmpo:runs`` a TTL of :data:`defaults.RUN_KEY_TTL_S`, and stamps its registry entry
with the time of the beat. A run whose orchestrator was SIGKILLed therefore leaves
nothing behind after one TTL, with nobody cleaning up.

Sooner than that, any ``stmpo`` command that opens the Redis (``render``, ``status``,
``host down``) reaps dead runs at once (:func:`reap_dead_runs`): on the run's own host a
run is dead as soon as its orchestrator process (pid and start time, recorded in the
entry) is gone; from another host, once its last beat is older than one TTL.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import redis

from ..config import defaults
from ..host import process_space, process_started, same_process_alive, written_here
from . import keys
from ._redis import BrokerUrl


def watch_client(url: BrokerUrl) -> redis.Redis:
    """The orchestrator's watchdog client: a contact waits :data:`defaults.WATCHDOG_TIMEOUT_S`
    and is never sent again. redis-py's retry would send a command that timed out once
    more and wait a second timeout: a broker paused for less than both then answers the
    second one, and the watch never learns that it did not answer for seconds."""
    return url.client(timeout=defaults.WATCHDOG_TIMEOUT_S, retries=0)


def still_there(client: redis.Redis, run_id: str) -> bool:
    """Does the Redis still hold the run (not restarted empty since the last beat)?"""
    return bool(client.exists(keys.alive_key(run_id)))


def server_id(client: redis.Redis) -> str | None:
    """The Redis server's own run id (``INFO server``), new at every start: a server
    that answers with another one restarted, whatever it reloaded from disk. None when
    the server does not say (INFO disabled)."""
    try:
        value = client.info("server").get("run_id")
    except redis.ResponseError:
        return None
    return str(value) if value else None


def owned_entry(entry_json: str) -> str:
    """A registry entry (``events.registry_entry``) plus who owns it: this process's
    pid, start time and process space (where that pid means it), and the time of the
    first beat."""
    data = json.loads(entry_json)
    pid = os.getpid()
    data.update(pid=pid, pid_started=process_started(pid), space=process_space(),
                beat=time.time())
    return json.dumps(data)


def expire_run_keys(client: redis.Redis, run_id: str, ttl: int) -> int:
    """Give every key of ``run_id`` a TTL of ``ttl`` seconds; returns how many."""
    n = 0
    pipe = client.pipeline(transaction=False)
    for key in client.scan_iter(match=keys.prefix(run_id) + "*", count=500):
        pipe.expire(key, ttl)
        n += 1
        if n % 500 == 0:
            pipe.execute()
    pipe.execute()
    return n


def heartbeat(client: redis.Redis, run_id: str, entry_json: str,
              ttl: int = defaults.RUN_KEY_TTL_S) -> str:
    """One beat of a live run: refresh the TTL of its keys and of the registry, stamp its
    entry; returns the entry as written."""
    data = json.loads(entry_json)
    data["beat"] = time.time()
    entry = json.dumps(data)
    expire_run_keys(client, run_id, ttl)
    others = client.hgetall(keys.REGISTRY)
    pipe = client.pipeline(transaction=False)
    pipe.set(keys.alive_key(run_id), "1", ex=ttl)
    pipe.hset(keys.REGISTRY, run_id, entry)
    if any(_beats(raw) is None for rid, raw in others.items() if rid != run_id):
        pipe.persist(keys.REGISTRY)  # an older stmpo's run shares it: never expire its entry
    else:
        pipe.expire(keys.REGISTRY, ttl)
    pipe.execute()
    return entry


def _beats(raw: object) -> float | None:
    """The last beat in a registry entry, None for an entry of an older stmpo."""
    try:
        beat = json.loads(str(raw)).get("beat")
    except (ValueError, AttributeError):
        return None
    return float(beat) if isinstance(beat, (int, float)) else None


@dataclass(frozen=True)
class Verdict:
    dead: bool
    why: str = ""


def judge(entry: dict[str, Any], host: str, now: float,
          ttl: float = defaults.RUN_KEY_TTL_S, alive: bool | None = None) -> Verdict:
    """Is the run of this registry entry dead? (pure but for the process lookup)

    ``alive``: whether the run's alive key (set with the TTL at every beat) is still in
    the broker. From another host it decides, on the broker's one clock: the beat's own
    time is that host's clock, and a host whose clock is off by more than a TTL would
    otherwise have its live runs reaped mid-render."""
    pid, started = entry.get("pid"), entry.get("pid_started")
    # the pid is looked up only where it means the run's process: a container or a clone
    # that shares this host's name is another host, judged by its beat
    if written_here(entry, host) and isinstance(pid, int) and isinstance(
            started, (int, float)):
        if not same_process_alive(pid, float(started)):
            return Verdict(True, f"its orchestrator (pid {pid}) is gone")
        return Verdict(False)
    beat = entry.get("beat")  # an entry without one (an older stmpo) is never judged
    if not isinstance(beat, (int, float)):
        return Verdict(False)
    silent = now - float(beat)
    if alive is None:
        return Verdict(True, f"no heartbeat for {silent:.0f} s") if silent > ttl \
            else Verdict(False)
    if alive:
        return Verdict(False)
    return Verdict(True, f"no heartbeat for {silent:.0f} s" if silent > ttl else
                   f"no heartbeat for over {ttl:.0f} s (its host's clock is not this one's)")


def alive_keys(client: redis.Redis, run_ids: list[str]) -> dict[str, bool]:
    """Which of these runs still have their alive key (one round trip)."""
    if not run_ids:
        return {}
    pipe = client.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.exists(keys.alive_key(run_id))
    return {run_id: bool(n) for run_id, n in zip(run_ids, pipe.execute(), strict=True)}


def delete_run(client: redis.Redis, run_id: str) -> None:
    """The run's line in the host's run registry, then every key of the run (one prefix
    scan). In that order: whoever finds the line gone knows the run's row in Flower was
    closed (:data:`keys.ROW_CLOSE`)."""
    client.hdel(keys.REGISTRY, run_id)
    batch: list[str] = []
    for key in client.scan_iter(match=keys.prefix(run_id) + "*", count=500):
        batch.append(key)
        if len(batch) >= 500:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)


def delete_run_until_quiet(client: redis.Redis, run_id: str,
                           pause: float = defaults.ORPHAN_QUIET_S, rounds: int = 8) -> None:
    """:func:`delete_run`, again while writes of the run's dying processes still land:
    until a scan ``pause`` seconds after the last delete finds no key (at most
    ``rounds`` times)."""
    for _ in range(rounds):
        delete_run(client, run_id)
        time.sleep(pause)
        if next(iter(client.scan_iter(match=keys.prefix(run_id) + "*", count=500)),
                None) is None:
            return


Sends = list[tuple[str, list[tuple[str, dict[str, Any]]]]]


def farewell(client: redis.Redis, run_id: str, entry: dict[str, Any], why: str) -> Sends:
    """What Flower must hear of a run found dead, nobody of it being left to say it: each
    slot's chunk in progress REVOKED, the run's row FAILED (unless a slot that saw its
    orchestrator die did it), every node offline with no task active. Read from the
    run's keys: call it before they are deleted."""
    from ._app import offline, revoke_events

    sends: Sends = []
    for field, raw in client.hgetall(keys.state_key(run_id)).items():
        try:
            rec = json.loads(raw) if str(field).startswith("slot") else None
        except (TypeError, ValueError):
            rec = None
        if not isinstance(rec, dict) or not isinstance(rec.get("node"), str):
            continue
        said: list[tuple[str, dict[str, Any]]] = []
        task = rec.get("task_id")
        if isinstance(task, str) and rec.get("state") != "idle":
            said += revoke_events(task, f"STOPPED on slot {rec.get('slot')}: the run is "
                                        f"dead ({why})")
        sends.append((rec["node"], [*said, offline()]))
    return sends + close_row(client, run_id, entry, f"DEAD: {why}")


def close_row(client: redis.Redis, run_id: str, entry: dict[str, Any], text: str) -> Sends:
    """A dead run's row in Flower (its registry ``entry`` names it) FAILED with ``text``
    by whoever gets here first while the run is registered (:data:`keys.ROW_CLOSE`) —
    every slot of a run whose orchestrator died mourns it, a reaper may come too, and the
    run fails once, also when a mourner comes after the first deleted the run's keys; its
    node offline either way. If Redis cannot say who was first, this caller is."""
    from ._app import offline, row_failed

    row, node = entry.get("row_task"), entry.get("row_node")
    if not (isinstance(row, str) and isinstance(node, str)):
        return []
    try:
        first = bool(client.register_script(keys.ROW_CLOSE)(
            keys=[keys.REGISTRY, keys.row_closed_key(run_id)],
            args=[run_id, defaults.RUN_KEY_TTL_S]))
    except redis.RedisError:
        first = True
    return [(node, row_failed(row, text) if first else [offline()])]


def reap_dead_runs(client: redis.Redis, host: str | None = None,
                   now: float | None = None, broker: BrokerUrl | None = None,
                   known_dead: dict[str, str] | None = None) -> dict[str, str]:
    """Delete every dead run's keys and registry entry; returns ``{run id: why}``. With
    ``broker`` (the URL of ``client``), Flower first hears that the run ended
    (:func:`farewell`): its rows would show PROGRESS and its nodes online for ever.
    ``known_dead``: runs the caller knows are gone (its warden), with why."""
    known_dead = known_dead or {}
    host = host or keys.host_name()
    now = time.time() if now is None else now
    reaped: dict[str, str] = {}
    registry = client.hgetall(keys.REGISTRY)
    expire_orphans(client, {str(k) for k in registry})
    living = alive_keys(client, [str(k) for k in registry])
    for run_id, raw in registry.items():
        try:
            entry = json.loads(raw)
        except (TypeError, ValueError):
            entry = {}
        if str(run_id) in known_dead:
            verdict = Verdict(True, known_dead[str(run_id)])
        else:
            verdict = (judge(entry, host, now, alive=living.get(str(run_id)))
                       if isinstance(entry, dict) else Verdict(True, ""))
        if verdict.dead:
            why = verdict.why or "its registry entry is unreadable"
            if broker is not None and isinstance(entry, dict):
                say_farewell(client, broker, str(run_id), entry, why)
            delete_run(client, str(run_id))
            reaped[str(run_id)] = why
    return reaped


def say_farewell(client: redis.Redis, broker: BrokerUrl, run_id: str,
                 entry: dict[str, Any], why: str) -> None:
    """:func:`farewell`, sent on the dead run's own event channel (best effort)."""
    with contextlib.suppress(Exception):
        sends = farewell(client, run_id, entry, why)
        if sends:
            from ._app import make_app, send_as_nodes

            queue = entry.get("queue")
            send_as_nodes(make_app(broker, run_id, queue if isinstance(queue, str) else
                                   keys.queue(run_id)), sends)


def expire_orphans(client: redis.Redis, registered: set[str],
                   ttl: int = defaults.RUN_KEY_TTL_S) -> int:
    """Give a TTL to every run key without one whose run is not in the registry: keys a
    run created after its last beat, before it was killed with all its slots. (Not a
    delete: a run that starts right now writes keys before it registers; its beat
    keeps them.) Only keys under a run id's form count: the farm's jobs
    (``stmpo:farm:``) and host Flower's ``stmpo:????????:`` keys are not a run's."""
    candidates = []
    for key in client.scan_iter(match="stmpo:*", count=1000):
        run_id = str(key).split(":", 2)[1] if str(key).count(":") >= 2 else ""
        if keys.is_run_id(run_id) and run_id not in registered:
            candidates.append(key)
    pipe = client.pipeline(transaction=False)
    for key in candidates:
        pipe.ttl(key)
    forever = [k for k, t in zip(candidates, pipe.execute(), strict=True) if t == -1]
    for key in forever:
        pipe.expire(key, ttl)
    pipe.execute()
    return len(forever)


def try_reap(client: redis.Redis, broker: BrokerUrl | None = None) -> dict[str, str]:
    """:func:`reap_dead_runs`, never raising (a command's side job)."""
    with contextlib.suppress(redis.RedisError, OSError):
        return reap_dead_runs(client, broker=broker)
    return {}
