"""Automatic slot count: RAM, CPU, max-concurrency and frame limits; forced and movie."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from stmpo_celery.errors import BadInput
from stmpo_celery.plan._sizing import default_threads_per_slot, size_slots

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROFILES = Path(__file__).parent.parent / "worker_config" / "profiles"

#: The reference host: dual EPYC 7742, 256 threads, 1 TB RAM (all free), shipped defaults.
REFERENCE: dict[str, Any] = dict(
    usable_cpus=256,
    total_ram_gb=1024.0,
    available_ram_gb=1024.0,
    ram_per_process_gb=32.0,
    max_concurrency=24,
    frames=240,
)


def size(**overrides: Any) -> Any:
    kw = {**REFERENCE, "threads_per_slot": 16, **overrides}
    return size_slots(**kw)


def test_default_threads_per_slot() -> None:
    assert default_threads_per_slot(True) == 16
    assert default_threads_per_slot(False) == 8


def test_reference_host_mfr_on_and_off_give_different_counts() -> None:
    on = size(threads_per_slot=default_threads_per_slot(True))
    off = size(threads_per_slot=default_threads_per_slot(False))
    assert (on.n, on.bound_by) == (16, "cpu")
    assert on.limits == {"ram": 25, "cpu": 16, "max-concurrency": 24, "frames": 240}
    assert (off.n, off.bound_by) == (24, "max-concurrency")
    assert off.limits == {"ram": 25, "cpu": 32, "max-concurrency": 24, "frames": 240}
    assert on.ram_budget_gb == pytest.approx(819.2)


def test_ram_bound_note_gives_the_numbers() -> None:
    s = size(threads_per_slot=8, total_ram_gb=256.0, available_ram_gb=150.0)
    assert (s.n, s.bound_by) == (4, "ram")
    assert s.ram_budget_gb == pytest.approx(150.0)  # available now < 80 % of total
    ram_note = next(n for n in s.notes if n.startswith("RAM binds"))
    for number in ("150.0 GB", "80% of 256.0 GB", "150.0 GB available", "32 GB", "= 4 slot(s)"):
        assert number in ram_note, ram_note


def test_ram_budget_is_80_percent_of_total_when_more_is_free() -> None:
    s = size(threads_per_slot=1, total_ram_gb=100.0, available_ram_gb=100.0, ram_per_process_gb=10)
    assert s.ram_budget_gb == pytest.approx(80.0) and s.limits["ram"] == 8 and s.n == 8


def test_no_room_still_starts_one_slot_and_says_why() -> None:
    s = size(total_ram_gb=16.0, available_ram_gb=4.0)
    assert (s.n, s.bound_by, s.limits["ram"]) == (1, "ram", 0)
    assert any("starting 1 slot anyway" in n for n in s.notes)
    c = size(usable_cpus=2, threads_per_slot=16)  # a 2-CPU container
    assert (c.n, c.bound_by) == (1, "cpu")
    assert any("2 usable CPU(s) are fewer than --threads-per-slot 16" in n for n in c.notes)


def test_frames_bound() -> None:
    s = size(threads_per_slot=8, frames=10)
    assert (s.n, s.bound_by) == (10, "frames")


def test_forced_wins_over_ram_and_cpu_but_not_the_caps() -> None:
    s = size(threads_per_slot=16, forced=20)  # above the CPU limit (16), within RAM (25)
    assert (s.n, s.bound_by) == (20, "forced") and s.limits["forced"] == 20
    assert any("fewer than --threads-per-slot 16" in n for n in s.notes)
    capped = size(threads_per_slot=8, forced=40)
    assert (capped.n, capped.bound_by) == (24, "max-concurrency")
    assert "--concurrency 40 capped to 24 by --max-concurrency" in capped.notes
    few = size(threads_per_slot=8, forced=12, frames=5)
    assert (few.n, few.bound_by) == (5, "frames")
    assert "--concurrency 12 capped to 5: the task has 5 frame(s)" in few.notes


def test_forced_above_the_ram_limit_warns() -> None:
    s = size(threads_per_slot=1, forced=8, total_ram_gb=100.0, available_ram_gb=100.0)
    assert s.n == 8 and s.limits["ram"] == 2
    assert any("exceed the RAM limit" in n and "2 slot(s)" in n for n in s.notes)


def test_movie_forces_one_slot() -> None:
    s = size(threads_per_slot=8, movie=True)
    assert (s.n, s.bound_by) == (1, "movie")
    assert any("cannot be split" in n for n in s.notes)
    forced = size(threads_per_slot=8, movie=True, forced=8)
    assert forced.n == 1 and any("--concurrency 8 ignored" in n for n in forced.notes)


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        ({"ram_per_process_gb": 0}, "--ram-per-process-gb"),
        ({"ram_per_process_gb": -4.0}, "--ram-per-process-gb"),
        ({"ram_per_process_gb": float("nan")}, "--ram-per-process-gb"),
        ({"threads_per_slot": 0}, "--threads-per-slot"),
        ({"max_concurrency": 0}, "--max-concurrency"),
        ({"max_concurrency": -1}, "--max-concurrency"),
        ({"forced": 0}, "--concurrency"),
        ({"forced": -2}, "--concurrency"),
        ({"frames": 0}, "--frames"),
    ],
)
def test_nonsense_is_bad_input_naming_the_flag(overrides: dict[str, Any], flag: str) -> None:
    with pytest.raises(BadInput) as info:
        size(**overrides)
    assert flag in info.value.message and "\n" not in info.value.message


@pytest.mark.parametrize(
    ("name", "n", "bound"), [("hero", 16, "cpu"), ("farm", 32, "cpu")]
)
def test_profiles_on_the_reference_host(name: str, n: int, bound: str) -> None:
    path = PROFILES / f"{name}.toml"
    assert path.read_text().startswith("# ")  # says when to use it
    prof = tomllib.loads(path.read_text())
    s = size_slots(
        usable_cpus=256,
        total_ram_gb=1024.0,
        available_ram_gb=1024.0,
        ram_per_process_gb=prof["ram_per_process_gb"],
        threads_per_slot=prof["threads_per_slot"],
        max_concurrency=prof["max_concurrency"],
        frames=240,
    )
    assert (s.n, s.bound_by) == (n, bound)
    assert prof["threads_per_slot"] == default_threads_per_slot(prof["mfr"])


def test_profile_keys_are_settings() -> None:
    from stmpo_celery.config._settings import SETTINGS

    for path in PROFILES.glob("*.toml"):
        assert set(tomllib.loads(path.read_text())) <= set(SETTINGS), path
