"""`stmpo bundle`: a ready bundle whose values the template accepts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from bundlelib import (
    BIN,
    BUNDLE,
    IMAGE_T,
    MOVIE_T,
    chunk_values,
    job_for,
    load,
)
from click.testing import CliRunner
from fontlib import sfnt

from stmpo_celery.cli._bundle import bundle_command
from stmpo_celery.deadline import _bundle as bundle_mod
from stmpo_celery.deadline._bigtask import with_host_minimums
from stmpo_celery.errors import BadInput


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
    (fonts / "Brand.otf").write_bytes(sfnt(bytes(32), b"OTTO"))
    dest = tmp_path / "bundle"
    out = tmp_path / "renders, ü" / "shot_[#####].exr"
    res = run_bundle("--project", str(project), "--comp", "Main, Comp", "--frames", "1-100",
                     "--output", str(out), "--dest", str(dest), "--frames-per-task", "30",
                     "--profile", "farm", "--concurrency", "0", "--max_concurrency", "12",
                     "--ram-per-process-gb", "24", "--threads-per-slot", "8", "--mfr",
                     "--mfr-max-cpu", "80", "--no-affinity", "--numa-map", str(numa),
                     "--schedule", "guided", "--chunk-size", "4", "--spawn_delay", "0.5",
                     "--no-fail-fast", "--no-skip-existing", "--aerender", "/opt/ae/aerender",
                     "--broker", "redis://farm-redis:6379/0", "--fonts-dir", str(fonts))
    assert res.exit_code == 0, res.output
    assert "4 task(s) of at most 30 frame(s): 1-25, 26-50, 51-75, 76-100" in res.output
    assert "deadline bundle submit" in res.output
    # the template, with host requirements for two slots of 8 threads and 24 GB each
    assert (dest / "template.yaml").read_text("utf-8") == with_host_minimums(
        IMAGE_T.read_text("utf-8"), 16, 2 * 24 * 1024)
    assert "at least 16 vCPUs and 48 GiB" in res.output
    v = written(dest)
    assert v == {
        "ProjectFile": str(project), "OutputDir": str(out.parent),
        "OutputFileName": "shot_[#####].exr", "RenderBy": "comp", "Comp": "Main, Comp",
        "Frames": "1-100", "FramesPerTask": 30, "Profile": "farm",
        "AerenderPath": "/opt/ae/aerender", "BrokerUrl": "redis://farm-redis:6379/0",
        "Concurrency": "0", "MaxConcurrency": "12", "RamPerProcessGB": "24",
        "ThreadsPerSlot": "8", "MfrMaxCpu": "80", "SpawnDelay": "0.5", "Mfr": "ON",
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
    assert "1 task(s) of at most 100 frame(s): 1-10,50-60" in res.output
    job = job_for(tmp_path / "b" / "template.yaml", v, tmp_path)
    assert chunk_values(job) == ["1-10,50-60"]  # one task: 21 frames, gaps allowed


def test_bundle_for_a_movie_uses_the_movie_template(tmp_path: Path) -> None:
    (tmp_path / "a.aep").write_text("aep")
    dest = tmp_path / "b"
    res = run_bundle("--project", str(tmp_path / "a.aep"), "--comp", "Edit", "--frames",
                     "1-240", "--output", str(tmp_path / "o" / "edit.mov"), "--dest", str(dest),
                     "--mfr", "--mfr-max-cpu", "75", "--profile", "hero")
    assert res.exit_code == 0, res.output
    # hero: one slot of 16 threads and 48 GB (a movie is one process)
    assert (dest / "template.yaml").read_text("utf-8") == with_host_minimums(
        MOVIE_T.read_text("utf-8"), 16, 48 * 1024)
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
    (["--broker", "redis://:Pw0rd@farm-redis:6379/0"], "holds a password"),
    (["--target-runtime", "99999"], "TargetRuntimeSeconds must be at most 86400"),
    (["--fonts-dir", ""], "--fonts-dir is empty"),  # not the current folder
    (["--output", "/x/CON.[##].png"], "Windows device name CON"),  # where AE renders
    (["--output", "/x/LPT[#].png"], "frame 1 'LPT1.png'"),  # a frame's own name
    # render refuses it, so every task would fail after its session set up
    (["--schedule", "static", "--chunk-size", "5"], "does nothing with --schedule static"),
    # ... and refuses as an idle flag (the task's values reach it as STMPO_*, not refused)
    (["--no-mfr", "--mfr-max-cpu", "50"], "--mfr-max-cpu does nothing here: MFR is off"),
    # another OS's path: abspath took it for a name under the current folder, and every
    # session failed on the worker ("OutputFileName ... leaves OutputDir")
    (["--output", "D:\\renders\\shot_[#####].png"], "is a Windows drive path"),
    (["--output", "\\\\server\\share\\shot_[#####].png"], "Windows network (UNC) path"),
    (["--project", "C:/jobs/shot.aep"], "--project 'C:/jobs/shot.aep' is a Windows drive"),
    # CreateJob takes at most 1024 characters per parameter value
    (["--frames", ",".join(str(f) for f in range(2000) if f % 3 and f % 5)],
     "job parameter Frames is"),
])
def test_bundle_rejects_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "a.aep").write_text("aep")
    base = {"--project": str(tmp_path / "a.aep"), "--comp": "C", "--frames": "1-10",
            "--output": str(tmp_path / "o_[##].png"), "--dest": str(tmp_path / "b")}
    argv = [x for k, val in base.items() if k not in args for x in (k, val)] + args
    res = CliRunner().invoke(bundle_command, argv)
    assert res.exit_code != 0 and message in str(res.exception), res.output
    assert not (tmp_path / "b").exists()


def test_bundle_refuses_fonts_that_would_not_reach_the_render(tmp_path: Path) -> None:
    """After Effects renders with a substitute for a font it cannot use, without a word:
    a broken attached font is refused at submission."""
    (tmp_path / "a.aep").write_text("aep")
    fonts = tmp_path / "fonts"
    (fonts / "sub").mkdir(parents=True)
    (fonts / "Good.otf").write_bytes(sfnt(bytes(36), b"OTTO"))
    (fonts / "sub" / "Brand.ttf").write_text("<html>404 Not Found</html>")
    res = CliRunner().invoke(bundle_command, [
        "--project", str(tmp_path / "a.aep"), "--comp", "C", "--frames", "1-10",
        "--output", str(tmp_path / "o_[##].png"), "--dest", str(tmp_path / "b"),
        "--fonts-dir", str(fonts)])
    assert isinstance(res.exception, BadInput), res.output
    assert "Brand.ttf is not a TrueType/OpenType font (it looks like HTML or XML" \
        in str(res.exception) and "<html>" not in str(res.exception)
    assert not (tmp_path / "b").exists()
    # a folder without fonts would not even be attached: the job would name a folder
    # that never reaches the workers
    for f in (fonts / "Good.otf", fonts / "sub" / "Brand.ttf"):
        f.unlink()
    (fonts / "readme.txt").write_text("fonts go here")
    res = CliRunner().invoke(bundle_command, [
        "--project", str(tmp_path / "a.aep"), "--comp", "C", "--frames", "1-10",
        "--output", str(tmp_path / "o_[##].png"), "--dest", str(tmp_path / "b"),
        "--fonts-dir", str(fonts)])
    assert isinstance(res.exception, BadInput), res.output
    assert f"--fonts-dir {fonts} holds no font files" in str(res.exception)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("dest", ["file/bundle", ""])
def test_a_dest_that_cannot_be_made_is_bad_input(tmp_path: Path, dest: str) -> None:
    """Exit 2, a path to fix (the write failing is tests/test_bad_input.py's /proc case)."""
    (tmp_path / "a.aep").write_text("aep")
    (tmp_path / "file").write_text("x")
    res = CliRunner().invoke(bundle_command, [
        "--project", str(tmp_path / "a.aep"), "--comp", "C", "--frames", "1-10",
        "--output", str(tmp_path / "o_[##].png"),
        "--dest", str(tmp_path / dest) if dest else dest])
    assert isinstance(res.exception, BadInput), res.output
    assert ("cannot be written" if dest else "--dest is empty") in str(res.exception)


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
    ("image", "../../escaped/e_[####].png", "leaves OutputDir"),
    ("image", "/abs/a_[####].png", "leaves OutputDir"),
    ("movie", "C:\\renders\\shot.mov", "leaves OutputDir"),
    ("image", "sub\\..\\..\\e_[####].png", "leaves OutputDir"),
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
    numa_map = tmp_path / "maps" / "a, b ü.json"  # read by the check: it must exist
    numa_map.parent.mkdir()
    numa_map.write_text(json.dumps({"group_0": sorted(os.sched_getaffinity(0))}))
    res = script("export_settings.py", "STMPO_PROFILE=", "STMPO_MFR=OFF",
                 "STMPO_AFFINITY=DEFAULT", "STMPO_MAX_CONCURRENCY=7",
                 f"STMPO_NUMA_MAP={numa_map}", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    exported = [ln for ln in res.stdout.splitlines() if ln.startswith("openjd_env: ")]
    assert exported == ["openjd_env: STMPO_MFR=OFF", "openjd_env: STMPO_MAX_CONCURRENCY=7",
                        f"openjd_env: STMPO_NUMA_MAP={numa_map}"]
    # `stmpo config show` ran with them: the effective values and their sources
    assert re.search(r"^  max_concurrency\s+7\s+\$STMPO_MAX_CONCURRENCY$", res.stdout, re.M)
    assert re.search(r"^  mfr\s+False\s+\$STMPO_MFR$", res.stdout, re.M)


@pytest.mark.parametrize(("arg", "message"), [
    ("STMPO_CONCURRENCY=lots", "must be a whole number"),
    ("STMPO_MFR=line\nopenjd_fail: forged", "line break"),
    ("PATH=/evil", "expected STMPO_NAME=VALUE"),
    ("STMPO_NUMA_MAP=/nonexistent/map.json", "cannot read numa map"),
    ("STMPO_BROKER_URL=http://farm-redis:6379", "not a Redis URL"),
    ("STMPO_BROKER_URL=redis://:Pw0rd@farm-redis:6379/0", "holds a password"),
    ("STMPO_BROKER_URL=redis://farm-redis:6379/0?password=Pw0rd", "holds a password"),
    # a password with an unencoded / ? or #: a URL parser's host part ends before the @
    ("STMPO_BROKER_URL=redis://:ab/Pw0rd@farm-redis:6379/0", "holds a password"),
    ("STMPO_BROKER_URL=redis://:ab#Pw0rd@farm-redis:6379/0", "holds a password"),
    ("STMPO_BROKER_URL=redis://farm-redis:6379/0?pwd=Pw0rd%21", "holds a password"),
])
def test_export_settings_fails_the_session_on_a_bad_value(arg: str, message: str) -> None:
    import os

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    res = script("export_settings.py", arg, env=env)
    assert res.returncode != 0
    fails = [ln for ln in res.stdout.splitlines() if ln.startswith("openjd_fail: ")]
    assert len(fails) == 1 and message in fails[0], res.stdout
    assert not any(ln.startswith("openjd_env: ") for ln in res.stdout.splitlines())
    assert "Pw0rd" not in res.stdout + res.stderr


def test_export_settings_fails_the_session_on_settings_that_do_nothing_together() -> None:
    import os

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    res = script("export_settings.py", "STMPO_SCHEDULE=static", "STMPO_CHUNK_SIZE=5", env=env)
    fails = [ln for ln in res.stdout.splitlines() if ln.startswith("openjd_fail: ")]
    assert res.returncode != 0 and len(fails) == 1, res.stdout
    assert "$STMPO_CHUNK_SIZE does nothing with $STMPO_SCHEDULE static" in fails[0]
    ok = script("export_settings.py", "STMPO_SCHEDULE=fixed", "STMPO_CHUNK_SIZE=5", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr


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


def test_bundle_above_150_frames_per_task_writes_the_big_task_template(tmp_path: Path) -> None:
    (tmp_path / "a.aep").write_text("aep")
    dest = tmp_path / "b"
    res = run_bundle("--project", str(tmp_path / "a.aep"), "--rqindex", "1", "--frames",
                     "1-1200", "--output", str(tmp_path / "o" / "s_[####].png"), "--dest",
                     str(dest), "--frames-per-task", "600")
    assert res.exit_code == 0, res.output
    assert "above the 150 frames a chunked (CHUNK[INT]) task may carry" in res.output
    assert "2 task(s) of about 600 frame(s): 1-600, 601-1200" in res.output
    v = written(dest)
    assert v["TaskCount"] == 2 and "FramesPerTask" not in v and v["RenderBy"] == "rqindex"
    job = job_for(dest / "template.yaml", {k: str(x) for k, x in v.items()}, tmp_path)
    assert job.steps[0].parameterSpace is not None
    assert "extensions:" not in (dest / "template.yaml").read_text("utf-8")


def test_bundle_at_150_frames_per_task_stays_chunked(tmp_path: Path) -> None:
    (tmp_path / "a.aep").write_text("aep")
    dest = tmp_path / "b"
    res = run_bundle("--project", str(tmp_path / "a.aep"), "--rqindex", "1", "--frames",
                     "1-300", "--output", str(tmp_path / "o" / "s_[####].png"), "--dest",
                     str(dest), "--frames-per-task", "150", "--target-runtime", "900")
    assert res.exit_code == 0, res.output
    v = written(dest)
    assert v["FramesPerTask"] == 150 and v["TargetRuntimeSeconds"] == 900
    job = job_for(dest / "template.yaml", {k: str(x) for k, x in v.items()}, tmp_path)
    assert chunk_values(job) == ["1-150", "151-300"]


def test_bundle_passes_templates_and_missing_effects_setting(tmp_path: Path) -> None:
    (tmp_path / "a.aep").write_text("aep")
    dest = tmp_path / "b"
    res = run_bundle("--project", str(tmp_path / "a.aep"), "--rqindex", "1", "--frames",
                     "1-10", "--output", str(tmp_path / "o" / "s_[####].png"), "--dest",
                     str(dest), "--om-template", "Lossless", "--rs-template", "Best Settings",
                     "--ignore-missing-effects")
    assert res.exit_code == 0, res.output
    v = written(dest)
    assert v["OMTemplate"] == "Lossless" and v["RSTemplate"] == "Best Settings"
    assert v["IgnoreMissingEffects"] == "ON"
    job_for(dest / "template.yaml", {k: str(x) for k, x in v.items()}, tmp_path)

