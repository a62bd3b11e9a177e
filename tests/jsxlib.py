"""Shared by the submitter's tests: the JSX, its parameter table, the templates it
fills, and a way to call its pure helpers with node."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

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


def node_caller(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., list[Any]]:
    """``call([name, *args], ...)`` -> the pure helpers' results, run by node (skips the
    test where node is not installed)."""
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
