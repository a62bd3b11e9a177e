"""What a slot needs to know about its run (written once by the orchestrator)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..aerender import RenderTarget
from ..config import defaults
from ..host import write_all


@dataclass
class RunSpec:
    run_id: str
    host: str
    queue: str
    broker_url: str
    aerender: str
    target: RenderTarget
    log_dir: str
    fail_fast: bool = True
    spawn_delay: float = 0.0
    retries: int = 1
    stall_timeout: float = 0.0  #: 0 = derived (floor or a multiple of the slowest frame)
    stall_floor: float = field(default_factory=lambda: defaults.STALL_FLOOR_S)
    chunk_timeout: float = 0.0
    schedule: str = "static"
    launch_cost: float = 30.0
    min_steal: int = 1  #: adaptive: the shortest tail a steal may take (--chunk-size)
    steal_reach: float = defaults.STEAL_REACH_FRAMES  #: adaptive: see plan._steal
    steal_margin: float = defaults.STEAL_MARGIN  #: adaptive: see plan._steal
    chunks: list[tuple[int, int]] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)  #: the frames to render (after skips)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        data = json.loads(text)
        data["target"] = RenderTarget(**{
            **data["target"],
            "mem_usage": tuple(data["target"]["mem_usage"]) if data["target"].get("mem_usage")
            else None,
        })
        data["chunks"] = [tuple(c) for c in data.get("chunks", [])]
        return cls(**data)

    def write(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:  # a full temp folder: the error names this file
            write_all(fd, self.to_json().encode("utf-8"), path)
        finally:
            os.close(fd)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> RunSpec:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
