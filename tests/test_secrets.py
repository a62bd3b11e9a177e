"""Passwords never leave what holds them: broker URLs of every shape are masked in every
message and refused where they would be stored; secret variables are gone from the
environment of every process a command starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAKE, Farm, tagged, wait_for

from stmpo_celery.broker import mask_url, parse_broker_url, url_secrets
from stmpo_celery.config import defaults
from stmpo_celery.errors import BadInput

#: passwords with characters a URL parser reads as the end of the host part
ODD = ["redis://:ab/cdS3cret@127.0.0.1:6391/0", "redis://:ab#cdS3cret@h:1/0",
       "redis://:ab?cdS3cret@h/0", "redis://:1234/S3cret@h", "rediss://u:p/S3cret@h:6380/0"]


@pytest.mark.parametrize("url", ODD)
def test_a_password_the_host_part_misreads_is_masked_and_refused(url: str) -> None:
    assert "S3cret" not in mask_url(url) and "***@" in mask_url(url)
    assert any("S3cret" in s for s in url_secrets(url))  # found, so ps can be scrubbed
    with pytest.raises(BadInput) as err:
        parse_broker_url(url)
    assert "S3cret" not in str(err.value) and "percent-encode" in str(err.value)


def test_a_query_password_is_found_as_written_for_the_command_line_scrub() -> None:
    found = url_secrets("redis://h/0?password=Pw%37z+q")
    assert {"Pw%37z+q", "Pw7z+q", "Pw7z q"} <= set(found)  # as typed, and as decoded
    assert mask_url("redis://h/0?password=Pw%37z+q") == "redis://h/0?password=***"


def test_a_url_option_stmpo_does_not_take_is_refused_not_a_crash() -> None:
    with pytest.raises(BadInput, match=r"\?socket_timeout=.*leave it out"):
        parse_broker_url("redis://:pw@h:6379/0?socket_timeout=5")
    assert parse_broker_url("redis://h/0?password=pw").url == "redis://:pw@h/0"


def _stmpo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stmpo_celery.cli", *args], text=True,
                          capture_output=True, env=env, timeout=60, stdin=subprocess.DEVNULL)


def test_render_and_bundle_never_print_or_store_such_a_password(tmp_path: Path) -> None:
    url = ODD[0]
    (tmp_path / "p.aep").write_bytes(b"aep")
    res = _stmpo("render", "--project", str(tmp_path / "p.aep"), "--comp", "C",
                 "--frames", "1-2", "--output", str(tmp_path / "o_[####].png"),
                 "--progress", "openjd", "--aerender", FAKE, "--broker", url)
    assert res.returncode == 2 and "S3cret" not in res.stdout + res.stderr, res.stderr
    assert "percent-encode" in res.stderr
    env = {**os.environ, defaults.BROKER_ENV: url}
    res = _stmpo("doctor", env=env)
    assert "S3cret" not in res.stdout + res.stderr
    res = _stmpo("bundle", "--project", str(tmp_path / "p.aep"), "--comp", "C", "--frames",
                 "1-4", "--output", str(tmp_path / "o_[####].png"), "--broker", url,
                 "--aerender", FAKE,
                 "--dest", str(tmp_path / "b"))
    assert res.returncode == 2 and "S3cret" not in res.stdout + res.stderr, res.stderr
    assert not (tmp_path / "b").exists() or not any(
        "S3cret" in p.read_text(errors="replace") for p in (tmp_path / "b").rglob("*")
        if p.is_file())


@pytest.mark.slow
def test_no_process_of_a_render_inherits_a_secret_variable(farm: Farm) -> None:
    """A farm worker handed its Redis URL (password and all) to every task through the
    environment, down to After Effects, where a plug-in or expression of any submitted
    project could read it; the warden and the embedded Redis's guard kept the broker's."""
    secrets = {defaults.FARM_URL_ENV: "redis://:FarmS3cret@127.0.0.1:1/0",
               defaults.FLOWER_AUTH_ENV: "wrangler:FlowerS3cret"}
    farm.knobs.update(FRAME_COST="0.2")
    proc = farm.start(frames="1-12", env={**farm.env(), **secrets})
    seen: dict[int, str] = {}
    try:
        def look() -> bool:
            for p in tagged(farm.tag):
                try:
                    seen[p.pid] = " ".join(f"{k}={v}" for k, v in p.environ().items())
                    seen[p.pid] += " CMD=" + " ".join(p.cmdline())
                except Exception:  # noqa: BLE001 - gone meanwhile
                    continue
            return len(farm.journal_frames()) >= 3
        assert wait_for(look, timeout=60, step=0.1)
        look()
        out, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 0, out + err
    renderers = [pid for pid, env in seen.items() if "STMPO_FAKE_" in env]
    assert len(seen) >= 4 and renderers, seen.keys()  # the run, its slots, the renderers
    leaks = {pid: env for pid, env in seen.items()  # the run's own process too: ps shows
             if "FarmS3cret" in env or "FlowerS3cret" in env}
    assert not leaks, [v.partition(" CMD=")[2] for v in leaks.values()]
