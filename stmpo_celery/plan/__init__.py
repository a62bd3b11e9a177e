"""Pure planning: frame specs, output patterns, slot sizing, CPU blocks, chunk plans
and work stealing.

No I/O and no Celery or Redis: everything here is a function of its arguments, so it
runs anywhere (the orchestrator, a slot, ``stmpo plan`` for another host) and is
unit-tested directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._affinity import group_affinity, plan_blocks
    from ._chunks import cost_blocks, makespan_bound, plan_chunks, predict_makespan, task_share
    from ._formats import (
        EXR_MAGIC,
        PNG_IEND,
        PNG_SIGNATURE,
        can_check,
        extension,
        frame_problem,
    )
    from ._frames import format_frames, parse_frames, parse_runs, runs
    from ._pattern import (
        NAME_MAX,
        OutputPattern,
        check_frame_names,
        name_bytes,
        parse_output,
        shared_frames,
        windows_name_problem,
    )
    from ._simulate import simulate
    from ._sizing import default_threads_per_slot, ram_budget, size_slots
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

# Imported on first use: the simulator and the lean slot launcher need a few names only.
_HOME = {
    "group_affinity": "._affinity",
    "plan_blocks": "._affinity",
    "cost_blocks": "._chunks",
    "makespan_bound": "._chunks",
    "plan_chunks": "._chunks",
    "predict_makespan": "._chunks",
    "task_share": "._chunks",
    "EXR_MAGIC": "._formats",
    "PNG_IEND": "._formats",
    "PNG_SIGNATURE": "._formats",
    "extension": "._formats",
    "frame_problem": "._formats",
    "can_check": "._formats",
    "format_frames": "._frames",
    "parse_frames": "._frames",
    "parse_runs": "._frames",
    "runs": "._frames",
    "NAME_MAX": "._pattern",
    "name_bytes": "._pattern",
    "OutputPattern": "._pattern",
    "parse_output": "._pattern",
    "shared_frames": "._pattern",
    "check_frame_names": "._pattern",
    "windows_name_problem": "._pattern",
    "simulate": "._simulate",
    "default_threads_per_slot": "._sizing",
    "size_slots": "._sizing",
    "ram_budget": "._sizing",
    "CostModel": "._steal",
    "Running": "._steal",
    "Steal": "._steal",
    "learn_launch": "._steal",
    "learn_margin": "._steal",
    "plan_steal": "._steal",
    "GROUP_MAX": "._topology",
    "MAX_CPU_ID": "._topology",
    "Cpu": "._topology",
    "Topology": "._topology",
    "adopt_cores": "._topology",
    "format_cpulist": "._topology",
    "from_counts": "._topology",
    "parse_cpulist": "._topology",
    "synthetic": "._topology",
}

__all__ = [
    "EXR_MAGIC",
    "PNG_IEND",
    "PNG_SIGNATURE",
    "cost_blocks",
    "extension",
    "frame_problem",
    "can_check",
    "shared_frames",
    "check_frame_names",
    "windows_name_problem",
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
    "NAME_MAX",
    "name_bytes",
    "OutputPattern",
    "parse_cpulist",
    "parse_frames",
    "parse_output",
    "plan_blocks",
    "plan_chunks",
    "plan_steal",
    "predict_makespan",
    "ram_budget",
    "Running",
    "runs",
    "size_slots",
    "Steal",
    "synthetic",
    "Topology",
]

__getattr__ = lazy_exports(__name__, _HOME)
