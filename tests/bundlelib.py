"""Helpers shared by the job-bundle tests: the templates, decoding, task ranges."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from openjd.model import (
    StepParameterSpaceIterator,
    create_job,
    decode_job_template,
    preprocess_job_parameters,
)

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "openjd_bundle"
IMAGE_T = BUNDLE / "template.yaml"
MOVIE_T = BUNDLE / "movie" / "template.yaml"
BIG_T = BUNDLE / "big" / "template.yaml"
TEMPLATES = [IMAGE_T, MOVIE_T, BIG_T]
TEMPLATE_IDS = ["image", "movie", "big"]
#: Read by the queue's conda environment (service-managed fleets), not by the job itself.
QUEUE_ENV_PARAMS = {"CondaPackages", "CondaChannels"}
BIN = Path(sys.executable).parent
EXTENSIONS = ["TASK_CHUNKING"]  # the only extension the templates may use (Deadline supports it)

#: The parameters of the image bundle that the movie bundle leaves out: they cannot
#: change one aerender process rendering one task (see stmpo_celery.deadline._bundle._IMAGE_ONLY).
IMAGE_ONLY = {"FramesPerTask", "TargetRuntimeSeconds", "Concurrency", "MaxConcurrency",
              "RamPerProcessGB", "ThreadsPerSlot", "Affinity", "NumaMap", "Schedule",
              "ChunkSize", "SpawnDelay", "FailFast", "SkipExisting"}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def job_for(path: Path, values: dict[str, Any], tmp: Path) -> Any:
    template = decode_job_template(template=load(path), supported_extensions=EXTENSIONS)
    params = preprocess_job_parameters(job_template=template, job_parameter_values=values,
                                       job_template_dir=path.parent, current_working_dir=tmp)
    return create_job(job_template=template, job_parameter_values=params)


def required(tmp: Path) -> dict[str, str]:
    project = tmp / "shot.aep"
    project.write_text("aep")
    return {"ProjectFile": str(project), "Comp": "Main Comp", "OutputDir": str(tmp / "out")}


def chunk_values(job: Any) -> list[str]:
    space = job.steps[0].parameterSpace
    return [str(task["Frame"].value) for task in StepParameterSpaceIterator(space=space)]
