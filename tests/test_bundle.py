"""The Deadline job bundle templates: valid, chunked, every parameter used."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from bundlelib import (
    BIG_T,
    BIN,
    BUNDLE,
    EXTENSIONS,
    IMAGE_ONLY,
    IMAGE_T,
    MOVIE_T,
    QUEUE_ENV_PARAMS,
    TEMPLATE_IDS,
    TEMPLATES,
    chunk_values,
    job_for,
    load,
    required,
)
from openjd.model import (
    StepParameterSpaceIterator,
    decode_job_template,
)

from stmpo_celery.config._settings import SETTINGS
from stmpo_celery.deadline import _bundle as bundle_mod
from stmpo_celery.deadline._bundle import (
    scan_parameters,
    task_chunks,
    template_parameters,
)
from stmpo_celery.plan._frames import parse_frames


# -- the templates are valid ------------------------------------------------------------------
@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_openjd_check_passes(path: Path) -> None:
    res = subprocess.run([str(BIN / "openjd"), "check", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "passes validation" in res.stdout


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_templates_use_only_task_chunking(path: Path) -> None:
    # Deadline Cloud must support every extension a template declares.
    assert set(load(path).get("extensions") or []) <= set(EXTENSIONS)
    decode_job_template(template=load(path), supported_extensions=EXTENSIONS)


@pytest.mark.parametrize(("frames", "per_task", "expected"), [
    ("1-100", 30, ["1-25", "26-50", "51-75", "76-100"]),
    ("1-100", 100, ["1-100"]),
    ("1-240", 100, ["1-80", "81-160", "161-240"]),
    ("1-10,50-60", 5, ["1-5", "6-9", "10,50,51,52", "53-56", "57-60"]),
    ("1-240:10", 10, ["1-71:10", "81-151:10", "161-231:10"]),  # a quick check render
    ("7", 10, ["7"]),
    ("-5--1", 2, ["-5,-4", "-3,-2", "-1"]),
])
def test_image_tasks_are_near_equal_chunks(tmp_path: Path, frames: str, per_task: int,
                                           expected: list[str]) -> None:
    job = job_for(IMAGE_T, {**required(tmp_path), "Frames": frames,
                            "FramesPerTask": str(per_task)}, tmp_path)
    got = chunk_values(job)
    assert got == expected
    # every frame exactly once, and `stmpo bundle` predicts the same tasks
    assert sorted(f for c in got for f in parse_frames(c)) == parse_frames(frames)
    assert task_chunks(parse_frames(frames), per_task) == [parse_frames(c) for c in got]


def test_frames_per_task_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FramesPerTask must be at least 1"):
        job_for(IMAGE_T, {**required(tmp_path), "FramesPerTask": "0"}, tmp_path)


def test_movie_is_one_task_of_one_process(tmp_path: Path) -> None:
    job = job_for(MOVIE_T, {**required(tmp_path), "Frames": "1-240"}, tmp_path)
    assert len(job.steps) == 1 and job.steps[0].parameterSpace is None  # one task
    args = run_args(load(MOVIE_T)["steps"][0])
    assert args[args.index("--concurrency") + 1] == "1"
    assert args[args.index("--frames") + 1] == "{{Param.Frames}}"


def test_image_step_renders_its_chunk(tmp_path: Path) -> None:
    step = load(IMAGE_T)["steps"][0]
    (param,) = step["parameterSpace"]["taskParameterDefinitions"]
    assert param["type"] == "CHUNK[INT]" and param["range"] == "{{Param.Frames}}"
    assert param["chunks"] == {"defaultTaskCount": "{{Param.FramesPerTask}}",
                               "targetRuntimeSeconds": "{{Param.TargetRuntimeSeconds}}",
                               "rangeConstraint": "NONCONTIGUOUS"}
    args = run_args(step)
    assert args[args.index("--frames") + 1] == "{{Task.Param.Frame}}"
    assert "--concurrency" not in args  # slots per task come from the settings


def run_args(step: dict[str, Any]) -> list[str]:
    action = step["script"]["actions"]["onRun"]
    assert action["command"] == "stmpo"
    args: list[str] = action["args"]
    assert args[0] == "render"
    return args


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_render_action_reports_progress_and_cancels_cleanly(path: Path) -> None:
    (step,) = load(path)["steps"]
    args = run_args(step)
    assert args[args.index("--progress") + 1] == "openjd"
    assert args[args.index("--output") + 1] == "{{Param.OutputDir}}/{{Param.OutputFileName}}"
    assert args[args.index("--aerender") + 1] == "{{Param.AerenderPath}}"
    flag = next(a for a in args if a.startswith("--{{"))
    assert flag == "--{{Param.RenderBy}}" and args[args.index(flag) + 1] == "{{Param.Comp}}"
    cancel = step["script"]["actions"]["onRun"]["cancelation"]
    # stmpo stops within ~2 s of SIGTERM; the runtime's SIGKILL must come well after that
    assert cancel["mode"] == "NOTIFY_THEN_TERMINATE" and cancel["notifyPeriodInSeconds"] >= 20


# -- every parameter does something -----------------------------------------------------------
def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_every_parameter_reaches_a_command(path: Path) -> None:
    doc = load(path)
    names = [p["name"] for p in doc["parameterDefinitions"]]
    used = " ".join(_strings({"steps": doc["steps"], "env": doc.get("jobEnvironments")}))
    dead = [n for n in names if n not in QUEUE_ENV_PARAMS
            and not re.search(r"\{\{\s*(Raw)?Param\." + n + r"\s*\}\}", used)]
    assert not dead, f"parameters no step or environment uses: {dead}"
    # and nothing refers to a parameter the template does not define
    refs = set(re.findall(r"\{\{\s*(?:Raw)?Param\.([A-Za-z0-9_]+)\s*\}\}", used))
    assert refs <= set(names)


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_every_parameter_has_a_ui_group_and_description(path: Path) -> None:
    for p in load(path)["parameterDefinitions"]:
        ui = p.get("userInterface") or {}
        assert ui.get("groupLabel") and ui.get("label"), p["name"]
        assert p.get("description"), p["name"]


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_settings_exports_name_real_stmpo_settings(path: Path) -> None:
    doc = load(path)
    env = next(e for e in doc["jobEnvironments"] if e["name"] == "StmpoSettings")
    pairs = [a for a in env["script"]["actions"]["onEnter"]["args"] if "=" in a]
    known = {s.env for s in SETTINGS.values()} | {"STMPO_PROFILE"}
    for pair in pairs:
        var, _, value = pair.partition("=")
        assert var in known, var
        assert re.fullmatch(r"\{\{Param\.[A-Za-z]+\}\}", value), pair
    defs = {p["name"]: p for p in doc["parameterDefinitions"]}
    for pair in pairs:  # each exported parameter can say "inherit"
        p = defs[pair.partition("=")[2][8:-2]]
        assert p.get("default") in ("", "DEFAULT"), p["name"]


def test_movie_parameters_are_the_image_ones_minus_the_slot_knobs() -> None:
    image = {p["name"]: p for p in load(IMAGE_T)["parameterDefinitions"]}
    movie = {p["name"]: p for p in load(MOVIE_T)["parameterDefinitions"]}
    assert set(image) - set(movie) == IMAGE_ONLY
    assert set(movie) <= set(image)
    assert set(bundle_mod._IMAGE_ONLY.values()) == IMAGE_ONLY
    for name, p in movie.items():
        for key in ("type", "objectType", "dataFlow", "allowedValues", "minLength"):
            assert p.get(key) == image[name].get(key), (name, key)
        if name != "OutputFileName":
            assert p.get("default") == image[name].get("default"), name
    # the environments are the same, but for the output kind each checks
    envs_i, envs_m = load(IMAGE_T)["jobEnvironments"], load(MOVIE_T)["jobEnvironments"]
    assert [e["name"] for e in envs_i] == [e["name"] for e in envs_m]
    kind = {t: next(e for e in load(t)["jobEnvironments"] if e["name"] == "OutputDirectories")
            ["script"]["actions"]["onEnter"]["args"] for t in TEMPLATES}
    assert kind[IMAGE_T][kind[IMAGE_T].index("--kind") + 1] == "image"
    assert kind[MOVIE_T][kind[MOVIE_T].index("--kind") + 1] == "movie"


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_environments_create_outputs_check_host_and_handle_fonts(path: Path) -> None:
    envs = {e["name"]: e["script"] for e in load(path)["jobEnvironments"]}
    assert list(envs) == ["OutputDirectories", "StmpoSettings", "HostCheck", "Fonts"]
    out = envs["OutputDirectories"]["actions"]["onEnter"]["args"]
    # each path is its own argument: never a joined list
    assert out[out.index("--output-dir") + 1] == "{{Param.OutputDir}}"
    assert out[out.index("--file-name") + 1] == "{{Param.OutputFileName}}"
    doctor = envs["HostCheck"]["actions"]["onEnter"]
    assert doctor["command"] == "stmpo" and doctor["args"][0] == "doctor"
    fonts = envs["Fonts"]["actions"]
    assert fonts["onEnter"]["args"][:2] == ["fonts", "install"]
    assert fonts["onExit"]["args"] == ["fonts", "remove"]


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_embedded_scripts_are_the_files_in_scripts(path: Path) -> None:
    files = [f for e in load(path)["jobEnvironments"]
             for f in e["script"].get("embeddedFiles", [])]
    assert {f["filename"] for f in files} == {"prepare_output.py", "export_settings.py"}
    for f in files:
        source = (BUNDLE / "scripts" / f["filename"]).read_text(encoding="utf-8")
        assert f["data"] == source, (f"{path}: embedded {f['filename']} differs from "
                                     f"openjd_bundle/scripts/{f['filename']}: copy it in")


# -- parameter values name only defined parameters --------------------------------------------
@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_shipped_parameter_values_are_defined_and_valid(path: Path, tmp_path: Path) -> None:
    values = load(path.parent / "parameter_values.yaml")["parameterValues"]
    defined = {p["name"] for p in load(path)["parameterDefinitions"]}
    assert {v["name"] for v in values} <= defined
    job_for(path, {**required(tmp_path), **{v["name"]: str(v["value"]) for v in values}},
            tmp_path)
    refs = load(path.parent / "asset_references.yaml")["assetReferences"]
    assert set(refs) == {"inputs", "outputs", "referencedPaths"}


def test_scanner_reads_the_templates_like_yaml() -> None:
    for path in TEMPLATES:
        text = path.read_text(encoding="utf-8")
        assert scan_parameters(text) == template_parameters(text)
        assert len(scan_parameters(text)) == len(load(path)["parameterDefinitions"])


# -- tasks of any size: CHUNK[INT] up to 150 frames, the big-task template above ----------
def test_chunked_tasks_are_capped_at_150_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FramesPerTask"):
        job_for(IMAGE_T, {**required(tmp_path), "FramesPerTask": "151"}, tmp_path)
    job = job_for(IMAGE_T, {**required(tmp_path), "Frames": "1-300", "FramesPerTask": "150",
                            "TargetRuntimeSeconds": "600"}, tmp_path)
    assert chunk_values(job) == ["1-150", "151-300"]


def test_big_template_is_generated_from_the_chunked_one() -> None:
    from stmpo_celery.deadline._bigtask import big_template_text

    assert BIG_T.read_text(encoding="utf-8") == big_template_text(IMAGE_T.read_text("utf-8"))
    image = {p["name"]: p for p in load(IMAGE_T)["parameterDefinitions"]}
    big = {p["name"]: p for p in load(BIG_T)["parameterDefinitions"]}
    assert set(image) - set(big) == {"FramesPerTask", "TargetRuntimeSeconds"}
    assert set(big) - set(image) == {"TaskCount"}
    assert "extensions" not in load(BIG_T)  # runs on any worker agent


def test_big_tasks_carry_any_number_of_frames(tmp_path: Path) -> None:
    from stmpo_celery.plan._chunks import task_share

    job = job_for(BIG_T, {**required(tmp_path), "Frames": "1-1200,2001-2600:2",
                          "TaskCount": "2"}, tmp_path)
    space = job.steps[0].parameterSpace
    tasks = [int(t["Task"].value) for t in StepParameterSpaceIterator(space=space)]
    assert tasks == [1, 2]
    frames = parse_frames("1-1200,2001-2600:2")
    pieces = [task_share(frames, i, 2) for i in tasks]
    assert [len(p) for p in pieces] == [750, 750]  # 1,500 frames: 750 per task
    assert sorted(f for p in pieces for f in p) == frames
    args = run_args(load(BIG_T)["steps"][0])
    assert args[args.index("--frames") + 1] == "{{Param.Frames}}"
    assert args[args.index("--task") + 1] == "{{Task.Param.Task}}/{{Param.TaskCount}}"


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_host_requirements_and_conda_packages(path: Path) -> None:
    (step,) = load(path)["steps"]
    req = step["hostRequirements"]
    (os_family,) = req["attributes"]
    assert os_family == {"name": "attr.worker.os.family", "anyOf": ["windows", "macos"]}
    amounts = {a["name"]: a["min"] for a in req["amounts"]}
    slots = 1 if path == MOVIE_T else 2  # default: 16 threads and 32 GB per slot
    assert amounts == {"amount.worker.vcpu": 16 * slots, "amount.worker.memory": 32768 * slots}
    defs = {p["name"]: p for p in load(path)["parameterDefinitions"]}
    assert defs["CondaPackages"]["default"].startswith("aftereffects=")
    assert defs["CondaPackages"]["userInterface"]["control"] == "HIDDEN"
    assert defs["RenderBy"]["default"] == "rqindex"  # the queue item's output module decides


@pytest.mark.parametrize(("name", "text"), [
    ("parameter_values.yaml", "parameterValues: 7"),
    ("parameter_values.yaml", "- 7"),
    ("parameter_values.yaml", "- name: Frames"),
    ("parameter_values.yaml", "parameterValues:\n  - name: Frames\n"),
    ("parameter_values.yaml", "\udcff"),
    ("parameter_values.yaml", "parameterValues: ["),
    ("asset_references.yaml", "assetReferences: 5"),
    ("asset_references.yaml", "assetReferences:\n  inputs: [1]\n"),
])
def test_a_malformed_bundle_side_file_is_one_line_naming_it(
        tmp_path: Path, name: str, text: str) -> None:
    """A bundle's parameter values or asset references of the wrong shape ended farm
    submit in a TypeError/KeyError traceback; now bad input naming the file."""
    import shutil

    from stmpo_celery.errors import BadInput
    from stmpo_celery.farm._submit import load_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(Path(__file__).parents[1] / "openjd_bundle", bundle)
    (bundle / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(BadInput) as info:
        load_bundle(str(bundle))
    assert name in info.value.message and "\n" not in info.value.message
