"""Reading real projects (built with py-aep): `stmpo inspect`, and what `stmpo bundle`
refuses, attaches and warns about from what it reads."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from aeplib import build_project
from bundlelib import BIN, BUNDLE, job_for
from click.testing import CliRunner

from stmpo_celery.cli._bundle import bundle_command
from stmpo_celery.deadline._project import read_project
from stmpo_celery.errors import BadInput


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_project(tmp_path_factory.mktemp("aep"))


def test_read_project_reports_comps_queue_outputs_footage_and_fonts(project: Path) -> None:
    info = read_project(project)
    comps = {c.name: c for c in info.comps}
    assert comps["Main Comp"].frame_rate == 24 and comps["Main Comp"].frames == 240
    assert comps["Edit"].frame_rate == 25 and comps["Edit"].frames == 125
    assert comps["Main Comp"].display_start_frame == 0
    assert comps["Main Comp"].work_area_frames == 240
    q = info.queue
    assert [(i.index, i.comp, i.status) for i in q] == [
        (1, "Main Comp", "QUEUED"), (2, "Edit", "QUEUED"), (3, "Edit", "UNQUEUED"),
        (4, "Main Comp", "QUEUED"), (5, "Main Comp", "QUEUED")]
    assert [(o.format, o.sequence) for o in q[0].outputs] == [("PNG Sequence", True)]
    assert [(o.format, o.sequence) for o in q[1].outputs] == [("QuickTime", False)]
    assert q[0].outputs[0].file.endswith("main_[#####].png")
    assert len(q[3].outputs) == 2
    assert q[4].outputs[0].use_comp_frame_number is False
    foot = {Path(f.path).name: f for f in info.footage}
    assert foot["plates"].sequence and not foot["plates"].missing
    assert not foot["logo.png"].missing and foot["gone.png"].missing
    assert info.fonts and all(isinstance(f, str) for f in info.fonts)  # the text layer's


def test_inspect_command_text_and_json(project: Path) -> None:
    res = subprocess.run([str(BIN / "stmpo"), "inspect", str(project)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "QuickTime (movie) -> " in res.stdout and "PNG Sequence (image sequence)" in res.stdout
    assert "gone.png  MISSING" in res.stdout and "sequence folder" in res.stdout
    res = subprocess.run([str(BIN / "stmpo"), "inspect", str(project), "--json"],
                         capture_output=True, text=True, timeout=60)
    data = json.loads(res.stdout)
    assert {c["name"] for c in data["comps"]} == {"Main Comp", "Edit"}
    assert data["queue"][1]["outputs"][0]["sequence"] is False
    assert [f["missing"] for f in data["footage"] if f["path"].endswith("gone.png")] == [True]


def test_inspect_refuses_what_is_not_a_project(tmp_path: Path) -> None:
    bad = tmp_path / "x.aep"
    bad.write_text("not a project")
    res = subprocess.run([str(BIN / "stmpo"), "inspect", str(bad)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "is not an After Effects project" in res.stderr and "save" in res.stderr
    bad.write_bytes(b"RIFX\x00\x00\x00\x0bEgg!garbage")  # a header, then nonsense
    res = subprocess.run([str(BIN / "stmpo"), "inspect", str(bad)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "cannot be read as an After Effects project" in res.stderr
    assert "save it again" in res.stderr and "Traceback" not in res.stderr
    # a copy cut short (or zero-filled) whose header announces 4 GB: refused at once,
    # not parsed for minutes through gigabytes of memory
    with open(bad, "wb") as fh:
        fh.write(b"RIFX\xff\xff\xff\xf0Egg!")
        fh.truncate(64 * 1024 ** 2)
    t0 = time.monotonic()
    res = subprocess.run([str(BIN / "stmpo"), "inspect", str(bad)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and "is cut short" in res.stderr, res.stderr
    assert time.monotonic() - t0 < 10


def bundle(project: Path, tmp: Path, *args: str) -> Any:
    return CliRunner().invoke(bundle_command, ["--project", str(project), "--dest",
                                               str(tmp / "b"), "--force", *args],
                              catch_exceptions=True)


def test_bundle_attaches_footage_and_warns_about_missing_footage_and_fonts(
        project: Path, tmp_path: Path) -> None:
    res = bundle(project, tmp_path, "--rqindex", "1", "--frames", "0-239",
                 "--output", str(tmp_path / "o" / "s_[#####].png"))
    assert res.exit_code == 0, res.output
    refs = json.loads((tmp_path / "b" / "asset_references.json").read_text())["assetReferences"]
    assert refs["inputs"]["directories"] == [str(project.parent / "plates")]
    assert refs["inputs"]["filenames"] == [str(project), str(project.parent / "logo.png")]
    assert "gone.png" in res.output and "missing on this machine" in res.output
    assert "font(s) not attached" in res.output
    values = json.loads((tmp_path / "b" / "parameter_values.json").read_text())
    v = {p["name"]: str(p["value"]) for p in values["parameterValues"]}
    job_for(tmp_path / "b" / "template.yaml", v, tmp_path)


def test_bundle_movie_item_as_a_movie(project: Path, tmp_path: Path) -> None:
    res = bundle(project, tmp_path, "--rqindex", "2", "--frames", "0-124",
                 "--output", str(tmp_path / "o" / "edit.mov"))
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(("args", "message"), [
    (["--comp", "Main comp"], "comp 'Main comp' is not in"),
    (["--rqindex", "9"], "render-queue item 9 is not in"),
    (["--rqindex", "3"], "is UNQUEUED, not QUEUED"),
    (["--rqindex", "4"], "has 2 output modules"),
    (["--rqindex", "2"], "writes QuickTime (a movie), which cannot be split"),
    (["--rqindex", "5"], "'Use comp frame number'"),
])
def test_bundle_refuses_what_aerender_would_render_wrong(project: Path, tmp_path: Path,
                                                         args: list[str], message: str) -> None:
    res = bundle(project, tmp_path, *args, "--frames", "1-20",
                 "--output", str(tmp_path / "o" / "s_[#####].png"))
    assert isinstance(res.exception, BadInput), res.output
    assert message in res.exception.message and "\n" not in res.exception.message
    assert not (tmp_path / "b").exists()  # nothing written


def test_bundle_refusal_is_exit_2_and_one_line(project: Path, tmp_path: Path) -> None:
    res = subprocess.run([str(BIN / "stmpo"), "bundle", "--project", str(project), "--rqindex",
                          "2", "--frames", "1-20", "--output", str(tmp_path / "s_[####].png"),
                          "--dest", str(tmp_path / "b")], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "cannot be split across tasks and slots" in res.stderr


def test_bundle_sequence_module_with_a_movie_name_is_refused(project: Path,
                                                             tmp_path: Path) -> None:
    res = bundle(project, tmp_path, "--rqindex", "1", "--frames", "1-20",
                 "--output", str(tmp_path / "o" / "main.mov"))
    assert isinstance(res.exception, BadInput)
    assert "the output module decides the format" in res.exception.message


def test_simulator_refuses_a_comp_that_is_not_in_a_project_it_can_read(
        project: Path, tmp_path: Path) -> None:
    from conftest import FAKE

    out = tmp_path / "o"
    out.mkdir()

    def run(*target: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FAKE, "-project", str(project), *target, "-s", "1", "-e", "2",
                               "-output", str(out / "f_[####].png"), "-mfr", "OFF", "100"],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "STMPO_FAKE_STARTUP": "0",
                                   "STMPO_FAKE_FRAME_COST": "0"})
    bad = run("-comp", "Main comp")
    assert bad.returncode == 0  # exit 0, as After Effects does: the log must catch it
    assert "aerender ERROR: No comp was found with the given name." in bad.stdout
    assert not list(out.iterdir())
    good = run("-comp", "Main Comp")
    assert good.returncode == 0 and "aerender ERROR" not in good.stdout
    assert sorted(p.name for p in out.iterdir()) == ["f_0001.png", "f_0002.png"]
    assert "does not exist" in run("-rqindex", "9").stdout


@pytest.mark.parametrize(("rqindex", "template", "name"), [
    ("1", "template.yaml", "main_[#####].png"),  # PNG sequence module: the image bundle
    ("2", "movie/template.yaml", "edit.mov"),  # QuickTime module: the movie bundle
])
def test_bundle_picks_sequence_or_movie_from_the_output_module(
        project: Path, tmp_path: Path, rqindex: str, template: str, name: str) -> None:
    res = bundle(project, tmp_path, "--rqindex", rqindex, "--frames", "0-99")
    assert res.exit_code == 0, res.output
    assert f"template {BUNDLE / template}" in res.output
    values = json.loads((tmp_path / "b" / "parameter_values.json").read_text())
    v = {p["name"]: str(p["value"]) for p in values["parameterValues"]}
    assert v["OutputFileName"] == name and v["OutputDir"] == str(project.parent / "renders")


def test_bundle_without_output_and_no_module_file_is_refused(project: Path,
                                                            tmp_path: Path) -> None:
    res = bundle(project, tmp_path, "--rqindex", "4", "--frames", "1-10")
    assert isinstance(res.exception, BadInput)
    assert "pass --output" in res.exception.message


@pytest.mark.parametrize(("args", "first"), [
    (["--comp", "Main Comp", "--frames", "1-240"], 240),  # one past the end of 0-239
    (["--comp", "Main Comp", "--frames", "5000-5010"], 5000),
    (["--rqindex", "1", "--frames", "-3-10"], -3),
])
def test_bundle_refuses_frames_outside_the_comp(project: Path, tmp_path: Path,
                                                args: list[str], first: int) -> None:
    res = bundle(project, tmp_path, *args, "--output", str(tmp_path / "o" / "s_[#####].png"))
    assert res.exit_code != 0 and isinstance(res.exception, BadInput), res.output
    assert "reaches past comp 'Main Comp', whose frames are 0-239" in str(res.exception)
    assert f"first {first};" in str(res.exception)
    assert not (tmp_path / "b").exists()


def test_bundle_refuses_a_comp_name_two_comps_share(tmp_path: Path) -> None:
    """aerender -comp takes a name; two comps with it cannot be told apart (which one it
    renders is not said anywhere): refused, with the way out."""
    import py_aep

    app = py_aep.new()
    for seconds in (10.0, 5.0):
        app.project.root_folder.add_comp("Main", 320, 240, 1.0, seconds, 24.0)
    path = tmp_path / "twins.aep"
    app.project.save(path)
    res = bundle(path, tmp_path, "--comp", "Main", "--frames", "0-23",
                 "--output", str(tmp_path / "o" / "s_[####].png"))
    assert res.exit_code != 0, res.output
    assert "2 comps" in str(res.exception) and "--rqindex" in str(res.exception)


@pytest.mark.parametrize("fmt, file, sequence", [
    ("OpenEXR Sequence", "x.mov", True), ("PNG Sequence", "a_[####].png", True),
    ("QuickTime", "a_[####].mov", False), ("MXF OP1a", "a_[####].mxf", False),
    ("H.265", "a.mp4", False), ("Some Plugin", "a_[####].dpx", True),
    ("Some Plugin", "a.bin", False)])
def test_an_output_modules_format_decides_sequence_or_movie(fmt: str, file: str,
                                                           sequence: bool) -> None:
    """A movie container named with a frame token (MXF OP1a, a plug-in's ProRes) was
    taken for an image sequence and split across tasks, each writing over one file."""
    from stmpo_celery.deadline._project import _is_sequence

    assert _is_sequence(fmt, file) is sequence
