"""The After Effects submitter (jsx/DeadlineCloudSubmitter_stmpo.jsx), checked outside AE.

ExtendScript cannot run here, so the JSX keeps every decision in plain ECMAScript 3
between ``// <pure>`` and ``// </pure>``. These tests read its one parameter table and
hold it against the real templates, and, when ``node`` is installed, run the pure helpers
(JSON writer, frame specs, template choice). What they submit is checked in
``test_jsx_submit.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
from jsxlib import JSX, NODE, ROOT, TEMPLATES, TEXT, needs_node, node_caller, table, template_params


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
    assert '" bundle submit --yes " + q(bundleDir)' in TEXT


def test_readme_covers_install_and_use() -> None:
    readme = (ROOT / "jsx" / "README.md").read_text(encoding="utf-8")
    for needed in ("ScriptUI Panels", "deadline bundle submit", "parameter_values.json",
                   "STMPO_PARAMETERS", "fonts", "Allow Scripts to Write Files"):
        assert needed in readme, needed


# -- the pure helpers, run by node -------------------------------------------------------------
@pytest.fixture(scope="module")
def js(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return node_caller(tmp_path_factory)


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
    ("custom", None, " 1-10, 50 - 60 ,70", "image", "1-10,50-60,70", ""),
    ("custom", None, "-5--1", "image", "-5--1", ""),
    ("custom", None, "1-10,11-20", "movie", "1-20", ""),
    ("custom", None, "1-10,50-60", "movie", "", "one contiguous range"),
    ("custom", None, "10-1", "image", "", "ends before it starts"),
    ("custom", None, "1-a", "image", "", "is not a frame or range"),
    ("custom", None, "  ", "image", "", "no frames"),
    ("custom", None, "1-240:5", "image", "1-240:5", ""),  # OpenJD steps, as Deadline writes
    ("custom", None, "1,3,7-20:2", "image", "1,3,7-20:2", ""),
    ("custom", None, "1-20:2", "movie", "", "has a step"),
    ("custom", None, "1-20:0", "image", "", "step of 0"),
    # as OpenJD reads them (Deadline refuses the job otherwise), and as stmpo render does
    ("custom", None, "3-1:-1", "image", "3-1:-1", ""),  # counting down
    ("custom", None, "1-3:-1", "image", "", "counts down but ends above its start"),
    ("custom", None, "1-10,5-8", "image", "", "frame 5 is listed twice"),
    ("custom", None, "1-10:2,2-3", "image", "", "frame 3 is listed twice"),
    ("custom", None, "1-1000000000", "image", "", "more than 1000000 frames"),
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
