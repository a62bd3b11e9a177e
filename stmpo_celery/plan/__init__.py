"""Pure planning: frame specs, output patterns, slot sizing, CPU blocks, chunk plans
and work stealing.

No I/O and no Celery or Redis: everything here is a function of its arguments, so it
runs anywhere (the orchestrator, a slot, ``stmpo plan`` for another host) and is
unit-tested directly.
"""

from ._affinity import group_affinity, plan_blocks
from ._chunks import cost_blocks, makespan_bound, plan_chunks, predict_makespan, task_share
from ._formats import EXR_MAGIC, PNG_IEND, PNG_SIGNATURE, extension, frame_problem
from ._frames import format_frames, parse_frames, parse_runs, runs
from ._pattern import OutputPattern, parse_output, shared_frames
from ._simulate import simulate
from ._sizing import default_threads_per_slot, size_slots
from ._steal import CostModel, Running, Steal, learn_launch, learn_margin, plan_steal
from ._topology import (
    GROUP_MAX,
    MAX_CPU_ID,
    Cpu,
    Topology,
    adopt_cores,
    format_cpulist,
    from_counts,
    parse_cpulist,
    synthetic,
)

__all__ = [
    "EXR_MAGIC",
    "PNG_IEND",
    "PNG_SIGNATURE",
    "cost_blocks",
    "extension",
    "frame_problem",
    "shared_frames",
    "simulate",
    "task_share",
    "learn_margin",
    "parse_runs",
    "adopt_cores",
    "CostModel",
    "Cpu",
    "default_threads_per_slot",
    "format_cpulist",
    "format_frames",
    "from_counts",
    "group_affinity",
    "GROUP_MAX",
    "learn_launch",
    "makespan_bound",
    "MAX_CPU_ID",
    "OutputPattern",
    "parse_cpulist",
    "parse_frames",
    "parse_output",
    "plan_blocks",
    "plan_chunks",
    "plan_steal",
    "predict_makespan",
    "Running",
    "runs",
    "size_slots",
    "Steal",
    "synthetic",
    "Topology",
]
