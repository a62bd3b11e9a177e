"""The After Effects submitter (jsx/DeadlineCloudSubmitter_stmpo.jsx), checked outside AE.

ExtendScript cannot run here, so the JSX keeps every decision in plain ECMAScript 3
between ``// <pure>`` and ``// </pure>``. These tests read its one parameter table and
hold it against the real templates, and, when ``node`` is installed, run the pure helpers
(JSON writer, frame specs, template choice, parameter values, the submit command line)
and feed what they produce to openjd-model and a shell.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from openjd.model import create_job, decode_job_template, preprocess_job_parameters

ROOT = Path(__file__).resolve().parent.parent
JSX = ROOT / "jsx" / "DeadlineCloudSubmitter_stmpo.jsx"
TEXT = JSX.read_text(encoding="utf-8")
TEMPLATES = {"image": ROOT / "openjd_bundle" / "template.yaml",
             "big": ROOT / "openjd_bundle" / "big" / "template.yaml",
             "movie": ROOT / "openjd_bundle" / "movie" / "template.yaml"}
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")

_ROW = re.compile(r'\{field:\s*"(?P<field>\w+)",\s*param:\s*"(?P<param>\w+)",\s*'
                  r'kinds:\s*"(?P<kinds>[a-z ]+)",\s*type:\s*"(?P<type>[A-Z]+)"\}')


def table() -> list[dict[str, Any]]:
    block = re.search(r"var STMPO_PARAMETERS = \[(.*?)\n\];", TEXT, re.S)
    assert block, "the JSX has no STMPO_PARAMETERS table"
    rows = [m.groupdict() for m in _ROW.finditer(block.group(1))]
    # every non-comment line of the block is a row the regex understood
    lines = [ln for ln in block.group(1).splitlines() if ln.strip() and
             not ln.strip().startswith("//")]
    assert len(rows) == len(lines)
    for r in rows:
        r["kinds"] = set(r["kinds"].split())
    return rows


def template_params(kind: str) -> dict[str, str]:
    doc = yaml.safe_load(TEMPLATES[kind].read_text(encoding="utf-8"))
    return {p["name"]: p["type"] for p in doc["parameterDefinitions"]}


def pure_block() -> str:
    m = re.search(r"^// <pure>\n(.*?)^// </pure>$", TEXT, re.S | re.M)
    assert m, "the JSX has no // <pure> ... // </pure> block"
    return m.group(1)


# -- the parameter table against the templates -------------------------------------------------
def test_the_table_names_only_parameters_its_templates_define() -> None:
    rows = table()
    assert len({r["param"] for r in rows}) == len(rows)
    assert len({r["field"] for r in rows}) == len(rows)
    for kind in ("image", "big", "movie"):
        defined = template_params(kind)
        mine = {r["param"]: r["type"] for r in rows if kind in r["kinds"]}
        assert set(mine) <= set(defined), f"{kind}: not in the template: {set(mine) - set(defined)}"
        # ... and covers the template, with the same value types
        assert set(mine) == set(defined), f"{kind}: not in the table: {set(defined) - set(mine)}"
        for name, typ in mine.items():
            assert typ == defined[name], name


def test_image_only_parameters_are_not_offered_to_the_movie_bundle() -> None:
    image_only = set(template_params("image")) - set(template_params("movie"))
    assert image_only >= {"FramesPerTask", "Concurrency", "Schedule", "FailFast"}
    assert {r["param"] for r in table() if "movie" not in r["kinds"] and "image" in r["kinds"]
            } == image_only


def test_values_are_made_only_from_the_table() -> None:
    # the one place that creates a parameter value takes its name from a table row
    made = [m for m in re.findall(r"\{name:[^}]*\}", TEXT) if "value:" in m]
    assert made == ["{name: row.param, value: value}"]
    assert TEXT.count("parameterValues") == 1  # stmpoParameterValuesDocument


def test_templates_are_chosen_by_the_frame_token_like_stmpo() -> None:
    assert ('var STMPO_TEMPLATES = {image: "template.yaml", big: "big/template.yaml", '
            'movie: "movie/template.yaml"};') in TEXT
    assert r"/\[#+\]/.test(base)" in TEXT  # stmpo_celery.plan._pattern's rule: [#...] = sequence
    for rel in ("template.yaml", "big/template.yaml", "movie/template.yaml"):
        assert (ROOT / "openjd_bundle" / rel).is_file()


# -- what the JSX must never do ----------------------------------------------------------------
def test_no_pip_anywhere() -> None:
    assert not re.search(r"\bpip3?\b|ensurepip|python -m", TEXT, re.I)


def test_es3_only() -> None:
    code = re.sub(r"/\*.*?\*/", "", TEXT, flags=re.S)
    code = re.sub(r"^\s*//.*$", "", code, flags=re.M)
    code = re.sub(r'"(?:[^"\\\n]|\\.)*"', '""', code)  # string literals
    for pattern in (r"\blet\s", r"\bconst\s", r"=>", r"`", r"\.forEach\(", r"\.map\(",
                    r"\.filter\(", r"\.reduce\(", r"Object\.keys", r"\bJSON\.", r"\.trim\(",
                    r"Array\.isArray", r"\bclass\s", r"\.\.\.", r"#target", r"#include",
                    r",\s*\n\s*[\]}]"):
        assert not re.search(pattern, code), f"not ES3/ExtendScript-safe: {pattern}"


def test_files_are_written_as_utf8_and_the_submit_runs_the_deadline_cli() -> None:
    assert 'f.encoding = "UTF-8";' in TEXT
    assert "system.callSystem(cmd)" in TEXT
    assert '" bundle submit --yes --name "' in TEXT


def test_readme_covers_install_and_use() -> None:
    readme = (ROOT / "jsx" / "README.md").read_text(encoding="utf-8")
    for needed in ("ScriptUI Panels", "deadline bundle submit", "parameter_values.json",
                   "STMPO_PARAMETERS", "fonts", "Allow Scripts to Write Files"):
        assert needed in readme, needed


# -- the pure helpers, run by node -------------------------------------------------------------
_DRIVER = r"""
const fs = require("fs"), vm = require("vm");
const ctx = {};
vm.runInNewContext(fs.readFileSync(process.argv[2], "utf8"), ctx);
const calls = JSON.parse(fs.readFileSync(0, "utf8"));
const out = calls.map(function (c) {
  try { return {ok: ctx[c[0]].apply(null, c.slice(1))}; }
  catch (e) { return {error: String(e && e.message)}; }
});
process.stdout.write(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def js(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if NODE is None:
        pytest.skip("node is not installed")
    folder = tmp_path_factory.mktemp("jsx")
    (folder / "driver.js").write_text(_DRIVER)
    (folder / "pure.js").write_text(pure_block(), encoding="utf-8")

    def call(*calls: list[Any]) -> list[Any]:
        res = subprocess.run([str(NODE), str(folder / "driver.js"), str(folder / "pure.js")],
                             input=json.dumps(list(calls)), capture_output=True, text=True,
                             encoding="utf-8", timeout=30)
        assert res.returncode == 0, res.stderr
        results = json.loads(res.stdout)
        for c, r in zip(calls, results, strict=True):
            assert "error" not in r, f"{c[0]}: {r['error']}"
        return [r.get("ok") for r in results]

    return call


@needs_node
def test_the_whole_file_loads_outside_after_effects() -> None:
    # compiles as plain JavaScript and, without After Effects' `app`, builds no UI
    script = ("const fs=require('fs'),vm=require('vm');const c={};"
              "vm.runInNewContext(fs.readFileSync(process.argv[1],'utf8'),c);"
              "console.log(typeof c.stmpoBuildUI, typeof c.stmpoJsonString)")
    res = subprocess.run([str(NODE), "-e", script, str(JSX)], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["function", "function"]


NASTY = ['plain', 'quote " and back\\slash', "new\nline\r\ttab\b\f", "ctrl \x01\x1f \x7f",
         "Schrift ü é — 日本語 😀", "C:\\Users\\Zoë\\shots, v2\\[#####].png", "\u2028\u2029", ""]


@needs_node
def test_json_writer_escapes_everything_and_writes_ascii(js: Any) -> None:
    outs = js(*[["stmpoJsonString", s] for s in NASTY])
    for original, text in zip(NASTY, outs, strict=True):
        assert text.isascii(), text
        assert "\n" not in text and "\r" not in text
        assert json.loads(text) == original
    assert outs[1] == r'"quote \" and back\\slash"'
    assert outs[2] == r'"new\nline\r\ttab\b\f"'
    assert outs[4].startswith(r'"Schrift \u00fc \u00e9 \u2014 \u65e5\u672c\u8a9e \ud83d\ude00')
    (doc,) = js(["stmpoToJson", {"a": NASTY, "n": [1, 2.5, True, False, None], "e": {}, "l": []}])
    assert json.loads(doc) == {"a": NASTY, "n": [1, 2.5, True, False, None], "e": {}, "l": []}
    assert doc.isascii()


@needs_node
def test_template_choice_and_param_scan(js: Any) -> None:
    kinds = js(["stmpoKindFor", "shot_[#####].png"], ["stmpoKindFor", "shot.mov"],
               ["stmpoKindFor", "shot_[#].exr"], ["stmpoKindFor", "[####]/shot.mp4"],
               ["stmpoKindFor", "C:\\a [#]\\b.mov"], ["stmpoTemplateFor", "image"],
               ["stmpoTemplateFor", "movie"])
    assert kinds == ["image", "movie", "image", "movie", "movie", "template.yaml",
                     "movie/template.yaml"]
    for kind, path in TEMPLATES.items():
        (names,) = js(["stmpoTemplateParamNames", path.read_text(encoding="utf-8")])
        assert names == list(template_params(kind)), kind


@needs_node
@pytest.mark.parametrize(("mode", "rng", "typed", "kind", "spec", "error"), [
    ("workarea", {"first": 10, "last": 99}, "", "image", "10-99", ""),
    ("comp", {"first": 0, "last": 0}, "", "image", "0", ""),
    ("custom", None, " 1-10, 50 - 60 ,7", "image", "1-10,50-60,7", ""),
    ("custom", None, "-5--1", "image", "-5--1", ""),
    ("custom", None, "1-10,11-20", "movie", "1-20", ""),
    ("custom", None, "1-10,50-60", "movie", "", "one contiguous range"),
    ("custom", None, "10-1", "image", "", "ends before it starts"),
    ("custom", None, "1-a", "image", "", "is not a frame or range"),
    ("custom", None, "  ", "image", "", "no frames"),
    ("custom", None, "1-240:5", "image", "1-240:5", ""),  # OpenJD steps, as Deadline writes
    ("custom", None, "1,3,7-20:2", "image", "1,3,7-20:2", ""),
    ("custom", None, "1-20:2", "movie", "", "has a step"),
    ("custom", None, "1-20:0", "image", "", "step of 1 or more"),
])
def test_frame_specs(js: Any, mode: str, rng: Any, typed: str, kind: str, spec: str,
                     error: str) -> None:
    (res,) = js(["stmpoFrameSpec", mode, rng, typed, kind])
    if error:
        assert not res["ok"] and error in res["error"]
    else:
        assert res["ok"] and res["spec"] == spec


@needs_node
def test_frames_from_comp_times(js: Any) -> None:
    # 25 fps, work area 2 s long starting at 0.4 s, comp numbered from 1001
    assert js(["stmpoFramesFromTimes", 0.4, 2.0, 0.04, 1001],
              ["stmpoFramesFromTimes", 0, 10.01, 1 / 29.97, 0]) == [
        {"first": 1011, "last": 1060}, {"first": 0, "last": 299}]


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
    settings = {k: v for k, v in every_setting(tmp_path).items()
                if k in ("projectFile", "renderBy", "comp", "outputDir", "outputFileName",
                         "frames")}
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
    assert len(picked["skipped"]) == 3
    assert "Gone-Regular is missing on this machine" in picked["skipped"][2]
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
    name = 'Shot "010", 50% ü'
    plain, login, win = js(["stmpoSubmitCommand", str(fake), str(bundle), name, False, ""],
                           ["stmpoSubmitCommand", str(fake), str(bundle), name, False, "/bin/sh"],
                           ["stmpoSubmitCommand", "deadline", "C:\\b\\x y", name, True, ""])
    for cmd in (plain, login):
        record.unlink(missing_ok=True)
        res = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30,
                             env={**os.environ, "HOME": str(tmp_path)})
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip().endswith("STMPO_SUBMIT_OK")
        assert json.loads(record.read_text()) == ["bundle", "submit", "--yes", "--name", name,
                                                  str(bundle)]
    assert win == ('cmd.exe /d /c ""deadline" bundle submit --yes --name "Shot _010_, 50_ ü" '
                   '"C:\\b\\x y" 2>&1 && echo STMPO_SUBMIT_OK"')


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
             ["stmpoKindForFormat", "Some Plugin", "x_[####].dpx"])
    assert res[0] == []
    assert "is UNQUEUED, not queued" in res[1][0]
    assert "2 output modules" in res[2][0]
    assert "cannot be split" in res[3][0]
    assert "output module decides the format" in res[4][0]
    assert "Use comp frame number" in res[5][0]
    assert res[6:] == ["image", "movie", "image"]


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
    assert win == 'cmd.exe /d /c "start "" /b "deadline" bundle gui-submit "C:\\b\\x y""'


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
