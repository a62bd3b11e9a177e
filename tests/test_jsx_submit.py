"""The After Effects submitter's output, checked outside AE: the parameter values, the
bundle and the submit command its pure helpers make (run by node) are fed to
openjd-model and a shell, for every bundle kind."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsxlib import TEMPLATES, needs_node, node_caller, template_params
from openjd.model import create_job, decode_job_template, preprocess_job_parameters


@pytest.fixture(scope="module")
def js(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return node_caller(tmp_path_factory)


def every_setting(tmp: Path) -> dict[str, str]:
    project = tmp / "Projekt, v2 ü.aep"
    project.write_text("aep")
    numa = tmp / "numa.json"
    numa.write_text("{}")
    fonts = tmp / "fonts"
    fonts.mkdir(exist_ok=True)
    return {
        "projectFile": str(project), "renderBy": "comp", "comp": 'Main "Comp", ü',
        "outputDir": str(tmp / "out, dir ü"), "outputFileName": "shot_[#####].png",
        "frames": "1-100", "framesPerTask": "25", "profile": "farm", "concurrency": "4",
        "maxConcurrency": "8", "ramPerProcessGB": "16", "threadsPerSlot": "4", "affinity": "ON",
        "numaMap": str(numa), "mfr": "OFF", "mfrMaxCpu": "80", "schedule": "guided",
        "chunkSize": "5", "spawnDelay": "0.5", "failFast": "OFF", "skipExisting": "ON",
        "aerenderPath": "C:\\Program Files\\Adobe\\aerender.exe",
        "brokerUrl": "redis://farm:6379/0", "fontsDir": str(fonts), "targetRuntime": "600",
        "taskCount": "3", "omTemplate": "Lossless", "rsTemplate": "Best Settings",
        "ignoreMissingEffects": "ON", "condaPackages": "aftereffects=25",
        "condaChannels": "deadline-cloud",
    }


def openjd_accepts(kind: str, values: list[dict[str, Any]], tmp: Path) -> None:
    doc = yaml.safe_load(TEMPLATES[kind].read_text(encoding="utf-8"))
    template = decode_job_template(template=doc, supported_extensions=["TASK_CHUNKING"])
    given = {v["name"]: v["value"] for v in values}
    params = preprocess_job_parameters(job_template=template, job_parameter_values=given,
                                       job_template_dir=TEMPLATES[kind].parent,
                                       current_working_dir=tmp)
    create_job(job_template=template, job_parameter_values=params)


@needs_node
def test_image_parameter_values_are_accepted_by_the_image_template(js: Any,
                                                                  tmp_path: Path) -> None:
    settings = every_setting(tmp_path)
    (res,) = js(["stmpoParameterValues", settings, "image"])
    assert res["errors"] == [] and res["dropped"] == [
        "TaskCount (the image bundle has no such parameter)"]
    values = {v["name"]: v["value"] for v in res["values"]}
    assert set(values) == set(template_params("image"))
    assert values["FramesPerTask"] == 25  # INT parameters are JSON numbers
    assert values["Comp"] == 'Main "Comp", ü'
    (doc,) = js(["stmpoToJson", {"parameterValues": res["values"]}])
    assert json.loads(doc) == {"parameterValues": res["values"]}
    openjd_accepts("image", res["values"], tmp_path)


@needs_node
def test_the_movie_path_drops_image_only_parameters(js: Any, tmp_path: Path) -> None:
    settings = every_setting(tmp_path)
    settings.update(outputFileName="shot.mov")
    (res,) = js(["stmpoParameterValues", settings, "movie"])
    names = {v["name"] for v in res["values"]}
    assert names == set(template_params("movie"))
    image_only = set(template_params("image")) - set(template_params("movie"))
    assert {d.split()[0] for d in res["dropped"]} == image_only | {"TaskCount"}
    assert all("movie bundle has no such parameter" in d for d in res["dropped"])
    openjd_accepts("movie", res["values"], tmp_path)


@needs_node
def test_unset_settings_are_not_written_and_stale_templates_are_caught(js: Any,
                                                                       tmp_path: Path) -> None:
    wanted = ("projectFile", "renderBy", "comp", "outputDir", "outputFileName", "frames")
    settings: dict[str, Any] = {k: v for k, v in every_setting(tmp_path).items()
                                if k in wanted}
    settings.update(concurrency="", mfr="DEFAULT", affinity=" DEFAULT ", failFast=None)
    (res,) = js(["stmpoParameterValues", settings, "image"])
    assert [v["name"] for v in res["values"]] == ["ProjectFile", "RenderBy", "Comp", "OutputDir",
                                                  "OutputFileName", "Frames"]
    # a template that no longer defines a parameter: the value is dropped, not written
    (res,) = js(["stmpoParameterValues", {**settings, "mfr": "ON"}, "image",
                 ["ProjectFile", "RenderBy", "Comp", "OutputDir", "OutputFileName", "Frames"]])
    assert "Mfr" not in [v["name"] for v in res["values"]]
    assert res["dropped"] == ["Mfr (the template in use does not define it)"]
    (res,) = js(["stmpoParameterValues", {**settings, "framesPerTask": "ten"}, "image"])
    assert res["errors"] == ["FramesPerTask must be a whole number, not 'ten'"]


@needs_node
def test_validation_messages(js: Any, tmp_path: Path) -> None:
    good = every_setting(tmp_path)
    bad = {**good, "concurrency": "-1", "mfrMaxCpu": "120", "chunkSize": "x",
           "brokerUrl": "http://x", "spawnDelay": "soon", "outputFileName": "shot.png"}
    ok, errors = js(["stmpoValidate", good, "image"], ["stmpoValidate", bad, "image"])
    assert ok == []
    text = "\n".join(errors)
    for needed in ("Concurrency must be", "MFR max CPU % must be", "Chunk size must be",
                   "Broker URL must start", "Spawn delay (s) must be", "[#####] frame token"):
        assert needed in text, needed


@needs_node
def test_asset_references_and_fonts_to_attach(js: Any) -> None:
    refs, picked, safe = js(
        ["stmpoAssetReferences", ["/p/a, b.aep"], ["/b/fonts"], ["/out"]],
        ["stmpoFontsToAttach", [
            {"name": "Brand-Bold", "path": "/Users/a/Library/Fonts/Brand-Bold.otf"},
            {"name": "Brand-Bold", "path": "/Users/a/Library/Fonts/Brand-Bold.otf"},
            {"name": "Arial", "path": "C:\\Windows\\Fonts\\arial.ttf"},
            {"name": "Helvetica", "path": "/System/Library/Fonts/Helvetica.ttc"},
            {"name": "Cloud", "path": ""},
            {"name": "Odd", "path": "/x/odd.txt"},
            {"name": "Gone-Regular", "path": "/Library/Fonts/Gone.otf", "substitute": True}]],
        ["stmpoSafeName", "Shot 010, ü/v2"])
    assert refs == {"assetReferences": {"inputs": {"filenames": ["/p/a, b.aep"],
                                                   "directories": ["/b/fonts"]},
                                        "outputs": {"directories": ["/out"]},
                                        "referencedPaths": []}}
    # Windows' Fonts folder holds fonts installed "for all users": attached; macOS's own not
    assert picked["attach"] == ["/Users/a/Library/Fonts/Brand-Bold.otf",
                                "C:\\Windows\\Fonts\\arial.ttf"]
    assert len(picked["skipped"]) == 4
    assert "Helvetica is a macOS system font" in picked["skipped"][0]  # said, not silent
    assert "Gone-Regular is missing on this machine" in picked["skipped"][3]
    assert safe == "Shot_010_v2"


@needs_node
def test_submit_command_passes_awkward_paths_intact_through_a_shell(js: Any,
                                                                    tmp_path: Path) -> None:
    bin_dir = tmp_path / "my tools, ü"
    bin_dir.mkdir()
    fake = bin_dir / "dead'line"
    record = tmp_path / "argv.json"
    fake.write_text("#!/usr/bin/env python3\nimport json, sys\n"
                    f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    bundle = tmp_path / "bündles, v2" / "it's $HOME `x`"
    plain, login, win = js(["stmpoSubmitCommand", str(fake), str(bundle), False, ""],
                           ["stmpoSubmitCommand", str(fake), str(bundle), False, "/bin/sh"],
                           ["stmpoSubmitCommand", "deadline", "C:\\b\\x y", True, ""])
    for cmd in (plain, login):
        record.unlink(missing_ok=True)
        res = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30,
                             env={**os.environ, "HOME": str(tmp_path)})
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip().endswith("STMPO_SUBMIT_OK")
        # the job's name is in the template (stmpoTemplateWithName), not on a command
        # line that may not carry a non-ASCII one on Windows
        assert json.loads(record.read_text()) == ["bundle", "submit", "--yes", str(bundle)]
    assert win == ('cmd.exe /d /c ""deadline" bundle submit --yes '
                   '"C:\\b\\x y" <NUL 2>&1 && echo STMPO_SUBMIT_OK"')


@needs_node
def test_frame_spec_counts_match_openjd(js: Any) -> None:
    from stmpo_celery.plan._frames import parse_frames

    specs = ["1-240:5", "1,3,7-20:2", "-10--1:3", "1-10,50-60"]
    got = js(*[["stmpoParseFrameSpec", spec] for spec in specs])
    assert [g["count"] for g in got] == [len(parse_frames(spec)) for spec in specs]


@needs_node
def test_bundle_choice_by_task_size(js: Any) -> None:
    small, at_limit, big, movie = js(["stmpoChooseBundle", "image", "100", 1200],
                                     ["stmpoChooseBundle", "image", "150", 1200],
                                     ["stmpoChooseBundle", "image", "600", 1200],
                                     ["stmpoChooseBundle", "movie", "600", 1200])
    assert small["kind"] == at_limit["kind"] == "image" and movie["kind"] == "movie"
    assert big["kind"] == "big" and big["taskCount"] == 2 and "above the 150" in big["why"]
    (template,) = js(["stmpoTemplateFor", "big"])
    assert template == "big/template.yaml"


@needs_node
def test_queue_item_checks_like_stmpo_bundle(js: Any) -> None:
    def item(status: str = "QUEUED", *outputs: dict[str, Any]) -> dict[str, Any]:
        return {"index": 2, "status": status, "outputs": list(outputs) or [png]}

    png = {"format": "PNG Sequence", "file": "/r/a_[#####].png", "useCompFrameNumber": True}
    mov = {"format": "QuickTime", "file": "/r/a.mov", "useCompFrameNumber": True}
    res = js(["stmpoCheckQueueItem", item(), "image"],
             ["stmpoCheckQueueItem", item("UNQUEUED"), "image"],
             ["stmpoCheckQueueItem", item("QUEUED", png, png), "image"],
             ["stmpoCheckQueueItem", item("QUEUED", mov), "big"],
             ["stmpoCheckQueueItem", item("QUEUED", png), "movie"],
             ["stmpoCheckQueueItem", item("QUEUED", {**png, "useCompFrameNumber": False}),
              "image"],
             ["stmpoKindForFormat", "OpenEXR Sequence", "x.mov"],
             ["stmpoKindForFormat", "H.264", "x_[####].mp4"],
             ["stmpoKindForFormat", "Some Plugin", "x_[####].dpx"],
             # a movie container with a frame token in its name is still one movie file
             ["stmpoKindForFormat", "MXF OP1a", "x_[####].mxf"],
             ["stmpoKindForFormat", "Apple ProRes 422", "x_[####].mov"])
    assert res[0] == []
    assert "is UNQUEUED, not queued" in res[1][0]
    assert "2 output modules" in res[2][0]
    assert "cannot be split" in res[3][0]
    assert "output module decides the format" in res[4][0]
    assert "Use comp frame number" in res[5][0]
    assert res[6:] == ["image", "movie", "image", "movie", "movie"]


@needs_node
def test_footage_to_attach(js: Any) -> None:
    (out,) = js(["stmpoFootageToAttach", [
        {"path": "/f/plates", "sequence": True, "exists": True},
        {"path": "/f/logo.png", "sequence": False, "exists": True},
        {"path": "/f/logo.png", "sequence": False, "exists": True},
        {"path": "/f/gone.mov", "sequence": False, "exists": False}]])
    assert out == {"files": ["/f/logo.png"], "dirs": ["/f/plates"], "missing": ["/f/gone.mov"]}


@needs_node
def test_gui_submit_returns_at_once_and_passes_the_bundle(js: Any, tmp_path: Path) -> None:
    import time

    fake = tmp_path / "dead line"
    record = tmp_path / "argv.json"
    fake.write_text("#!/usr/bin/env python3\nimport json, sys, time\ntime.sleep(3)\n"
                    f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    bundle = tmp_path / "it's a bündle"
    cmd, win = js(["stmpoGuiSubmitCommand", str(fake), str(bundle), False, ""],
                  ["stmpoGuiSubmitCommand", "deadline", "C:\\b\\x y", True, ""])
    t0 = time.monotonic()
    res = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and time.monotonic() - t0 < 2  # After Effects is not held
    deadline = time.monotonic() + 15
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert json.loads(record.read_text()) == ["bundle", "gui-submit", str(bundle)]
    assert win == ('cmd.exe /d /c "start "" /b "deadline" bundle gui-submit "C:\\b\\x y" '
                   '<NUL >NUL 2>&1"')


@needs_node
def test_big_task_values_are_accepted_by_the_big_template(js: Any, tmp_path: Path) -> None:
    settings = every_setting(tmp_path)
    settings.update(frames="1-1200", framesPerTask="600")
    (choice,) = js(["stmpoChooseBundle", "image", settings["framesPerTask"], 1200])
    settings["taskCount"] = str(choice["taskCount"])
    (res,) = js(["stmpoParameterValues", settings, "big"])
    assert res["errors"] == []
    values = {v["name"]: v["value"] for v in res["values"]}
    assert set(values) == set(template_params("big")) and values["TaskCount"] == 2
    openjd_accepts("big", res["values"], tmp_path)


@needs_node
def test_a_question_from_the_cli_gets_no_at_once_instead_of_holding_after_effects(
        js: Any, tmp_path: Path) -> None:
    """Before deadline 0.51, ``--yes`` did not answer "Files were specified outside of the
    configured storage profile ... [y/N]": under system.callSystem nobody answers, and
    After Effects froze. The submit command's input is the null device."""
    fake = tmp_path / "deadline"
    fake.write_text("#!/usr/bin/env python3\nimport sys\n"
                    "answer = sys.stdin.readline()\n"
                    "print('answer:', repr(answer))\nsys.exit(0 if answer else 1)\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    cmd, version = js(["stmpoSubmitCommand", str(fake), str(tmp_path), False, ""],
                      ["stmpoVersionCommand", str(fake), False, ""])
    # After Effects' side of the pipe stays open and says nothing, as system.callSystem's
    proc = subprocess.Popen(cmd, shell=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        proc.wait(timeout=10)  # (the old command waited here for an answer)
        assert proc.stdout is not None
        out = proc.stdout.read()
    finally:
        proc.kill()
    assert "answer: ''" in out and "STMPO_SUBMIT_OK" not in out
    assert version.endswith("--version </dev/null 2>&1")


@needs_node
def test_names_fonts_conda_and_host_minimums(js: Any) -> None:
    from stmpo_celery.deadline._bigtask import host_minimums, with_host_minimums

    (clash, unique, same_family, conda, old, named, copies, kept_comp) = js(
        ["stmpoCompNameProblem", "Main", ["Main", "Other", "Main"]],
        ["stmpoCompNameProblem", "Main", ["Main", "Other"]],
        ["stmpoFontsToAttach", [{"name": "A-Regular", "path": "/f/FamA/Regular.otf"},
                                {"name": "B-Regular", "path": "/f/FamB/Regular.otf"}]],
        ["stmpoCondaPackagesFor", "25.1x3"],
        ["stmpoCondaPackagesFor", "unknown"],
        ["stmpoTemplateWithName", 'specificationVersion: x\nname: "old"\nsteps: []\n',
         'Shot "010": ü'],
        ["stmpoFontCopyNames", ["/f/FamA/Regular.otf", "/f/FamB/Regular.otf", "/f/c.ttf"]],
        ["stmpoParameterValues", {"comp": "Main ", "projectFile": "/p.aep"}, "image"])
    (snap, bare) = js(["stmpoSnapshotName", "Shot 010.v2.aep", "k3x"],
                      ["stmpoSnapshotName", "project", "k3x"])
    assert (snap, bare) == ("Shot 010.v2.stmpo-k3x.aep", "project.stmpo-k3x.aep")
    # a sequence is anything not a still and not a clip: 3D passes and camera raw too
    kinds = js(*[["stmpoIsSequenceFile", name, still] for name, still in (
        ("beauty_0001.rpf", False), ("raw_0001.dng", False), ("plate_0001.exr", False),
        ("a.mov", False), ("A001.R3D", False), ("logo.png", True), ("vo.wav", False))])
    assert kinds == [True, True, True, False, False, False, False]
    assert "2 comps are named 'Main'" in clash and "render-queue item" in clash
    assert unique == ""
    # two families' files of the same name: both attached, under names that do not clash
    assert same_family["attach"] == ["/f/FamA/Regular.otf", "/f/FamB/Regular.otf"]
    assert copies == ["Regular.otf", "2_Regular.otf", "c.ttf"]
    assert (conda, old) == ("aftereffects=25", "")
    assert yaml.safe_load(named)["name"] == 'Shot "010": ü'
    # a comp named with a trailing space is the name aerender must match, as typed
    assert {"name": "Comp", "value": "Main "} in kept_comp["values"]
    # the host requirements are stmpo bundle's own
    text = TEMPLATES["image"].read_text(encoding="utf-8")
    for settings, kind, slots, threads, ram in (
            ({"threadsPerSlot": "4", "ramPerProcessGB": "8"}, "image", 2, 4, 8.0),
            ({"mfr": "OFF"}, "image", 2, 8, 32.0), ({}, "movie", 1, 16, 32.0)):
        (got, rewritten) = js(["stmpoHostMinimums", settings, kind],
                              ["stmpoWithHostMinimums", text, 0, 0])
        assert (got["vcpu"], got["memory"]) == host_minimums(threads, ram, slots)
        (rewritten,) = js(["stmpoWithHostMinimums", text, got["vcpu"], got["memory"]])
        assert rewritten == with_host_minimums(text, got["vcpu"], got["memory"])

