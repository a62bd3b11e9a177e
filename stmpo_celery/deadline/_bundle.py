"""``stmpo bundle``: write a ready Deadline Cloud job bundle for one render.

The output pattern (``--output``, else the queue item's output module) picks the
bundle, by the rule ``stmpo render`` uses: a ``[#####]`` token is an image sequence
(``openjd_bundle/template.yaml``, chunked tasks of at most 150 frames, or
``big/template.yaml`` above that), none is a movie (``movie/template.yaml``: one task,
one process). OpenJD has no conditional steps, so each kind has its own template.

The bundle directory gets the template (its host requirements set from the profile)
and, as JSON (Deadline reads it like YAML; no library needed), ``parameter_values.json``
and ``asset_references.json``. Every value names a parameter the template defines (a
stale name makes submission fail). Settings not given are left out, so the worker's
``STMPO_*`` environment, the profile or stmpo's default decides, as on the command line.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from ..aerender import check_target
from ..config import (
    MFR_CPU_IDLE,
    Command,
    check_combinations,
    defaults,
    for_command,
    idle_flag,
    parse_chunk_size,
    refuse_for_movie,
)
from ..errors import BadInput, StmpoError
from ..host import check_output_names, foreign_path, uncreatable
from ..plan import format_frames, parse_frames, parse_output, runs, windows_name_problem
from ._bigtask import CHUNK_LIMIT, profile_minimums, task_count, with_host_minimums
from ._fontfiles import find_fonts, refuse_broken_fonts
from ._project import check_for_bundle, output_from_project

IMAGE = "image"
MOVIE = "movie"
BIG = "big"  #: image sequence in tasks above CHUNK[INT]'s 150 frames (big/template.yaml)
TEMPLATE_NAME = "template.yaml"
#: the longest job parameter value Deadline Cloud's CreateJob takes (ParameterString and
#: PathString: 1024 characters)
DEADLINE_VALUE_MAX = 1024
#: the most roots (drives, network shares) a job's attachments may span (CreateJob's
#: ManifestPropertiesList)
DEADLINE_ROOTS_MAX = 10
_BUNDLE_FILES = ("template.yaml", "template.json", "parameter_values.yaml",
                 "parameter_values.json", "asset_references.yaml", "asset_references.json")


# -- templates -----------------------------------------------------------------------------
def template_roots() -> list[Path]:
    """Where the shipped bundles live: the source tree, then an installed share dir."""
    return [Path(__file__).resolve().parents[2] / "openjd_bundle",
            Path(sys.prefix) / "share" / "stmpo-celery" / "openjd_bundle"]


def find_template(kind: str, roots: Sequence[Path] | None = None) -> Path:
    """The template of ``kind`` (``image`` or ``movie``)."""
    rel = Path(TEMPLATE_NAME) if kind == IMAGE else Path(kind) / TEMPLATE_NAME
    searched = list(roots) if roots is not None else template_roots()
    for root in searched:
        if (root / rel).is_file():
            return root / rel
    raise StmpoError("the job templates are not installed: looked for "
                     + ", ".join(str(r / rel) for r in searched))


def load_template(kind: str) -> tuple[str, Path]:
    """The template text of ``kind`` and its path (tests replace this function)."""
    path = find_template(kind)
    return path.read_text(encoding="utf-8"), path


@dataclass(frozen=True)
class ParamInfo:
    type: str
    default: str | None = None  #: as text; None when the template gives no default


def template_parameters(text: str) -> dict[str, ParamInfo]:
    """The parameters a job template defines, decoded with PyYAML when importable.

    stmpo does not depend on PyYAML, so without it a small scanner reads the top-level
    ``parameterDefinitions`` list (block style, as the shipped templates are written).
    """
    try:
        import yaml
    except ImportError:  # pragma: no cover - exercised by forcing the scanner in tests
        return scan_parameters(text)
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise StmpoError("the job template is not a YAML mapping")
    return {str(p["name"]): ParamInfo(str(p["type"]),
                                      None if p.get("default") is None else str(p["default"]))
            for p in doc.get("parameterDefinitions") or []}


_ITEM = re.compile(r"^(?P<indent>\s*)- name:\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$")
_FIELD = re.compile(r"^\s+(?P<key>type|default):\s*(?P<value>.*?)\s*$")


def _scalar(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def scan_parameters(text: str) -> dict[str, ParamInfo]:
    """The block-style ``parameterDefinitions`` list without a YAML library: each item's
    name, type and plain default (enough to check names and read defaults)."""
    fields: dict[str, dict[str, str]] = {}
    inside = False
    item_indent: str | None = None
    current: str | None = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace() and not line.startswith("-"):
            inside = line.rstrip() == "parameterDefinitions:"
            current = None
            continue
        if not inside:
            continue
        m = _ITEM.match(line)
        if m and (item_indent is None or m.group("indent") == item_indent):
            item_indent = m.group("indent")
            current = m.group("name")
            fields[current] = {}
            continue
        f = _FIELD.match(line)
        if (f and current is not None and item_indent is not None
                and len(line) - len(line.lstrip()) == len(item_indent) + 2):
            fields[current].setdefault(f.group("key"), _scalar(f.group("value")))
    return {name: ParamInfo(f.get("type", ""), f.get("default")) for name, f in fields.items()}


# -- what the bundle holds -----------------------------------------------------------------
@dataclass
class Bundle:
    kind: str
    values: dict[str, str | int] = field(default_factory=dict)
    inputs_files: list[str] = field(default_factory=list)
    inputs_dirs: list[str] = field(default_factory=list)
    outputs_dirs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  #: why the bundle is what it is
    host: tuple[int, int] | None = None  #: host requirements: (vCPUs, memory MiB)

    def parameter_values(self) -> dict[str, Any]:
        return {"parameterValues": [{"name": k, "value": v} for k, v in self.values.items()]}

    def asset_references(self) -> dict[str, Any]:
        return {"assetReferences": {
            "inputs": {"filenames": self.inputs_files, "directories": self.inputs_dirs},
            "outputs": {"directories": self.outputs_dirs},
            "referencedPaths": [],
        }}


def task_chunks(frames: Sequence[int], frames_per_task: int) -> list[list[int]]:
    """The tasks OpenJD's NONCONTIGUOUS chunking makes: the listed frames, in order, cut
    into ``ceil(n / frames_per_task)`` near-equal pieces (1-100 at 30: 25 frames each;
    ``1-240:10`` at 10: three tasks of 8 frames, ``1-71:10`` ...)."""
    frames = sorted(set(frames))
    n = len(frames)
    count = -(-n // max(1, frames_per_task))
    if not n:
        return []
    base, extra = divmod(n, count)
    sizes = [base] * count
    for i in range(extra):
        sizes[(i * count) // extra] += 1
    out, start = [], 0
    for size in sizes:
        out.append(frames[start : start + size])
        start += size
    return out


#: option -> parameter: settings that cannot matter for one movie process
_IMAGE_ONLY = {"frames_per_task": "FramesPerTask", "target_runtime": "TargetRuntimeSeconds",
               **{s.name: s.bundle for s in for_command(Command.BUNDLE) if s.image_only}}
_PLAIN = {"profile": "Profile", "aerender": "AerenderPath",
          "om_template": "OMTemplate", "rs_template": "RSTemplate"}


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def _number(value: float | int) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _existing_file(label: str, value: str) -> str:
    path = os.path.abspath(value)
    if not os.path.isfile(path):
        raise BadInput(f"{label} is not a file on this machine: {path}")
    return path


def plan_bundle(kw: dict[str, Any]) -> Bundle:
    """Validate the options and decide the bundle's kind, values and asset references."""
    check_target(kw.get("comp"), kw.get("rqindex"))
    for opt in ("output", *_PLAIN):  # given but blank: every worker session would fail
        if kw.get(opt) is not None and not str(kw[opt]).strip():
            raise BadInput(f"{_flag(opt)} is empty: give a value, or leave {_flag(opt)} out")
    frames = parse_frames(kw["frames"])
    if kw.get("output") is None:  # the render-queue item's own output module decides
        kw["output"] = output_from_project(_existing_file("--project", kw["project"]), kw)
    pattern = parse_output(kw["output"])
    check_output_names(pattern, frames)
    kind = IMAGE if pattern.is_sequence else MOVIE
    b = Bundle(kind)
    if kind == MOVIE:
        if len(runs(frames)) > 1:
            raise BadInput(f"--frames {kw['frames']!r} has gaps, but a movie is one contiguous "
                           "range: pass e.g. 1-240, or render an image sequence")
        refuse_for_movie(kw["output"], [_flag(k) for k in _IMAGE_ONLY if kw.get(k) is not None])
    for flag, value in (("--project", kw["project"]), ("--output", pattern.raw)):
        if why := foreign_path(str(value)):  # abspath would put it under this folder
            raise BadInput(f"{flag} {value!r} is {why}, which this machine cannot read or "
                           "write: give the path as this machine sees the file (Deadline's "
                           "path mapping turns it into the worker's), or run stmpo bundle "
                           "on a Windows machine")
    project = _existing_file("--project", kw["project"])
    output = os.path.abspath(pattern.raw)
    out_dir, file_name = os.path.split(output)
    b.values.update(ProjectFile=project, OutputDir=out_dir, OutputFileName=file_name)
    if kw.get("comp") is not None:
        b.values.update(RenderBy="comp", Comp=str(kw["comp"]))
    else:
        b.values.update(RenderBy="rqindex", Comp=str(kw["rqindex"]))
    b.values["Frames"] = format_frames(frames)
    b.inputs_files.append(project)
    b.outputs_dirs.append(out_dir)
    found = check_for_bundle(project, kw, split=kind == IMAGE, movie=kind == MOVIE,
                             frames=frames)
    b.inputs_files += [f for f in found.files if f not in b.inputs_files]
    b.inputs_dirs += found.dirs
    b.warnings += found.warnings
    if kind == IMAGE:
        _task_size(b, kw, frames)
    for opt, param in _PLAIN.items():
        if kw.get(opt) is not None:
            b.values[param] = str(kw[opt])
    for setting in for_command(Command.BUNDLE):
        value = kw.get(setting.name)
        if value is None:
            continue
        assert setting.bundle is not None
        setting.check(value)  # the same ranges and words as stmpo render
        if setting.kind is bool:
            b.values[setting.bundle] = "ON" if value else "OFF"
        elif setting.kind in (int, float):
            b.values[setting.bundle] = _number(value)
        elif setting.name == "chunk_size":
            size = parse_chunk_size(value)
            b.values[setting.bundle] = "auto" if size is None else str(size)
        elif setting.name == "numa_map":
            b.values[setting.bundle] = _existing_file(setting.flag, str(value))
            b.inputs_files.append(str(b.values[setting.bundle]))
        else:
            b.values[setting.bundle] = str(value)
    check_combinations({s.name: kw[s.name] for s in for_command(Command.BUNDLE)
                        if kw.get(s.name) is not None}, _flag)
    if kw.get("mfr") is False and kw.get("mfr_max_cpu") is not None:  # as render refuses it
        raise idle_flag(_flag("mfr_max_cpu"), MFR_CPU_IDLE)
    if kw.get("fonts_dir") is not None:
        if not str(kw["fonts_dir"]).strip():  # "" would mean the current folder
            raise BadInput("--fonts-dir is empty: name the folder of the comp's fonts or "
                           "leave --fonts-dir out")
        fonts = os.path.abspath(kw["fonts_dir"])
        if not os.path.isdir(fonts):
            raise BadInput(f"--fonts-dir is not a folder on this machine: {fonts}")
        attached = find_fonts(Path(fonts))
        if not attached:  # Deadline would not even attach an empty folder
            raise BadInput(f"--fonts-dir {fonts} holds no font files: put the comp's fonts "
                           "there or leave --fonts-dir out")
        refuse_broken_fonts(attached, "replace it with the real font file or remove it from "
                            "--fonts-dir")
        for font_file in attached:  # installed under its own name on a Windows worker
            if problem := windows_name_problem(font_file.name):
                raise BadInput(f"--fonts-dir font {font_file.name!r} {problem}, and a Windows "
                               "worker installs it under that name: rename it")
        b.values["FontsDir"] = fonts
        b.inputs_dirs.append(fonts)
    b.host = profile_minimums(kw, 1 if b.kind == MOVIE else 2, b.warnings)
    check_roots(b, project, [*found.files, *found.dirs])
    if kw.get("broker"):
        from ..broker import mask_url

        if mask_url(str(kw["broker"])) != str(kw["broker"]):
            raise BadInput("--broker holds a password: job parameters are visible to everyone "
                           "on the queue and the job's StmpoSettings refuses it; set "
                           "STMPO_BROKER_URL on the workers and pass --broker without one")
    return b


def check_roots(b: Bundle, project: str, footage: Sequence[str],
                flavor: type[PurePath] = PurePath) -> None:
    """Job attachments keep one copy per root (a drive or a network share: the anchor of
    a path), and a job takes at most ``DEADLINE_ROOTS_MAX`` of them; a worker opens the
    project from its root's copy, where After Effects finds footage only by its path
    relative to the project: footage on another root than the project is not found there
    (a warning). ``flavor``: how paths are read (this OS's; tests read Windows ones)."""
    paths = [*b.inputs_files, *b.inputs_dirs, *b.outputs_dirs]
    roots = sorted({flavor(p).anchor for p in paths})
    if len(roots) > DEADLINE_ROOTS_MAX:
        raise BadInput(f"the job's files are on {len(roots)} drives or network shares "
                       f"({', '.join(roots[:4])}...), more than the {DEADLINE_ROOTS_MAX} a "
                       "Deadline Cloud job takes: collect the footage next to the project "
                       "(File > Dependencies > Collect Files)")
    home = flavor(project).anchor
    away = [p for p in footage if flavor(p).anchor != home]
    if away:
        b.warnings.append(f"{len(away)} footage file(s) or folder(s) are on another drive or "
                          f"share than the project (first: {away[0]}): a worker finds "
                          "footage by its path relative to the project, which cannot reach "
                          "them; collect them next to the project (File > Dependencies > "
                          "Collect Files)")


def _task_size(b: Bundle, kw: dict[str, Any], frames: list[int]) -> None:
    """Chunked tasks up to CHUNK[INT]'s limit, the big-task template above it."""
    fpt = kw.get("frames_per_task")
    target = kw.get("target_runtime")
    if fpt is not None and fpt < 1:
        raise BadInput(f"--frames-per-task {fpt} is below 1: pass e.g. 100")
    if target is not None and target < 0:
        raise BadInput(f"--target-runtime {target} is negative: pass seconds, or 0 for none")
    if fpt is None or fpt <= CHUNK_LIMIT:
        if fpt is not None:
            b.values["FramesPerTask"] = int(fpt)
        if target is not None:
            b.values["TargetRuntimeSeconds"] = int(target)
        return
    if target:
        raise BadInput(f"--target-runtime needs chunked tasks of at most {CHUNK_LIMIT} frames, "
                       f"but --frames-per-task is {fpt}: drop one of them")
    b.kind = BIG
    count = task_count(len(frames), fpt)
    b.values["TaskCount"] = count
    b.notes.append(f"--frames-per-task {fpt} is above the {CHUNK_LIMIT} frames a chunked "
                   "(CHUNK[INT]) task may carry: writing the big-task template, "
                   f"{count} task(s) of near-equal size, each one stmpo render of its frames")


def check_against_template(b: Bundle, text: str, where: str) -> dict[str, ParamInfo]:
    """Every value names a parameter of the template, with a value of its type."""
    params = template_parameters(text)
    unknown = sorted(k for k in b.values if k not in params)
    if unknown:
        raise StmpoError(f"the template {where} does not define {', '.join(unknown)}: "
                         "it does not match this stmpo; reinstall stmpo-celery")
    for name, value in b.values.items():
        if (params[name].type == "INT") != isinstance(value, int):
            raise StmpoError(f"parameter {name} of {where} is {params[name].type}, "
                             f"but stmpo bundle has {value!r} for it")
    return params


def instantiate(b: Bundle, text: str) -> None:
    """Make the job as Deadline will (OpenJD's own checks: each value within its
    parameter's limits), so a value it would refuse is refused here, before the bundle is
    written, not at ``deadline bundle submit``."""
    import yaml
    from openjd.model import (
        DecodeValidationError,
        create_job,
        decode_job_template,
        preprocess_job_parameters,
    )

    for name, value in b.values.items():  # CreateJob: ParameterString, PathString
        if len(str(value)) > DEADLINE_VALUE_MAX:
            fix = ("use a frame spec with steps (1-240:2) or submit the range in parts"
                   if name == "Frames" else "shorten it")
            raise BadInput(f"job parameter {name} is {len(str(value))} characters, more than "
                           f"the {DEADLINE_VALUE_MAX} Deadline Cloud takes: {fix}")
    try:
        template = decode_job_template(template=yaml.safe_load(text),
                                       supported_extensions=list(defaults.OPENJD_EXTENSIONS))
        values = {k: str(v) for k, v in b.values.items()}
        params = preprocess_job_parameters(job_template=template, job_parameter_values=values,
                                           job_template_dir=Path.cwd(),
                                           current_working_dir=Path.cwd())
        create_job(job_template=template, job_parameter_values=params)
    except (ValueError, DecodeValidationError) as exc:
        raise BadInput(f"the job would be refused by Deadline: {' '.join(str(exc).split())}") \
            from None


def write_bundle(b: Bundle, dest: Path, force: bool) -> tuple[Path, dict[str, ParamInfo]]:
    """Write template, values and asset references into ``dest``; returns the template's
    path and parameters."""
    text, template = load_template(b.kind)
    params = check_against_template(b, text, str(template))
    if dest.exists() and not dest.is_dir():
        raise BadInput(f"--dest {dest} exists and is not a folder")
    blocked = uncreatable(str(dest))
    if blocked is not None:
        raise BadInput(f"--dest {dest} cannot be written ({' '.join(blocked)}): choose "
                       "another folder")
    if dest.is_dir() and any(dest.iterdir()):
        if not force:
            raise BadInput(f"--dest {dest} is not empty: pass --force to replace its bundle")
        others = [p.name for p in dest.iterdir() if p.name not in _BUNDLE_FILES]
        if others:
            raise BadInput(f"--dest {dest} holds files that are not a job bundle's "
                           f"({', '.join(sorted(others)[:3])}): choose another folder")
        for name in _BUNDLE_FILES:
            (dest / name).unlink(missing_ok=True)
    if b.host is not None:
        text = with_host_minimums(text, *b.host)
    instantiate(b, text)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / TEMPLATE_NAME).write_text(text, encoding="utf-8")
        for name, data in (("parameter_values.json", b.parameter_values()),
                           ("asset_references.json", b.asset_references())):
            (dest / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    except OSError as exc:  # as a render treats its output folder: a path to fix
        raise BadInput(f"--dest {dest} cannot be written ({exc.strerror or exc}): choose "
                       "another folder") from None
    return template, params
