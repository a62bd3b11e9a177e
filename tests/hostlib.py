"""Running `stmpo host up|down` and friends from the tests: one environment per host."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import Farm, free_port


def stmpo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stmpo_celery.cli", *args], capture_output=True,
                          text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)


def host_env(farm: Farm, host_dir: Path) -> dict[str, str]:
    env = farm.env(STMPO_HOST_DIR=str(host_dir))
    env.pop("STMPO_FLOWER_AUTH", None)
    return env


def host_up(farm: Farm, host_dir: Path) -> tuple[dict[str, str], int, int,
                                                   subprocess.CompletedProcess[str]]:
    """`stmpo host up` with a Flower, on free ports: (env, redis port, Flower port, result)."""
    env = host_env(farm, host_dir)
    port, fport = free_port(), free_port()
    up = stmpo("host", "up", "--port", str(port), "--flower", f"127.0.0.1:{fport}", env=env)
    return env, port, fport, up
