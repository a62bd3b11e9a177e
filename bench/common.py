"""Shared helpers for the benchmarks: run `stmpo render` on the simulator, read summaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
FAKE = str(BIN / "stmpo-fake-aerender")


def installed_bytecode() -> None:
    """Compile the package's bytecode, as ``pip install`` does for a render host's wheel:
    an editable checkout run with ``PYTHONDONTWRITEBYTECODE`` set (CI images, some
    shells) would otherwise compile every module again in every process it starts (the
    orchestrator, each spawned slot, each simulator process), which a host never does
    and which would be measured as start-up."""
    import compileall

    import stmpo_celery

    compileall.compile_dir(str(Path(stmpo_celery.__file__).parent), quiet=1)


def render(frames: str, concurrency: int, knobs: dict[str, str], *extra: str,
           timeout: float = 600, project: str = "bench",
           history_dir: str | None = None) -> dict[str, Any]:
    """One real render in a fresh folder; returns the summary plus wall time,
    ``first_launch_s`` (``stmpo render`` executed -> a slot launching the first aerender,
    from the chunks' start times) and ``first_journal_s`` (... -> the first simulator
    process writing its launch line: the stand-in's own Python start-up included, which
    a native aerender does not have). ``project`` is the project file's content (what
    history is keyed by); ``history_dir`` holds the frame-cost history (default: a fresh
    one)."""
    with tempfile.TemporaryDirectory(prefix="stmpo-bench-") as tmp:
        root = Path(tmp)
        (root / "p.aep").write_text(project)
        summary = root / "s.json"
        journal = root / "journal"
        env = dict(os.environ, **{f"STMPO_FAKE_{k}": v for k, v in knobs.items()},
                   STMPO_FAKE_JOURNAL=str(journal),
                   STMPO_HISTORY_DIR=history_dir or str(root / "history"))
        env.pop("STMPO_BROKER_URL", None)
        argv = [sys.executable, "-m", "stmpo_celery.cli", "render", "--project",
                str(root / "p.aep"), "--comp", "Bench", "--frames", frames, "--output",
                str(root / "out" / "f_[#####].png"), "--aerender", FAKE, "--concurrency",
                str(concurrency), "--summary", str(summary), "--progress", "openjd",
                "--log-dir", str(root / "logs"), *extra]
        t0 = time.time()
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        wall = time.time() - t0
        if res.returncode != 0:
            raise RuntimeError(f"render failed ({res.returncode}): {res.stdout[-2000:]}"
                               f"{res.stderr[-2000:]}")
        data: dict[str, Any] = json.loads(summary.read_text())
        data["wall_s"] = wall
        data["t_cmd_start"] = t0
        launches = journal_times(journal, "launch")
        data["first_journal_s"] = min(launches) - t0
        data["first_launch_s"] = min(c["t0"] for c in data["chunks"] if c.get("t0")) - t0
        data["launches"] = len(launches)
        return data


def journal_times(path: Path, kind: str) -> list[float]:
    """When each ``kind`` line of the simulator's journal happened: its last field that
    is not a ``key=value`` (``launch <pid> <s> <e> <time> cpus=<ids>``)."""
    if not path.exists():
        return []
    return [float(next(f for f in reversed(ln.split()) if "=" not in f))
            for ln in path.read_text().splitlines() if ln.startswith(kind + " ")]


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, r in enumerate(rows):
        out.append("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in
                             enumerate(zip(r, widths, strict=True))))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
