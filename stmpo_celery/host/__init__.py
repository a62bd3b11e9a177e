"""The host: CPU topology and NUMA maps, the spawn plan for this host, pinning,
process trees, parent-death watches and per-OS font installs.

This is the platform layer (its one face: :mod:`._platform`; per OS: ``_linux``,
``_windows``, ``_macos``): the only place that asks which OS it runs on. Runs in the
orchestrator (detection, planning, tree kill) and in each slot (pinning, death watch).
"""

from . import _winfonts as winfonts
from ._hostplan import HostPlan, make_host_plan, make_plan, other_host, this_host
from ._platform import become_subreaper, pin_current_process, set_process_name
from ._proc import descendants, kill_procs, kill_tree, start_deathwatch, tree_cpu_seconds
from ._winfonts import local_appdata, user_font_dir

__all__ = [
    "winfonts",
    "become_subreaper",
    "descendants",
    "HostPlan",
    "kill_procs",
    "kill_tree",
    "local_appdata",
    "make_host_plan",
    "make_plan",
    "other_host",
    "pin_current_process",
    "set_process_name",
    "start_deathwatch",
    "this_host",
    "tree_cpu_seconds",
    "user_font_dir",
]
