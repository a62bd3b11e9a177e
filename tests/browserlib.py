"""Headless Chromium for the browser tests: a page's DOM after its scripts ran, and
screenshots."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

PNG = b"\x89PNG\r\n\x1a\n"


def chromium_run(chromium: str, url: str, *args: str, size: str = "1400,900",
                 budget_ms: int = 4000, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
             f"--window-size={size}", f"--virtual-time-budget={budget_ms}", *args, url],
            capture_output=True, text=True, timeout=timeout, check=False)


def screenshot(chromium: str, url: str, png: Path, *, size: str = "1400,900",
               budget_ms: int = 4000) -> None:
    """A PNG of the page in ``png``. Chromium itself, started while the machine is busy
    (another test's browser, renders), now and then exits without one: it is started
    once more, and its own words are shown if it fails again."""
    said = ""
    for _ in range(2):
        res = chromium_run(chromium, url, f"--screenshot={png}", size=size,
                           budget_ms=budget_ms)
        if png.exists() and png.read_bytes()[:8] == PNG:
            return
        said = (res.stderr or res.stdout)[-2000:]
    raise AssertionError(f"chromium wrote no screenshot of {url}: {said}")
