"""The Deadline Cloud job bundles and `stmpo bundle`, checked with the real OpenJD model.

Every template passes `openjd check` and decodes with openjd-model; its tasks are the
frame ranges the runtime would run; every parameter it defines reaches a command; every
parameter value (shipped, or written by `stmpo bundle`) names a defined parameter.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from openjd.model import (
    StepParameterSpaceIterator,
    create_job,
    decode_job_template,
    preprocess_job_parameters,
)

from stmpo_celery import bundle as bundle_mod
from stmpo_celery.bundle import (
    bundle_command,
    scan_parameters,
    task_ranges,
    template_parameters,
)
from stmpo_celery.frames import parse_frames
from stmpo_celery.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "openjd_bundle"
IMAGE_T = BUNDLE / "template.yaml"
MOVIE_T = BUNDLE / "movie" / "template.yaml"
TEMPLATES = [IMAGE_T, MOVIE_T]
BIN = Path(sys.executable).parent
EXTENSIONS = ["TASK_CHUNKING"]  # the only extension the templates may use (Deadline supports it)

#: The parameters of the image bundle that the movie bundle leaves out: they cannot
#: change one aerender process rendering one task (see stmpo_celery.bundle._IMAGE_ONLY).
IMAGE_ONLY = {"FramesPerTask", "Concurrency", "MaxConcurrency", "RamPerProcessGB",
              "ThreadsPerSlot", "Affinity", "NumaMap", "Schedule", "ChunkSize", "SpawnDelay",
              "FailFast", "SkipExisting"}


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


# -- the templates are valid ------------------------------------------------------------------
@pytest.mark.parametrize("path", TEMPLATES, ids=["image", "movie"])
def test_openjd_check_passes(path: Path) -> None:
    res = subprocess.run([str(BIN / "openjd"), "check", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "passes validation" in res.stdout


@pytest.mark.parametrize("path", TEMPLATES, ids=["image", "movie"])
def test_templates_use_only_task_chunking(path: Path) -> None:
    # Deadline Cloud must support every extension a template declares.
    assert set(load(path).get("extensions") or []) <= set(EXTENSIONS)
    decode_job_template(template=load(path), supported_extensions=EXTENSIONS)


@pytest.mark.parametrize(("frames", "per_task", "expected"), [
    ("1-100", 30, ["1-25", "26-50", "51-75", "76-100"]),
    ("1-100", 100, ["1-100"]),
    ("1-240", 100, ["1-80", "81-160", "161-240"]),
    ("1-10,50-60", 5, ["1-5", "6-10", "50-53", "54-57", "58-60"]),
    ("7", 10, ["7-7"]),
    ("-5--1", 2, ["-5--4", "-3--2", "-1--1"]),
])
def test_image_tasks_are_contiguous_chunks(tmp_path: Path, frames: str, per_task: int,
                                           expected: list[str]) -> None:
    job = job_for(IMAGE_T, {**required(tmp_path), "Frames": frames,
                            "FramesPerTask": str(per_task)}, tmp_path)
    got = chunk_values(job)
    assert got == expected
    # every frame exactly once, and `stmpo bundle` predicts the same tasks
    assert sorted(f for c in got for f in parse_frames(c)) == parse_frames(frames)
    assert [f"{a}-{b}" for a, b in task_ranges(parse_frames(frames), per_task)] == expected


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
                               "rangeConstraint": "CONTIGUOUS"}
    args = run_args(step)
    assert args[args.index("--frames") + 1] == "{{Task.Param.Frame}}"
    assert "--concurrency" not in args  # slots per task come from the settings


def run_args(step: dict[str, Any]) -> list[str]:
    action = step["script"]["actions"]["onRun"]
    assert action["command"] == "stmpo"
    args: list[str] = action["args"]
    assert args[0] == "render"
    return args


@pytest.mark.parametrize("path", TEMPLATES, ids=["image", "movie"])
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


@pytest.mark.parametrize("path", TEMPLATES, ids=["image", "movie"])
def test_every_parameter_reaches_a_command(path: Path) -> None:
    doc = load(path)
    names = [p["name"] for p in doc["parameterDefinitions"]]
    used = " ".join(_strings({"steps": doc["steps"], "env": doc.get("jobEnvironments")}))
    dead = [n for n in names
            if not re.search(r"\{\{\s*(Raw)?Param\." + n + r"\s*\}\}", used)]
    assert not dead, f"parameters no step or environment uses: {dead}"
    # and nothing refers to a parameter the template does not define
    refs = set(re.findall(r"\{\{\s*(?:Raw)?Param\.([A-Za-z0-9_]+)\s*\}\}", used))
    assert refs <= set(names)


@pytest.mark.parametrize("path", TEMPLATES, ids=["image", "movie"])
def test_every_parameter_has_a_ui_group_and_description(path: Path) -> None:
    for p in load(path)["parameterDefinitions"]:
        ui = p.get("userInterface") or {}
        assert ui.get("groupLabel") and ui.get("label"), p["name"]
        assert p.get("description"), p["name"]


@pytest.mark.parametrize("path", TEMPLATES, ids=["image", "movie"])
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


@pytest.mark.parametrize("path", TEMPLATES, ids=["image", "movie"])
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


@pytest.mark.parametrize("path", TEMPLATES, ids=["image", "movie"])
def test_embedded_scripts_are_the_files_in_scripts(path: Path) -> None:
    files = [f for e in load(path)["jobEnvironments"]
             for f in e["script"].get("embeddedFiles", [])]
    assert {f["filename"] for f in files} == {"prepare_output.py", "export_settings.py"}
    for f in files:
        source = (BUNDLE / "scripts" / f["filename"]).read_text(encoding="utf-8")
        assert f["data"] == source, (f"{path}: embedded {f['filename']} differs from "
                                     f"openjd_bundle/scripts/{f['filename']}: copy it in")


# -- parameter values name only defined parameters --------------------------------------------
@pytest.mark.parametrize("path", TEMPLATES, ids=["image", "movie"])
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


# -- stmpo bundle -----------------------------------------------------------------------------
def run_bundle(*args: str) -> Any:
    return CliRunner().invoke(bundle_command, list(args), catch_exceptions=False)


def written(dest: Path) -> dict[str, Any]:
    values = json.loads((dest / "parameter_values.json").read_text(encoding="utf-8"))
    return {v["name"]: v["value"] for v in values["parameterValues"]}


def test_bundle_for_an_image_sequence_writes_values_the_template_accepts(tmp_path: Path) -> None:
    project = tmp_path / "proj, é" / "shot 1.aep"
    project.parent.mkdir()
    project.write_text("aep")
    numa = tmp_path / "numa.json"
    numa.write_text("{}")
    fonts = tmp_path / "fonts"
    fonts.mkdir()
    dest = tmp_path / "bundle"
    out = tmp_path / "renders, ü" / "shot_[#####].exr"
    res = run_bundle("--project", str(project), "--comp", "Main, Comp", "--frames", "1-100",
                     "--output", str(out), "--dest", str(dest), "--frames-per-task", "30",
                     "--profile", "farm", "--concurrency", "0", "--max_concurrency", "12",
                     "--ram-per-process-gb", "24", "--threads-per-slot", "8", "--disable_mfr",
                     "--mfr-max-cpu", "80", "--no-affinity", "--numa-map", str(numa),
                     "--schedule", "guided", "--chunk-size", "4", "--spawn_delay", "0.5",
                     "--no-fail-fast", "--no-skip-existing", "--aerender", "/opt/ae/aerender",
                     "--broker", "redis://farm-redis:6379/0", "--fonts-dir", str(fonts))
    assert res.exit_code == 0, res.output
    assert "4 task(s) of at most 30 frame(s): 1-25, 26-50, 51-75, 76-100" in res.output
    assert "deadline bundle submit" in res.output
    assert (dest / "template.yaml").read_bytes() == IMAGE_T.read_bytes()
    v = written(dest)
    assert v == {
        "ProjectFile": str(project), "OutputDir": str(out.parent),
        "OutputFileName": "shot_[#####].exr", "RenderBy": "comp", "Comp": "Main, Comp",
        "Frames": "1-100", "FramesPerTask": 30, "Profile": "farm",
        "AerenderPath": "/opt/ae/aerender", "BrokerUrl": "redis://farm-redis:6379/0",
        "Concurrency": "0", "MaxConcurrency": "12", "RamPerProcessGB": "24",
        "ThreadsPerSlot": "8", "MfrMaxCpu": "80", "SpawnDelay": "0.5", "Mfr": "OFF",
        "Affinity": "OFF", "FailFast": "OFF", "SkipExisting": "OFF", "Schedule": "guided",
        "ChunkSize": "4", "NumaMap": str(numa), "FontsDir": str(fonts),
    }
    # every name is defined and every value passes the template's constraints
    job = job_for(dest / "template.yaml", {k: str(x) for k, x in v.items()}, tmp_path)
    assert chunk_values(job) == ["1-25", "26-50", "51-75", "76-100"]
    refs = json.loads((dest / "asset_references.json").read_text(encoding="utf-8"))
    assert refs["assetReferences"]["inputs"] == {"filenames": [str(project), str(numa)],
                                                 "directories": [str(fonts)]}
    assert refs["assetReferences"]["outputs"] == {"directories": [str(out.parent)]}


def test_bundle_leaves_unset_settings_to_the_workers(tmp_path: Path) -> None:
    (tmp_path / "a.aep").write_text("aep")
    res = run_bundle("--project", str(tmp_path / "a.aep"), "--rqindex", "2", "--frames",
                     "1-10,50-60", "--output", str(tmp_path / "o" / "a_[###].png"), "--dest",
                     str(tmp_path / "b"))
    assert res.exit_code == 0, res.output
    v = written(tmp_path / "b")
    assert v == {"ProjectFile": str(tmp_path / "a.aep"), "OutputDir": str(tmp_path / "o"),
                 "OutputFileName": "a_[###].png", "RenderBy": "rqindex", "Comp": "2",
                 "Frames": "1-10,50-60"}
    # the template default (100 frames per task) applies: one task per contiguous run
    assert "2 task(s) of at most 100 frame(s): 1-10, 50-60" in res.output
    job = job_for(tmp_path / "b" / "template.yaml", v, tmp_path)
    assert chunk_values(job) == ["1-10", "50-60"]


def test_bundle_for_a_movie_uses_the_movie_template(tmp_path: Path) -> None:
    (tmp_path / "a.aep").write_text("aep")
    dest = tmp_path / "b"
    res = run_bundle("--project", str(tmp_path / "a.aep"), "--comp", "Edit", "--frames",
                     "1-240", "--output", str(tmp_path / "o" / "edit.mov"), "--dest", str(dest),
                     "--mfr", "--mfr-max-cpu", "75", "--profile", "hero")
    assert res.exit_code == 0, res.output
    assert (dest / "template.yaml").read_bytes() == MOVIE_T.read_bytes()
    v = written(dest)
    assert v["OutputFileName"] == "edit.mov" and v["Mfr"] == "ON" and v["MfrMaxCpu"] == "75"
    job = job_for(dest / "template.yaml", {k: str(x) for k, x in v.items()}, tmp_path)
    assert job.steps[0].name == "RenderMovie"


@pytest.mark.parametrize(("extra", "message"), [
    (["--concurrency", "4"], "--concurrency cannot apply"),
    (["--frames-per-task", "10", "--no-fail-fast"], "--frames-per-task, --fail-fast"),
])
def test_bundle_refuses_slot_knobs_for_a_movie(tmp_path: Path, extra: list[str],
                                               message: str) -> None:
    (tmp_path / "a.aep").write_text("aep")
    res = CliRunner().invoke(bundle_command, [
        "--project", str(tmp_path / "a.aep"), "--comp", "Edit", "--frames", "1-24",
        "--output", str(tmp_path / "edit.mov"), "--dest", str(tmp_path / "b"), *extra])
    assert res.exit_code != 0 and message in str(res.exception)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--frames", "10-1"], "ends before it starts"),
    (["--rqindex", "1"], "exactly one of --comp"),
    (["--output", "/x/a_[#]_[#].png"], "more than one frame token"),
    (["--project", "/no/such.aep"], "not a file"),
    (["--frames-per-task", "0"], "below 1"),
    (["--mfr-max-cpu", "150"], "percentage"),
    (["--chunk-size", "lots"], "not a frame count"),
    (["--max-concurrency", "0"], "more than zero"),
])
def test_bundle_rejects_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "a.aep").write_text("aep")
    base = {"--project": str(tmp_path / "a.aep"), "--comp": "C", "--frames": "1-10",
            "--output": str(tmp_path / "o_[##].png"), "--dest": str(tmp_path / "b")}
    argv = [x for k, val in base.items() if k not in args for x in (k, val)] + args
    res = CliRunner().invoke(bundle_command, argv)
    assert res.exit_code != 0 and message in str(res.exception), res.output
    assert not (tmp_path / "b").exists()


def test_bundle_replaces_only_a_bundle_and_only_with_force(tmp_path: Path) -> None:
    (tmp_path / "a.aep").write_text("aep")
    dest = tmp_path / "b"
    argv = ["--project", str(tmp_path / "a.aep"), "--comp", "C", "--frames", "1-10",
            "--output", str(tmp_path / "o_[##].png"), "--dest", str(dest)]
    assert run_bundle(*argv).exit_code == 0
    (dest / "parameter_values.yaml").write_text("parameterValues: []\n")  # a stale sibling
    res = CliRunner().invoke(bundle_command, argv)
    assert res.exit_code != 0 and "--force" in str(res.exception)
    assert run_bundle(*argv, "--force").exit_code == 0
    assert not (dest / "parameter_values.yaml").exists()  # Deadline would read only one
    (dest / "notes.txt").write_text("mine")
    res = CliRunner().invoke(bundle_command, [*argv, "--force"])
    assert res.exit_code != 0 and "not a job bundle" in str(res.exception)
    assert (dest / "notes.txt").exists()


def test_bundle_checks_values_against_the_template_it_copies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a template that lost a parameter stmpo writes: refuse instead of a bundle that
    # `deadline bundle submit` would reject
    text = IMAGE_T.read_text(encoding="utf-8")
    stale = re.sub(r"^- name: FramesPerTask\n(?:  .*\n)+", "", text, flags=re.M)
    assert "name: FramesPerTask" not in stale
    fake = tmp_path / "t.yaml"
    fake.write_text(stale, encoding="utf-8")
    monkeypatch.setattr(bundle_mod, "load_template", lambda kind: (stale, fake))
    (tmp_path / "a.aep").write_text("aep")
    res = CliRunner().invoke(bundle_command, [
        "--project", str(tmp_path / "a.aep"), "--comp", "C", "--frames", "1-10", "--output",
        str(tmp_path / "o_[##].png"), "--dest", str(tmp_path / "b"), "--frames-per-task", "5"])
    assert res.exit_code != 0 and "does not define FramesPerTask" in str(res.exception)
    assert not (tmp_path / "b").exists()


def test_templates_are_found_in_the_source_tree_or_the_install_prefix(tmp_path: Path) -> None:
    assert bundle_mod.find_template("image") == IMAGE_T
    assert bundle_mod.find_template("movie") == MOVIE_T
    assert str(bundle_mod.template_roots()[1]).endswith("share/stmpo-celery/openjd_bundle")
    (tmp_path / "movie").mkdir()
    (tmp_path / "movie" / "template.yaml").write_text("x")
    assert bundle_mod.find_template("movie", [tmp_path / "none", tmp_path]) == \
        tmp_path / "movie" / "template.yaml"
    with pytest.raises(Exception, match="not installed"):
        bundle_mod.find_template("image", [tmp_path])


def test_bundle_is_the_stmpo_subcommand(tmp_path: Path) -> None:
    (tmp_path / "a.aep").write_text("aep")
    res = subprocess.run([str(BIN / "stmpo"), "bundle", "--project", str(tmp_path / "a.aep"),
                          "--comp", "C", "--frames", "1-10", "--output", str(tmp_path / "m.mov"),
                          "--dest", str(tmp_path / "b"), "--concurrency", "2"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.startswith("stmpo: error: ")
    assert "Traceback" not in res.stderr


# -- the environment scripts -------------------------------------------------------------------
def test_font_hooks_are_harmless_without_fonts() -> None:
    # the Fonts environment passes FontsDir as is: empty means no fonts are attached
    for args in (["fonts", "install", "--from", ""], ["fonts", "remove"]):
        res = subprocess.run([str(BIN / "stmpo"), *args], capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr



def script(name: str, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run([sys.executable, str(BUNDLE / "scripts" / name), *args],
                          capture_output=True, text=True, timeout=60, env=env,
                          encoding="utf-8")


def test_prepare_output_creates_directories_with_awkward_names(tmp_path: Path) -> None:
    out = tmp_path / "a, b ü"
    res = script("prepare_output.py", "--kind", "image", "--output-dir", str(out),
                 "--file-name", "sub, dir/shot_[####].png")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "sub, dir").is_dir()
    assert f"output directory created: {out / 'sub, dir'}" in res.stdout


@pytest.mark.parametrize(("kind", "name", "message"), [
    ("image", "shot.mov", "no [#####] frame token"),
    ("movie", "shot_[###].png", "has a frame token"),
    ("image", " ", "file name is empty"),
])
def test_prepare_output_refuses_the_wrong_kind(tmp_path: Path, kind: str, name: str,
                                               message: str) -> None:
    res = script("prepare_output.py", "--kind", kind, "--output-dir", str(tmp_path / "o"),
                 "--file-name", name)
    assert res.returncode == 2
    (line,) = res.stdout.splitlines()
    assert line.startswith("openjd_fail: ") and message in line
    assert not (tmp_path / "o").exists()


def test_export_settings_exports_only_what_is_set(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("STMPO_MAX_CONCURRENCY", None)
    res = script("export_settings.py", "STMPO_PROFILE=", "STMPO_MFR=OFF",
                 "STMPO_AFFINITY=DEFAULT", "STMPO_MAX_CONCURRENCY=7",
                 "STMPO_NUMA_MAP=/maps/a, b ü.json", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    exported = [ln for ln in res.stdout.splitlines() if ln.startswith("openjd_env: ")]
    assert exported == ["openjd_env: STMPO_MFR=OFF", "openjd_env: STMPO_MAX_CONCURRENCY=7",
                        "openjd_env: STMPO_NUMA_MAP=/maps/a, b ü.json"]
    # `stmpo config show` ran with them: the effective values and their sources
    assert re.search(r"^  max_concurrency\s+7\s+\$STMPO_MAX_CONCURRENCY$", res.stdout, re.M)
    assert re.search(r"^  mfr\s+False\s+\$STMPO_MFR$", res.stdout, re.M)


@pytest.mark.parametrize(("arg", "message"), [
    ("STMPO_CONCURRENCY=lots", "must be a whole number"),
    ("STMPO_MFR=line\nopenjd_fail: forged", "line break"),
    ("PATH=/evil", "expected STMPO_NAME=VALUE"),
])
def test_export_settings_fails_the_session_on_a_bad_value(arg: str, message: str) -> None:
    import os

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    res = script("export_settings.py", arg, env=env)
    assert res.returncode != 0
    fails = [ln for ln in res.stdout.splitlines() if ln.startswith("openjd_fail: ")]
    assert len(fails) == 1 and message in fails[0], res.stdout
    assert not any(ln.startswith("openjd_env: ") for ln in res.stdout.splitlines())


# -- the README -------------------------------------------------------------------------------
def test_readme_documents_submission_install_and_every_parameter() -> None:
    from openjd.model import decode_environment_template

    text = (BUNDLE / "README.md").read_text(encoding="utf-8")
    assert "deadline bundle submit openjd_bundle " in text
    assert "deadline bundle submit openjd_bundle/movie" in text
    for name in (p["name"] for p in load(IMAGE_T)["parameterDefinitions"]):
        assert re.search(rf"^`{name}` \|", text, re.M), f"{name} missing from the table"
    for alias in ("--aerender_path", "--max_concurrency", "--ram_per_process_gb",
                  "--disable_mfr", "--numa_map", "--spawn_delay", "--disable_affinity",
                  "--enable_affinity"):
        assert alias in text
    # the queue environment that installs stmpo is a valid OpenJD environment template
    block = re.search(r"```yaml\n(specificationVersion: environment-2023-09\n.*?)```", text,
                      re.S)
    assert block
    env = decode_environment_template(template=yaml.safe_load(block.group(1)))
    assert env.environment.name == "StmpoCelery"
