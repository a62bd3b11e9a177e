"""``stmpo farm submit``: a job bundle expanded into tasks, recorded, queued.

Everything is checked before anything is written: the bundle decodes, every parameter
is one the template defines, the job instantiates (openjd-model: parameter space,
chunking), the project exists. Only then are the job folder (project snapshot), the
version folder (``--publish``) and the Redis records created; a failure after that
removes them again.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from celery import Celery

from ..config import defaults
from ..errors import BadInput
from ._app import enqueue, new_celery_id, task_label
from ._snapshot import footage_list, snapshot_file, write_footage
from ._store import FarmStore
from ._versions import release_version, reserve_version

PROJECT_PARAM = "ProjectFile"
OUTPUT_PARAM = "OutputDir"


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
        data = _load(values_file) or {}
        for item in data.get("parameterValues") or []:
            bundle.values[str(item["name"])] = str(item["value"])
    refs_file = _first(folder, "asset_references")
    if refs_file is not None and p.is_dir():
        data = _load(refs_file) or {}
        bundle.inputs = (data.get("assetReferences") or {}).get("inputs") or {}
    return bundle


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


def submit(store: FarmStore, app: Celery, bundle_path: str, pairs: list[str], *,
           priority: int, publish: str | None, jobs_root: Path,
           max_retries: int = defaults.FARM_MAX_RETRIES) -> dict[str, Any]:
    from openjd.model import DecodeValidationError, decode_job_template

    if not 0 <= priority <= 100:
        raise BadInput(f"--priority {priority}: use 0-100 (higher runs first)")
    if max_retries < 0:
        raise BadInput(f"--max-retries {max_retries}: use 0 or more")
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
    expand_tasks(job)  # refuses dependent steps before anything is written
    shot = Path(publish).resolve() if publish is not None else None
    if shot is not None:
        try:
            shot.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"--publish {publish}: cannot create it ({exc.strerror})") from None
        if not os.access(shot, os.W_OK):
            raise BadInput(f"--publish {publish}: not writable by this user")

    jid = secrets.token_hex(4)
    job_dir = jobs_root / "jobs" / jid
    version: tuple[str, Path] | None = None
    try:
        job_dir.mkdir(parents=True, mode=0o755)
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
            "output": {k: str(params[k].value) for k in (OUTPUT_PARAM, "OutputFileName")
                       if k in params},
            "publish": ({"shot_dir": str(shot), "version": version[0], "dir": str(version[1])}
                        if shot is not None and version is not None else None),
        }
        (job_dir / "job.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        store.add_job(record, tasks)
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        if version is not None:
            release_version(version[1])
        raise
    for t in tasks:
        enqueue(app, record, t)
    return record
