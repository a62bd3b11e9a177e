"""`--help` teaches: every command ends with an example; every option says its default."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from stmpo_celery.cli._help import EXAMPLES, commands
from stmpo_celery.cli._main import cli

ALL = commands(cli)
#: commands whose options come from the shared settings table (checked with that table)
SETTINGS_TABLE = {"render", "plan", "config show", "bundle"}


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=lambda p: p or "stmpo")
def test_every_command_has_an_example(path: str) -> None:
    res = CliRunner().invoke(cli, [*path.split(), "--help"])
    assert res.exit_code == 0, res.output
    assert "Examples:\n" in res.output, res.output
    assert "  stmpo " in res.output.split("Examples:", 1)[1]


def test_the_table_has_no_stale_entry() -> None:
    assert set(EXAMPLES) == {p for p, _ in ALL}


@pytest.mark.parametrize("path", [p for p, c in ALL if p not in SETTINGS_TABLE and c.params],
                         ids=lambda p: p or "stmpo")
def test_every_option_has_help_and_its_default(path: str) -> None:
    cmd = dict(ALL)[path]
    ctx = click.Context(cmd, info_name=path or "stmpo")
    for p in cmd.params:
        if not isinstance(p, click.Option) or p.name in ("help", "version"):
            continue
        record = p.get_help_record(ctx)
        assert record is not None, p.name
        _decl, text = record
        assert text.strip(), f"{path} {p.opts[0]} has no help"
        assert "default:" in text, f"{path} {p.opts[0]} does not say its default: {text!r}"


def test_config_show_says_what_auto_means_on_this_host() -> None:
    import json

    out = CliRunner().invoke(cli, ["config", "show"]).output
    lines = {ln.split()[0]: ln for ln in out.splitlines()}
    assert "= auto: 16 (MFR on)" in lines["threads_per_slot"]
    assert "= auto: 600 s, or 3x the slowest frame" in lines["stall_timeout"]
    assert "= auto: " in lines["concurrency"] and "slot(s) on this host" in lines["concurrency"]
    assert "= " not in lines["retries"]
    off = CliRunner().invoke(cli, ["config", "show", "--no-mfr", "--json"]).output
    data = json.loads(off)
    assert data["threads_per_slot"]["means"] == "auto: 8 (MFR off)"
    assert "means" not in data["mfr"]
    # what auto means for each schedule, as the planner takes it (it said "from the slot
    # count and launch cost" for every one, and the launch cost enters none)
    for schedule, words in (("fixed", "four chunks per slot"), ("guided", "down to 1 frame"),
                            ("adaptive", "a stolen tail may be 1 frame")):
        got = json.loads(CliRunner().invoke(cli, ["config", "show", "--schedule", schedule,
                                                  "--json"]).output)
        assert words in got["chunk_size"]["means"], got["chunk_size"]
