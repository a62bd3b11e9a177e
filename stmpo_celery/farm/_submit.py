"""``stmpo farm submit``: a job bundle expanded into tasks, recorded, queued.

Everything is checked before anything is written: the bundle decodes, every parameter
is one the template defines, the job instantiates (openjd-model: parameter space,
chunking), the project exists, the values the workers would refuse are refused here by
the workers' own checks (:func:`check_parameters`), the farm folder and the shot folder
can be made. Only then are the job folder (project snapshot), the version folder
(``--publish``) and the Redis records created; a failure after that removes them again,
with any folder it had to create for them.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from celery import Celery

from ..config import defaults
from ..errors import BadInput, EnvironmentProblem
from ..host import remove_made
from ._app import enqueue, new_celery_id, task_label
from ._snapshot import footage_list, snapshot_file, write_footage
from ._store import FarmStore, new_job_id
from ._versions import release_version, reserve_version

PROJECT_PARAM = "ProjectFile"
OUTPUT_PARAM = "OutputDir"
FILE_NAME_PARAM = "OutputFileName"
PROFILE_PARAM = "Profile"
BROKER_PARAM = "BrokerUrl"
#: values the job's StmpoSettings environment exports nothing for (the worker decides)
INHERIT = ("", "DEFAULT")
#: the shipped bundles' output check, run by their OutputDirectories environment
PREPARE_OUTPUT = "prepare_output.py"


@dataclass
class Bundle:
    dir: Path
    template: dict[str, Any]
    values: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)


def _load(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def _first(folder: Path, stem: str) -> Path | None:
    for ext in (".yaml", ".yml", ".json"):
        if (folder / (stem + ext)).is_file():
            return folder / (stem + ext)
    return None


def load_bundle(path: str) -> Bundle:
    p = Path(path)
    if p.is_file():
        folder, template = p.parent, p
    elif p.is_dir():
        folder, found = p, _first(p, "template")
        if found is None:
            raise BadInput(f"{path} has no template.yaml or template.json: pass a job bundle "
                           "folder or a job template file")
        template = found
    else:
        raise BadInput(f"job bundle {path!r} does not exist")
    try:
        doc = _load(template)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise BadInput(f"cannot read job template {template}: {exc}") from None
    if not isinstance(doc, dict):
        raise BadInput(f"{template} is not a job template")
    bundle = Bundle(folder.resolve(), doc)
    values_file = _first(folder, "parameter_values")
    if values_file is not None and p.is_dir():
        items = _side_file(values_file, "parameterValues", list)
        if not all(isinstance(i, dict) and "name" in i and "value" in i for i in items):
            raise BadInput(f"{values_file}: every parameterValues entry needs a name and a "
                           "value: fix the file, or remove it")
        bundle.values.update({str(i["name"]): str(i["value"]) for i in items})
    refs_file = _first(folder, "asset_references")
    if refs_file is not None and p.is_dir():
        refs = _side_file(refs_file, "assetReferences", dict)
        inputs = refs.get("inputs") or {}
        if not isinstance(inputs, dict):
            raise BadInput(f"{refs_file}: assetReferences.inputs is not a mapping: fix the "
                           "file, or remove it")
        bundle.inputs = inputs
    return bundle


def _side_file(path: Path, key: str, kind: type) -> Any:
    """``key`` of a bundle's side file (parameter values, asset references), checked to be
    a ``kind``: empty when the file or the key is; BadInput when it cannot be used."""
    try:
        data = _load(path) or {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise BadInput(f"cannot read {path}: {str(exc).splitlines()[0]}: fix the file, or "
                       "remove it") from None
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(value or kind(), kind):
        raise BadInput(f"{path}: {key} is not a {'list' if kind is list else 'mapping'}: "
                       "fix the file, or remove it")
    return value or kind()


def parse_params(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise BadInput(f"-p {pair!r}: write a job parameter as NAME=VALUE")
        out[name.strip()] = value
    return out


def _instantiate(template: Any, values: dict[str, str], bundle_dir: Path) -> Any:
    from openjd.model import (
        DecodeValidationError,
        create_job_with_symbol_tables,
        preprocess_job_parameters,
    )

    try:
        params = preprocess_job_parameters(job_template=template, job_parameter_values=values,
                                           job_template_dir=bundle_dir,
                                           current_working_dir=Path.cwd())
        created = create_job_with_symbol_tables(job_template=template,
                                                job_parameter_values=params)
    except (ValueError, DecodeValidationError) as exc:
        raise BadInput(f"the job does not instantiate: {' '.join(str(exc).split())}") from None
    return params, created.job


def serialize_values(values: Any) -> dict[str, dict[str, str]]:
    return {k: {"type": v.type.value, "value": str(v.value)} for k, v in values.items()}


def expand_tasks(job: Any) -> list[dict[str, Any]]:
    """Every task of every step, in order, as task records (state queued, attempt 1)."""
    from openjd.model import StepParameterSpaceIterator

    tasks: list[dict[str, Any]] = []
    for step in job.steps:
        if step.dependencies:
            raise BadInput(f"step {step.name!r} depends on another step: the farm queues every "
                           "task at once, so submit a template whose steps are independent")
        sets: list[dict[str, Any]] = [{}]
        if step.parameterSpace is not None:
            sets = list(StepParameterSpaceIterator(space=step.parameterSpace))
        for ps in sets:
            params = {k: {"type": v.type.value, "value": str(v.value)} for k, v in ps.items()}
            tasks.append({"index": len(tasks), "step": step.name,
                          "label": task_label(step.name, params), "params": params,
                          "state": "queued", "attempt": 1, "runs": 0, "failures": 0,
                          "worker": None, "host": None, "progress": 0.0, "status": "",
                          "celery_id": new_celery_id()})
    if not tasks:
        raise BadInput("the job has no tasks")
    return tasks


# -- what every worker would refuse, refused at submit ----------------------------------
@functools.cache
def _bundle_check(script: str, name: str) -> Callable[..., Any] | None:
    """Function ``name`` of the shipped bundle script ``script`` (the file the templates
    embed, so the very check their environments run); None when it is not installed."""
    from ..deadline import template_roots

    for root in template_roots():
        path = root / "scripts" / script
        if not path.is_file():
            continue
        spec = importlib.util.spec_from_file_location(f"stmpo_bundle_{path.stem}", path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found = getattr(module, name, None)
        return found if callable(found) else None
    return None


def output_kind(template: dict[str, Any]) -> str | None:
    """The kind (``image`` or ``movie``) the template's own output check runs with: the
    ``--kind`` argument of the job environment that embeds ``prepare_output.py``."""
    for env in template.get("jobEnvironments") or []:
        script = env.get("script") or {}
        if not any(f.get("filename") == PREPARE_OUTPUT for f in script.get("embeddedFiles") or []):
            continue
        args = [str(a) for a in ((script.get("actions") or {}).get("onEnter") or {}).get(
            "args") or []]
        if "--kind" in args[:-1]:
            return args[args.index("--kind") + 1]
    return None


def _check_output(template: dict[str, Any], values: dict[str, str]) -> None:
    """The output the workers render to: the bundle's OutputDirectories check (a file
    name that fits the bundle's kind and stays inside OutputDir), then ``stmpo render``'s
    own checks of ``--output OutputDir/OutputFileName``."""
    from ..host import check_output_names
    from ..plan import parse_frames, parse_output

    if OUTPUT_PARAM not in values or FILE_NAME_PARAM not in values:
        return
    kind = output_kind(template)
    check_kind = _bundle_check(PREPARE_OUTPUT, "check_kind") if kind else None
    if check_kind is not None:
        error = check_kind(kind, values[FILE_NAME_PARAM])
        if error:
            raise BadInput(" ".join(str(error).split()))
    # the task's command line: --output "{{Param.OutputDir}}/{{Param.OutputFileName}}"
    source = f"{OUTPUT_PARAM}/{FILE_NAME_PARAM}"
    pattern = parse_output(f"{values[OUTPUT_PARAM]}/{values[FILE_NAME_PARAM]}", source)
    if "Frames" in values:
        try:
            frames = parse_frames(values["Frames"])
        except BadInput as exc:
            raise BadInput(f"job parameter Frames: {exc.message}") from None
        check_output_names(pattern, frames, source)


def _is_path(profile: str) -> bool:
    """A profile given as a file (on the workers), not by name (as the loader tells)."""
    return Path(profile).suffix == ".toml" or "/" in profile or "\\" in profile


def _check_settings(values: dict[str, str]) -> None:
    """The settings parameters as the job's StmpoSettings environment hands them to
    ``stmpo config show`` on the worker: each exported as its ``STMPO_*`` variable unless
    empty or DEFAULT, resolved over the profile, ranges and combinations checked. Only
    what the workers' own environment adds, and files on the workers (a profile or NUMA
    map given as a path), are left to the workers."""
    from ..broker import parse_broker_url, url_secrets
    from ..config import Command, check_combinations, for_command, origin, resolve

    settings = {s.bundle: s for s in for_command(Command.BUNDLE)
                if s.bundle is not None and s.bundle in values}
    given = {param: values[param].strip() for param in settings}
    given = {param: v for param, v in given.items() if v not in INHERIT}
    broker = given.get(BROKER_PARAM)
    if broker is not None:
        if url_secrets(broker):  # what the session's refusal looks for
            raise BadInput(f"job parameter {BROKER_PARAM} holds a password: job "
                           "parameters are stored with the job, in its folder and the farm "
                           "Redis, and every worker's session refuses it; set "
                           f"{defaults.BROKER_ENV} on the workers and leave "
                           f"{BROKER_PARAM} empty or without a password")
        try:
            parse_broker_url(broker)
        except BadInput as exc:
            raise BadInput(f"job parameter {BROKER_PARAM}: {exc.message}") from None
    named = values.get(PROFILE_PARAM, "").strip()
    # exported as STMPO_PROFILE unless empty or DEFAULT; a file is the workers' to load
    profile = None if named in INHERIT or _is_path(named) else named
    try:
        resolve({}, profile, env={})
    except BadInput as exc:
        raise BadInput(f"job parameter {PROFILE_PARAM}: {exc.message}") from None
    exported = {settings[param].env: v for param, v in given.items()}
    param_of = {s.env: param for param, s in settings.items()}
    resolved = resolve({}, profile, env=exported,
                       env_label=lambda var: f"job parameter {param_of[var]}")
    check_combinations({k: v for k, (v, _src) in resolved.items()},
                       lambda name: origin(name, resolved[name][1]))


def check_parameters(template: dict[str, Any], params: dict[str, Any]) -> None:
    """Refuse the job parameter values every worker would refuse, with the workers' own
    checks, before anything is written (instead of each task failing on every host once
    its retries are spent). Paths that only mean something on a worker (AerenderPath,
    a profile or NUMA map file) stay the workers' to check."""
    values = {name: str(v.value) for name, v in params.items()}
    _check_target(values)
    _check_output(template, values)
    _check_settings(values)


def _check_target(values: dict[str, str]) -> None:
    """Render by render-queue item: ``Comp`` is the item's number (``stmpo render
    --rqindex`` on every worker takes nothing else)."""
    comp = values.get("Comp", "").strip()
    if values.get("RenderBy") == "rqindex" and not (comp.isdecimal() and int(comp) >= 1):
        raise BadInput(f"job parameter Comp is {comp!r} while RenderBy is rqindex: give the "
                       "render-queue item's number (1, 2, ...), or -p RenderBy=comp to "
                       "render a composition by its name")


# -- folders ---------------------------------------------------------------------------
_FIX = {
    "farm folder": (f"pass --farm-dir or set {defaults.FARM_DIR_ENV} to a folder every "
                    "render host sees at the same path"),
    "--publish": "pass a shot folder this user can write",
}


def _refuse_uncreatable(path: Path, what: str, shown: Path) -> None:
    """Refuse ``path`` when it plainly cannot be made (a file or a read-only folder in the
    way), before anything is written; ``shown`` is the folder the user named."""
    from ..host import uncreatable

    blocked = uncreatable(str(path))
    if blocked is not None:
        raise BadInput(f"{what} {shown} cannot be written ({' '.join(blocked)}): "
                       f"{_FIX[what]}")


def _make_dir(path: Path, what: str, shown: Path, created: list[str],
              mode: int = 0o777) -> None:
    """:func:`~stmpo_celery.host.make_dirs` (each folder made recorded in ``created``: a
    failed submit removes them again); a folder that cannot be made is one line."""
    from ..host import make_dirs

    try:
        make_dirs(str(path), created, leaf_mode=mode)
    except OSError as exc:  # what the permission check cannot see (/proc, root)
        raise BadInput(f"{what} {shown} cannot be written ({exc.filename or path}: "
                       f"{exc.strerror or exc}): {_FIX[what]}") from None


def check_submit_options(priority: int, max_retries: int, publish: str | None) -> None:
    """The submit options' own ranges: checked before the farm is even contacted."""
    if not 0 <= priority <= 100:
        raise BadInput(f"--priority {priority}: use 0-100 (higher runs first)")
    if not 0 <= max_retries <= 100:
        raise BadInput(f"--max-retries {max_retries}: use 0-100")
    if publish is not None and not publish.strip():  # "" would be the current folder
        raise BadInput("--publish is empty: name the shot folder (--publish /shots/sh010) "
                       "or leave --publish out")


def submit(store: FarmStore, app: Celery, bundle_path: str, pairs: list[str], *,
           priority: int, publish: str | None, jobs_root: Path,
           max_retries: int = defaults.FARM_MAX_RETRIES) -> dict[str, Any]:
    from openjd.model import DecodeValidationError, decode_job_template

    check_submit_options(priority, max_retries, publish)
    bundle = load_bundle(bundle_path)
    try:
        template = decode_job_template(template=bundle.template,
                                       supported_extensions=list(defaults.OPENJD_EXTENSIONS))
    except (DecodeValidationError, ValueError) as exc:
        raise BadInput(f"the job template is invalid: {' '.join(str(exc).split())}") from None
    defined = {p.name for p in template.parameterDefinitions or []}
    values = {**bundle.values, **parse_params(pairs)}
    unknown = sorted(set(values) - defined)
    if unknown:
        raise BadInput(f"job parameter(s) {', '.join(unknown)} not defined by the template: "
                       f"defined are {', '.join(sorted(defined))}")
    if publish is not None and OUTPUT_PARAM not in defined:
        raise BadInput(f"--publish needs a template with an {OUTPUT_PARAM} parameter")
    if publish is not None:
        values[OUTPUT_PARAM] = str(Path(publish).resolve() / "v000")  # placeholder to check
    params, job = _instantiate(template, values, bundle.dir)
    project = params.get(PROJECT_PARAM)
    project_path = Path(str(project.value)) if project is not None else None
    if project_path is not None and not project_path.is_file():
        raise BadInput(f"{PROJECT_PARAM} {project_path} is not a file: pass the project to "
                       "render (-p ProjectFile=/path/shot.aep)")
    check_parameters(bundle.template, params)
    expand_tasks(job)  # refuses dependent steps before anything is written
    shot = Path(publish).resolve() if publish is not None else None
    jid = new_job_id()
    job_dir = jobs_root / "jobs" / jid
    _refuse_uncreatable(job_dir, "farm folder", jobs_root)
    if shot is not None:
        _refuse_uncreatable(shot, "--publish", shot)

    version: tuple[str, Path] | None = None
    created: list[str] = []
    try:
        _make_dir(job_dir, "farm folder", jobs_root, created, mode=0o755)
        if shot is not None:
            _make_dir(shot, "--publish", shot, created)
        snap: dict[str, Any] = {}
        if project_path is not None:
            snap = snapshot_file(project_path, job_dir / "scene")
            values[PROJECT_PARAM] = snap["snapshot"]  # every task renders the copy
            snap["footage"] = str(write_footage(job_dir / "scene",
                                                footage_list(bundle.inputs, bundle.dir)))
        if shot is not None:
            version = reserve_version(shot, jid)
            values[OUTPUT_PARAM] = str(version[1])
        params, job = _instantiate(template, values, bundle.dir)
        tasks = expand_tasks(job)
        record: dict[str, Any] = {
            "id": jid, "name": str(job.name), "bundle": str(bundle.dir),
            "template": bundle.template, "parameters": serialize_values(params),
            "job_dir": str(job_dir), "snapshot": snap, "priority": priority,
            "max_retries": max_retries, "submitted": time.time(), "tasks": len(tasks),
            "comp": str(params["Comp"].value) if "Comp" in params else None,
            "frames": str(params["Frames"].value) if "Frames" in params else None,
            "output": {k: str(params[k].value) for k in (OUTPUT_PARAM, FILE_NAME_PARAM)
                       if k in params},
            "publish": ({"shot_dir": str(shot), "version": version[0], "dir": str(version[1])}
                        if shot is not None and version is not None else None),
        }
        (job_dir / "job.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        store.add_job(record, tasks)
    except BaseException as exc:
        if str(job_dir) in created:
            shutil.rmtree(job_dir, ignore_errors=True)
        if version is not None:
            release_version(version[1])
        remove_made([d for d in created if d != str(job_dir)])
        if isinstance(exc, OSError):  # a disk or share that fails while the job is written
            raise EnvironmentProblem(f"the job could not be written ({exc.strerror or exc}"
                                     f"{f': {exc.filename}' if exc.filename else ''}): "
                                     "check the farm folder and the shot folder") from None
        raise
    for t in tasks:
        enqueue(app, record, t)
    return record
