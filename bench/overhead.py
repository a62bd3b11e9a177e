"""The orchestrator's own cost, measured side by side in one run.

    python -m bench.overhead

* start-up: ``stmpo render`` started -> a slot launching the first aerender (N = 1, 2,
  4, 8), and apart, -> the simulator's own launch line (its Python start-up, which a
  native aerender does not have, included);
* teardown: last frame written -> ``stmpo render`` exited;
* fail-fast: strong error printed -> every process of the run gone;
* cancel: SIGTERM -> every process of the run gone;
* RSS of the orchestrator and of each slot while rendering.

Times come from the run's summary (when each slot launched its aerender), the
simulator's journal (it stamps each launch, frame and error) and from polling the
process table, so they measure what a render host sees.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from bench.common import FAKE, installed_bytecode, journal_times, table


class Run:
    def __init__(self, frames: str, n: int, knobs: dict[str, str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="stmpo-bench-"))
        (self.dir / "p.aep").write_text("bench")
        self.journal_path = self.dir / "journal"
        self.tag = uuid.uuid4().hex
        env = dict(os.environ, STMPO_TEST_TAG=self.tag, STMPO_FAKE_JOURNAL=str(self.journal_path),
                   **{f"STMPO_FAKE_{k}": v for k, v in knobs.items()})
        env.pop("STMPO_BROKER_URL", None)
        self.argv = [sys.executable, "-m", "stmpo_celery.cli", "render", "--project",
                     str(self.dir / "p.aep"), "--comp", "Bench", "--frames", frames,
                     "--output", str(self.dir / "out" / "f_[#####].png"), "--aerender", FAKE,
                     "--concurrency", str(n), "--schedule", "static", "--progress", "openjd",
                     "--log-dir", str(self.dir / "logs"), "--summary",
                     str(self.dir / "summary.json")]
        self.t0 = time.time()
        self.proc = subprocess.Popen(self.argv, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the render if a measure failed half-way, and delete its folder."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)

    def journal(self, kind: str) -> list[float]:
        return journal_times(self.journal_path, kind)

    def procs(self) -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter():
            try:
                if p.environ().get("STMPO_TEST_TAG") == self.tag and p.status() != "zombie":
                    out.append(p)
            except (psutil.Error, OSError):
                pass
        return out

    def gone_at(self, timeout: float = 20) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.procs():
                return time.time()
            time.sleep(0.005)
        raise RuntimeError("processes of the run survived")


def startup_teardown(n: int) -> tuple[float, float, float]:
    """(start -> a slot launching the first aerender, ... -> the simulator's launch line,
    last frame -> exit)."""
    with Run(f"1-{2 * n}", n, {"STARTUP": "0.2", "FRAME_COST": "0.05"}) as r:
        r.proc.wait(timeout=120)
        exited = time.time()
        chunks = json.loads((r.dir / "summary.json").read_text())["chunks"]
        first_launch = min(c["t0"] for c in chunks if c.get("t0"))
        last_frame = max(r.journal("frame"))
        return first_launch - r.t0, min(r.journal("launch")) - r.t0, exited - last_frame


def fail_fast() -> float:
    with Run("1-40", 4, {"STARTUP": "0.2", "FRAME_COST": "0.2", "FAIL_FRAME": "13"}) as r:
        r.proc.wait(timeout=120)
        gone = r.gone_at()
        return gone - r.journal("error")[0]


def cancel() -> float:
    with Run("1-200", 4, {"STARTUP": "0.2", "FRAME_COST": "0.2"}) as r:
        while len(r.journal("frame")) < 8:
            time.sleep(0.01)
        t = time.time()
        r.proc.send_signal(signal.SIGTERM)
        gone = r.gone_at()
        r.proc.wait()
        return gone - t


def rss() -> tuple[float, list[float], list[float]]:
    with Run("1-200", 4, {"STARTUP": "0.2", "FRAME_COST": "0.2"}) as r:
        while len(r.journal("frame")) < 8:
            time.sleep(0.01)
        orch = psutil.Process(r.proc.pid).memory_info().rss / 2**20
        slot_procs = [p for p in r.procs() if p.name().startswith("stmpo-slot")]
        slots = [p.memory_info().rss / 2**20 for p in slot_procs]
        unique = [p.memory_full_info().uss / 2**20 for p in slot_procs]
        r.proc.send_signal(signal.SIGTERM)
        r.proc.wait()
        return orch, slots, unique


def main() -> None:
    installed_bytecode()
    rows = [["measure", "N", "seconds / MB", "target"]]
    for n in (1, 2, 4, 8):
        runs = [startup_teardown(n) for _ in range(5)]
        rows.append(["start -> first aerender launch", str(n),
                     f"{statistics.median(r[0] for r in runs):.2f}", "<= 0.6 (N=4)"])
        rows.append(["  ... -> simulator's launch line", str(n),
                     f"{statistics.median(r[1] for r in runs):.2f}", ""])
        rows.append(["last frame -> exit", str(n),
                     f"{statistics.median(r[2] for r in runs):.2f}", "<= 0.5"])
    rows.append(["strong error -> all processes gone", "4", f"{fail_fast():.2f}", "<= 1.0"])
    rows.append(["SIGTERM -> all processes gone", "4", f"{cancel():.2f}", "<= 1.0"])
    orch, slots, unique = rss()
    rows.append(["RSS orchestrator (MB)", "4", f"{orch:.0f}", ""])
    rows.append(["RSS per slot (MB, max)", "4", f"{max(slots):.0f}", "<= 80"])
    rows.append(["unique memory per slot (USS, MB, max)", "4", f"{max(unique):.0f}", ""])
    print(table(rows))


if __name__ == "__main__":
    main()
