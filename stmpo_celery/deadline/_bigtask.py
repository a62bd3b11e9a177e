"""The big-task job template and the choice between it and the chunked one (pure text).

Deadline Cloud's chunked tasks (``CHUNK[INT]``, the TASK_CHUNKING extension) carry at
most 150 frames each (``chunks.defaultTaskCount``'s maximum). A 24-slot host then gets
about 6 frames per After Effects launch, and each launch costs 10-120 s. The big-task
template has an INT task parameter over task indices instead: task ``I`` of ``N`` runs
``stmpo render --frames FRAMES --task I/N``, which renders the I-th of N near-equal
pieces of the listed frames, any number of them.

``openjd_bundle/big/template.yaml`` is generated from ``openjd_bundle/template.yaml``
by :func:`big_template_text` (run this module to regenerate it; a test checks that the
shipped file is what the function makes), so the two never drift apart.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

#: The most frames one chunked task may carry (RFC 0001: defaultTaskCount <= 150).
CHUNK_LIMIT = 150

_HEADER = """\
# stmpo-celery: render an After Effects IMAGE SEQUENCE on Deadline Cloud in BIG tasks.
#
# GENERATED from ../template.yaml by `python -m stmpo_celery.deadline._bigtask`: edit that
# template, then regenerate. Differences: no TASK_CHUNKING; the frames are cut into
# TaskCount tasks of near-equal size (any size: 1,000+ frames per task for a 24-slot host)
# by an INT task parameter over task indices; each task runs one `stmpo render --task I/N`.
# `stmpo bundle` writes this template when a task would carry more than 150 frames.
"""

_TASKCOUNT = """\
- name: TaskCount
  type: INT
  default: 1
  minValue: 1
  maxValue: 10000
  description: >-
    How many tasks the frames are cut into, in order, in near-equal pieces (stmpo bundle
    computes it from --frames-per-task). Each task runs one stmpo render of its piece on
    all slots of its host, so big pieces pay few After Effects launches.
  userInterface:
    control: SPIN_BOX
    label: Tasks
    groupLabel: Frames
"""

_SPACE = """\
  parameterSpace:
    taskParameterDefinitions:
    - name: Task
      type: INT
      range: "1-{{Param.TaskCount}}"
"""


def _sub(pattern: str, repl: str, text: str) -> str:
    out, n = re.subn(pattern, lambda _m: repl, text, count=1, flags=re.S | re.M)
    if n != 1:
        raise ValueError(f"the image template no longer has {pattern!r}: update _bigtask.py")
    return out


def big_template_text(small: str) -> str:
    """The big-task template made from the chunked image-sequence template's text."""
    text = _sub(r"\A(#[^\n]*\n)+", _HEADER, small)
    text = _sub(r"^extensions:\n- TASK_CHUNKING\n", "", text)
    text = _sub(r'^name: "stmpo: After Effects image sequence"$',
                'name: "stmpo: After Effects image sequence (big tasks)"', text)
    text = _sub(r"^- name: FramesPerTask\n.*?(?=^# ---- Profile)", _TASKCOUNT, text)
    text = _sub(r"    One task per chunk of at most FramesPerTask frames;",
                "    One task per piece of the frames (TaskCount pieces);", text)
    text = _sub(r"^  parameterSpace:\n.*?(?=^  script:)", _SPACE, text)
    text = _sub(r'^        - "\{\{Task\.Param\.Frame\}\}"\n',
                '        - "{{Param.Frames}}"\n        - --task\n'
                '        - "{{Task.Param.Task}}/{{Param.TaskCount}}"\n', text)
    return text


_VCPU = re.compile(r"^(?P<head>\s*min:\s*)\d+(?P<tail>\s*# stmpo: vcpu\b.*)$", re.M)
_MEMORY = re.compile(r"^(?P<head>\s*min:\s*)\d+(?P<tail>\s*# stmpo: memory\b.*)$", re.M)


def host_minimums(threads_per_slot: int, ram_per_process_gb: float, slots: int) -> tuple[int, int]:
    """The host requirements for ``slots`` slots: (vCPUs, memory in MiB). An image task asks
    for two slots (a host with room for one would gain nothing), a movie for one."""
    return (max(1, threads_per_slot * slots),
            max(1, int(round(ram_per_process_gb * 1024)) * slots))


def profile_minimums(kw: dict[str, Any], slots: int, warnings: list[str]) -> tuple[int, int]:
    """:func:`host_minimums` from ``stmpo bundle``'s options and profile (a profile file
    that exists only on the workers falls back to stmpo's defaults, with a warning)."""
    from ..config import resolve
    from ..errors import BadInput
    from ..plan import default_threads_per_slot

    flags = {k: kw.get(k) for k in ("threads_per_slot", "ram_per_process_gb", "mfr")}
    try:
        values = {k: v for k, (v, _src) in resolve(flags, kw.get("profile"), env={}).items()}
    except BadInput as exc:
        warnings.append(f"--profile {kw.get('profile')!r} cannot be used on this machine "
                        f"({exc.message}): the host requirements use stmpo's defaults, and "
                        "every session fails unless the workers have that profile")
        values = {k: v for k, (v, _src) in resolve(flags, None, env={}).items()}
    threads = values["threads_per_slot"] or default_threads_per_slot(bool(values["mfr"]))
    return host_minimums(int(threads), float(values["ram_per_process_gb"]), slots)


def with_host_minimums(text: str, vcpu: int, memory_mib: int) -> str:
    """The template text with its ``# stmpo: vcpu`` / ``# stmpo: memory`` minimums set."""
    text, n1 = _VCPU.subn(lambda m: f"{m['head']}{vcpu}{m['tail']}", text)
    text, n2 = _MEMORY.subn(lambda m: f"{m['head']}{memory_mib}{m['tail']}", text)
    if (n1, n2) != (1, 1):
        raise ValueError("the template has no '# stmpo: vcpu' / '# stmpo: memory' minimum")
    return text


def task_count(n_frames: int, frames_per_task: int) -> int:
    """Tasks of at most ``frames_per_task`` frames for ``n_frames`` listed frames."""
    return max(1, -(-n_frames // max(1, frames_per_task)))


def describe_tasks(frames: list[int], count: int) -> str:
    """``"3 task(s) of about 400 frame(s): 1-400, 401-800, 801-1200"``."""
    from ..plan import format_frames, task_share

    shown = [format_frames(task_share(frames, i, count)) for i in range(1, min(count, 6) + 1)]
    return (f"{count} task(s) of about {-(-len(frames) // count)} frame(s): "
            + ", ".join(shown) + (", ..." if count > 6 else ""))


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "openjd_bundle"
    small = (root / "template.yaml").read_text(encoding="utf-8")
    (root / "big").mkdir(exist_ok=True)
    (root / "big" / "template.yaml").write_text(big_template_text(small), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
