"""Frame-cost history: equal-cost first blocks, records on the host and in a farm Redis,
and a re-render that plans from the first render's costs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from conftest import SYSTEM_REDIS, Farm, PrivateRedis

from stmpo_celery.broker import keys
from stmpo_celery.broker._redis import parse_broker_url
from stmpo_celery.orchestrator import _history
from stmpo_celery.plan._chunks import cost_blocks
from stmpo_celery.plan._simulate import simulate


def test_cost_blocks_have_equal_predicted_cost() -> None:
    cost = {f: (0.48 if 100 <= f <= 150 else 0.04) for f in range(1, 241)}
    blocks = cost_blocks(list(cost), 4, cost, 0.04)
    sums = [sum(cost[f] for f in range(s, e + 1)) for s, e in blocks]
    assert len(blocks) == 4 and blocks[0][0] == 1 and blocks[-1][1] == 240
    assert max(sums) - min(sums) <= 0.48  # within one heavy frame
    assert cost_blocks([1, 2, 3], 5, {}, 1.0) == [(1, 1), (2, 2), (3, 3)]
    assert cost_blocks(list(range(1, 11)), 2, {}, 1.0) == [(1, 5), (6, 10)]
    assert cost_blocks([1, 2, 5, 6, 7], 2, {}, 1.0) == [(1, 2), (5, 7)]  # gaps split


def test_replayed_re_render_with_history_is_near_the_bound() -> None:
    cost = {f: (0.48 if 100 <= f <= 150 else 0.04) for f in range(1, 241)}
    first = simulate(cost, [(1, 60), (61, 120), (121, 180), (181, 240)], 4, 1.0)
    again = simulate(cost, cost_blocks(list(cost), 4, cost, 0.04), 4, 1.0, prior=cost)
    bound = 1.0 + sum(cost.values()) / 4
    assert again.makespan <= 1.06 * bound and again.makespan < first.makespan
    assert again.launches == 4  # the plan was right: nothing to steal


def test_fill_gives_unrecorded_frames_the_dearer_neighbour() -> None:
    assert _history.fill({2: 1.0, 5: 3.0}, [1, 2, 3, 6], 9.0) == {1: 1.0, 2: 1.0, 3: 3.0,
                                                                    6: 3.0}
    assert _history.fill({}, [1], 9.0) == {1: 9.0}


def test_records_by_content_and_by_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STMPO_HISTORY_DIR", str(tmp_path / "hist"))
    project = tmp_path / "a.aep"
    project.write_text("v1")
    assert _history.load(str(project), "Main", None) is None
    _history.save(str(project), "Main", {1: 0.5, 2: 0.7}, 3.0)
    hist = _history.load(str(project), "Main", None)
    assert hist is not None and hist.exact and hist.costs == {1: 0.5, 2: 0.7}
    assert hist.launch == 3.0
    assert _history.load(str(project), "Other comp", None) is None
    copy = tmp_path / "moved.aep"
    copy.write_text("v1")  # same content elsewhere: still exact
    moved = _history.load(str(copy), "Main", None)
    assert moved is not None and moved.exact
    project.write_text("v2")  # saved again after a change: a prior, said so
    changed = _history.load(str(project), "Main", None)
    assert changed is not None and not changed.exact
    assert "changed" in changed.describe()


def test_farm_redis_shares_history_between_hosts(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 ext_redis: redis.Redis) -> None:
    project = tmp_path / "shared.aep"
    project.write_text(f"farm {tmp_path}")
    content, path = _history.keys_for(str(project), "Main")
    try:
        monkeypatch.setenv("STMPO_HISTORY_DIR", str(tmp_path / "host-a"))
        _history.share(ext_redis, _history.save(str(project), "Main", {1: 2.0}, 5.0))
        monkeypatch.setenv("STMPO_HISTORY_DIR", str(tmp_path / "host-b"))  # another host
        hist = _history.load(str(project), "Main", parse_broker_url(SYSTEM_REDIS))
        assert hist is not None and hist.costs == {1: 2.0}
        assert _history.load(str(project), "Main", None) is None  # not in host b's files
    finally:
        ext_redis.hdel(keys.HISTORY, content, path)


def _chunks(farm: Farm) -> list[tuple[int, int]]:
    """The planned first blocks (before any steal)."""
    return [(int(s), int(e)) for s, e in farm.load_summary()["plan"]["chunks"]]


def test_re_render_plans_first_blocks_from_history(farm: Farm) -> None:
    farm.knobs.update(HEAVY="1-12x8", FRAME_COST="0.03", STARTUP="0.3")
    common = ("--schedule", "adaptive", "--launch-cost", "0.3", "--no-skip-existing")
    first = farm.run(*common, frames="1-36", concurrency=2)
    assert first.returncode == 0, first.stdout + first.stderr
    assert _chunks(farm)[0] == (1, 18)  # equal frame counts: no history yet
    records = list((farm.tmp / "history").glob("*.json"))
    assert len(records) == 2  # by content and by path
    costs = json.loads(records[0].read_text())["costs"]
    assert float(costs["5"]) > 3 * float(costs["30"])  # heavy frames were measured heavy
    again = farm.run(*common, frames="1-36", concurrency=2)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "history of this comp (same project)" in again.stdout
    first_block = _chunks(farm)[0]
    assert first_block[0] == 1 and first_block[1] < 14  # cut to equal predicted cost
    assert sorted(farm.journal_frames()) == sorted(list(range(1, 37)) * 2)
    off = farm.run(*common, "--no-history", frames="1-36", concurrency=2)
    assert off.returncode == 0, off.stdout + off.stderr
    assert "history of this comp" not in off.stdout
    assert _chunks(farm)[0] == (1, 18)


def test_a_history_folder_that_cannot_be_written_is_said_not_swallowed(farm: Farm) -> None:
    """``STMPO_HISTORY_DIR`` naming what cannot be a folder: the render ended OK with no
    word, and every later render of the comp planned as a first one. History never fails
    a render; it says so, and in the summary."""
    blocker = farm.tmp / "not-a-folder"
    blocker.write_text("a file")
    res = farm.run("--schedule", "adaptive", frames="1-8", concurrency=2,
                   env=farm.env(STMPO_HISTORY_DIR=str(blocker / "history")))
    assert res.returncode == 0, res.stdout + res.stderr
    said = [ln for ln in res.stdout.splitlines() if "could not be kept" in ln]
    assert said and all("STMPO_HISTORY_DIR" in ln for ln in said), res.stdout
    assert any("could not be kept" in w for w in farm.load_summary()["warnings"])
    assert blocker.read_text() == "a file"


def test_plan_shows_predicted_makespan_with_and_without_history(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STMPO_HISTORY_DIR", str(tmp_path / "hist"))
    project = tmp_path / "p.aep"
    project.write_text("plan me")
    argv = [sys.executable, "-m", "stmpo_celery.cli", "plan", "--frames", "1-240",
            "--concurrency", "4", "--project", str(project), "--comp", "Main", "--json"]
    none = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    assert none["history"] is None
    _history.save(str(project), "Main", {f: (0.48 if 100 <= f <= 150 else 0.04)
                                          for f in range(2, 241)}, 1.5)
    out = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    h = out["history"]
    assert h["exact"] and h["with_s"] < h["without_s"] and h["with_s"] <= 1.1 * h["bound_s"]
    bad = subprocess.run(argv[:-3], capture_output=True, text=True)  # --project, no comp
    assert bad.returncode == 2 and "--comp" in bad.stderr and "Traceback" not in bad.stderr


def test_big_projects_are_keyed_by_size_head_and_tail(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_history, "_WHOLE", 1000)
    monkeypatch.setattr(_history, "_SAMPLE", 100)
    big = tmp_path / "big.aep"
    big.write_bytes(b"a" * 5000)
    first = _history.content_digest(str(big))
    big.write_bytes(b"a" * 4999 + b"b")  # the tail changed
    assert _history.content_digest(str(big)) != first
    big.write_bytes(b"a" * 6000)  # the size changed
    assert _history.content_digest(str(big)) != first
    small = tmp_path / "small.aep"
    small.write_bytes(b"x" * 500)
    whole = _history.content_digest(str(small))
    small.write_bytes(b"x" * 250 + b"y" + b"x" * 249)  # hashed whole: the middle counts
    assert _history.content_digest(str(small)) != whole


def test_a_history_that_no_longer_holds_is_corrected_by_steals() -> None:
    recorded = {f: (0.48 if 100 <= f <= 150 else 0.04) for f in range(1, 241)}
    now = {f: (0.48 if 180 <= f <= 230 else 0.04) for f in range(1, 241)}  # the comp changed
    blocks = cost_blocks(list(now), 4, recorded, 0.04)
    trusted = simulate(now, blocks, 4, 1.0, steal=False).makespan  # blindly, no steals
    corrected = simulate(now, blocks, 4, 1.0, prior=recorded)
    assert len(corrected.steals) > 0
    assert corrected.makespan < 0.8 * trusted


@pytest.mark.parametrize("text", ["[1, 2]", '{"costs": 5, "launch": 1}', '"x"',
                                  '{"costs": {"1": "nan"}, "launch": 1}',
                                  '{"costs": {"1": 0.5}, "launch": -1}'])
def test_a_damaged_history_record_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             text: str) -> None:
    """A record edited or damaged by hand (another JSON shape, a cost that is not one)
    ended stmpo plan in an AttributeError traceback; history is a hint: it is ignored."""
    monkeypatch.setenv("STMPO_HISTORY_DIR", str(tmp_path / "hist"))
    project = tmp_path / "a.aep"
    project.write_text("v1")
    _history.save(str(project), "Main", {1: 0.5}, 3.0)
    for key in _history.keys_for(str(project), "Main"):
        (tmp_path / "hist" / f"{key}.json").write_text(text)
    assert _history.load(str(project), "Main", None) is None


def test_history_is_pruned_to_the_newest_records_on_the_host_and_the_farm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_redis: PrivateRedis) -> None:
    """Every project saved again adds a record (its content is new): without pruning the
    host's folder and the farm Redis grow by one per save for ever. Kept: the newest
    ``HISTORY_KEEP``, none older than ``HISTORY_KEEP_DAYS``; a killed render's old
    temporary file goes too, a fresh one (a render writing now) stays."""
    from stmpo_celery.config import defaults

    monkeypatch.setattr(defaults, "HISTORY_KEEP", 3)
    folder = tmp_path / "hist"
    monkeypatch.setenv("STMPO_HISTORY_DIR", str(folder))
    now = time.time()
    records = {}
    for k in range(6):  # six saves of one project, a day apart; the last is this one
        project = tmp_path / "shot.aep"
        project.write_text(f"save {k}")
        records.update(_history.save(str(project), "Main", {1: 0.5, 2: 0.6}, 3.0))
        for path in folder.glob("*.json"):
            if path.stat().st_mtime > now - 60:
                os.utime(path, (now - (6 - k) * 86400,) * 2)
    os.utime(sorted(folder.glob("*.json"), key=os.path.getmtime)[-1], (now - 200 * 86400,) * 2)
    (folder / ".old.1.tmp").write_text("x")
    os.utime(folder / ".old.1.tmp", (now - 7200,) * 2)
    (folder / ".new.2.tmp").write_text("x")
    _history.prune_files(folder, now)
    left = sorted(folder.glob("*.json"), key=os.path.getmtime)
    assert len(left) == 2  # the newest 3, less the one older than 90 days
    assert all(now - p.stat().st_mtime < 90 * 86400 for p in left)
    assert sorted(p.name for p in folder.glob(".*.tmp")) == [".new.2.tmp"]
    assert _history.load(str(tmp_path / "shot.aep"), "Main", None) is not None

    client = private_redis.client
    for k, (key, data) in enumerate(records.items()):
        client.hset(_history.REDIS_HASH, key, json.dumps({**json.loads(data),
                                                           "t": now - k * 86400}))
    client.hset(_history.REDIS_HASH, "damaged", "not json")
    _history.prune_redis(client, now)
    kept = client.hgetall(_history.REDIS_HASH)
    assert len(kept) == 3 and "damaged" not in kept
    assert sorted(json.loads(v)["t"] for v in kept.values()) == [now - 2 * 86400,
                                                                 now - 86400, now]
