"""`stmpo plan`, `stmpo config show`, profiles, and pinning read back from real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import Farm, tagged, wait_for

STMPO = [sys.executable, "-m", "stmpo_celery.cli"]


def stmpo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STMPO, *args], capture_output=True, text=True, timeout=60, env=env)


def test_plan_for_the_reference_host_differs_with_mfr() -> None:
    host = ["--frames", "1-240", "--cpus", "256", "--ram-gb", "1024", "--numa-nodes", "2",
            "--ram-per-process-gb", "32", "--max-concurrency", "24", "--json"]
    on = json.loads(stmpo("plan", *host, "--mfr").stdout)
    off = json.loads(stmpo("plan", *host, "--no-mfr").stdout)
    assert (on["n_slots"], on["bound_by"]) == (16, "cpu")
    assert (off["n_slots"], off["bound_by"]) == (24, "max-concurrency")
    for plan in (on, off):
        cpus = [c for s in plan["slots"] for c in s["cpus"]]
        assert len(cpus) == len(set(cpus)), "no CPU in two slots"
        assert all(s["node"] in (0, 1) for s in plan["slots"]), "no slot straddles nodes"
        covered = [f for a, b in plan["chunks"] for f in range(a, b + 1)]
        assert covered == list(range(1, 241))
        assert plan["predicted_makespan_s"] >= plan["lower_bound_s"]


def test_forced_concurrency_is_capped_and_says_so() -> None:
    res = stmpo("plan", "--frames", "1-240", "--cpus", "64", "--ram-gb", "256",
                "--concurrency", "40", "--max-concurrency", "12")
    assert res.returncode == 0, res.stderr
    assert "12 slot(s)" in res.stdout and "capped to 12 by --max-concurrency" in res.stdout
    assert sum("bound by" in line for line in res.stdout.splitlines()) == 1  # said once


def test_a_stepped_range_says_each_run_costs_a_launch() -> None:
    """aerender renders one unbroken range per launch: 1-40:3 is 14 launches, and the plan
    says so (a plain range does not get the note)."""
    host = ("--cpus", "8", "--ram-gb", "64")
    stepped = stmpo("plan", "--frames", "1-40:3", *host)
    assert "the frames fall in 14 separate runs" in stepped.stdout, stepped.stdout
    assert "separate runs" not in stmpo("plan", "--frames", "1-40", *host).stdout


def test_movie_output_forces_one_slot() -> None:
    out = json.loads(stmpo("plan", "--frames", "1-240", "--output", "/r/a.mov", "--cpus", "64",
                           "--ram-gb", "256", "--json").stdout)
    assert out["n_slots"] == 1 and out["bound_by"] == "movie"
    import os  # a host-wide slot count is named where it came from, not as a flag

    env = dict(os.environ, STMPO_CONCURRENCY="3")
    said = stmpo("plan", "--frames", "1-4", "--output", "/r/a.mov", env=env).stdout
    assert "$STMPO_CONCURRENCY 3 ignored: a movie is rendered by one process" in said, said


@pytest.mark.parametrize("schedule", ["static", "fixed", "adaptive"])
def test_plan_predicts_every_schedule_with_the_launch_cost_given(schedule: str) -> None:
    """``plan`` predicts each schedule's makespan with ``--launch-cost``: it was refused
    for every schedule but adaptive (render's rule: only adaptive uses it there)."""
    host = ["--frames", "1-240", "--cpus", "8", "--ram-gb", "64", "--concurrency", "4",
            "--schedule", schedule, "--frame-cost", "1", "--json"]
    cheap, dear = (stmpo("plan", *host, "--launch-cost", str(c)) for c in (1, 30))
    assert cheap.returncode == dear.returncode == 0, cheap.stderr + dear.stderr
    gap = json.loads(dear.stdout)["predicted_makespan_s"] - \
        json.loads(cheap.stdout)["predicted_makespan_s"]
    assert gap >= 29  # at least one launch on the longest slot


def test_config_show_names_every_source(tmp_path: Path) -> None:
    import os

    env = dict(os.environ, STMPO_RETRIES="4", STMPO_MAX_CONCURRENCY="9")
    res = stmpo("config", "show", "--json", "--profile", "farm", "--max-concurrency", "3", env=env)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["max_concurrency"] == {"value": 3, "source": "--max-concurrency"}
    assert data["retries"] == {"value": 4, "source": "$STMPO_RETRIES"}
    assert data["mfr"] == {"value": False, "source": "profile farm"}
    assert data["fail_fast"]["source"] == "default"
    prof = tmp_path / "mine.toml"
    prof.write_text("threads_per_slot = 4\n")
    data = json.loads(stmpo("config", "show", "--json", "--profile", str(prof)).stdout)
    assert data["threads_per_slot"] == {"value": 4, "source": "profile mine"}
    prof.write_text("threads = 4\n")
    bad = stmpo("config", "show", "--profile", str(prof))
    assert bad.returncode == 2 and "unknown key(s) threads" in bad.stderr


def test_a_host_wide_chunk_size_does_not_refuse_a_typed_static_schedule(
        tmp_path: Path) -> None:
    """A profile's (or ``STMPO_CHUNK_SIZE``'s) chunk size is for the schedules that use
    it: ``--schedule static`` typed for one render was refused because of it. The same
    chunk size typed, or set beside ``static`` in the same layer, is still refused."""
    import os

    prof = tmp_path / "chunky.toml"
    prof.write_text("chunk_size = 5\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STMPO_")}
    ok = stmpo("config", "show", "--json", "--profile", str(prof), "--schedule", "static",
               env=env)
    assert ok.returncode == 0, ok.stderr
    ok = stmpo("config", "show", "--json", "--schedule", "static",
               env={**env, "STMPO_CHUNK_SIZE": "5"})
    assert ok.returncode == 0, ok.stderr
    typed = stmpo("config", "show", "--schedule", "static", "--chunk-size", "5", env=env)
    assert typed.returncode == 2 and "--chunk-size does nothing with --schedule static" in \
        typed.stderr
    prof.write_text('chunk_size = 5\nschedule = "static"\n')
    same = stmpo("config", "show", "--profile", str(prof), env=env)
    assert same.returncode == 2 and "does nothing with" in same.stderr, same.stderr


def test_plan_with_a_numa_map_takes_no_other_cpu_description() -> None:
    """The map describes the CPUs: --cpus, --numa-nodes and --smt were dropped without a
    word; they are refused, and --ram-gb alone plans for the mapped host."""
    nmap = str(Path(__file__).parents[1] / "worker_config" / "numa_maps" / "epyc-nps4-128.json")
    res = stmpo("plan", "--frames", "1-240", "--numa-map", nmap, "--ram-gb", "1024",
                "--cpus", "8", "--numa-nodes", "7", "--no-smt")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "--cpus, --numa-nodes, --smt/--no-smt describe(s) the CPUs" in res.stderr
    res = stmpo("plan", "--frames", "1-240", "--numa-map", nmap, "--ram-gb", "1024")
    assert res.returncode == 0, res.stderr
    assert "128 CPUs" in res.stdout and "4 NUMA node(s)" in res.stdout


def test_plan_rejects_bad_numa_map(tmp_path: Path) -> None:
    m = tmp_path / "m.json"
    m.write_text("{not json")
    res = stmpo("plan", "--frames", "1-10", "--numa-map", str(m))
    assert res.returncode == 2 and "is not JSON" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize(("args", "words"), [
    (["--numa-nodes", "2"], "--numa-nodes describes another host"),
    (["--no-smt"], "--smt/--no-smt describes another host"),
    (["--cpus", "8", "--ram-gb", "32", "--numa-nodes", "0"], "at least one NUMA node"),
    (["--comp", "Main"], "pass --project too"),
    (["--frame-cost", "-5"], "'-5' is not above 0"),  # predicted below the bound before
    (["--cpus", "8", "--ram-gb", "0"], "'0' is not above 0"),
])
def test_plan_flags_that_would_do_nothing_are_refused(args: list[str], words: str) -> None:
    res = stmpo("plan", "--frames", "1-10", *args)
    assert res.returncode == 2 and words in res.stderr, res.stderr
    assert len(res.stderr.splitlines()) == 1


def test_each_aerender_runs_on_its_slot_cpus(farm: Farm) -> None:
    cpus = sorted(psutil.Process().cpu_affinity() or [])
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs")
    farm.knobs.update(FRAME_COST="0.2")
    proc = farm.start(frames="1-20", concurrency=2)
    try:
        assert wait_for(lambda: len([p for p in tagged(farm.tag) if p.name() == "AfterFX"]) == 2,
                        timeout=30)
        seen: dict[str, Any] = {}
        for p in tagged(farm.tag):
            name = p.name()
            if name in ("AfterFX", "aerender"):
                block = tuple(p.cpu_affinity())
                seen.setdefault(name, set()).add(block)
        assert seen["AfterFX"] == {(cpus[0],), (cpus[1],)}
        assert seen["aerender"] == {(cpus[0],), (cpus[1],)}
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "plan: 2 slots x 1 CPU pinned" in out  # the short plan on stdout...
    run_log = (farm.logs / "run.log").read_text()
    assert f"slot 0: CPUs {cpus[0]}" in run_log  # ...every slot's CPUs in the run log (and -v)


def test_plan_says_how_many_cpus_each_slot_is_pinned_to_when_it_is_not_the_thread_count(
        ) -> None:
    """24 slots of 8 threads on 256 CPUs: the blocks share out every CPU (10 or 12 each);
    the plan said '8 CPUs per slot' and pinned 10-12."""
    res = stmpo("plan", "--frames", "1-240", "--cpus", "256", "--ram-gb", "1024",
                "--numa-nodes", "2", "--no-mfr", "--json")
    plan = json.loads(res.stdout)
    sizes = sorted({len(s["cpus"]) for s in plan["slots"]})
    assert plan["threads_per_slot"] == 8 and sizes[0] > 8
    text = stmpo("plan", "--frames", "1-240", "--cpus", "256", "--ram-gb", "1024",
                 "--numa-nodes", "2", "--no-mfr").stdout
    assert f"pinned to {sizes[0]}-{sizes[-1]} each" in text, text
