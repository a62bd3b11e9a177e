"""One settings table drives the CLI, ``config show``, the bundle and validation; every
tunable number lives in the defaults and editing one changes behaviour."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from stmpo_celery.config import _settings as settings
from stmpo_celery.config import defaults
from stmpo_celery.config._options import RenderOptions
from stmpo_celery.config._settings import SETTINGS, Command, Setting, for_command
from stmpo_celery.errors import BadInput

BUNDLE = Path(__file__).resolve().parent.parent / "openjd_bundle"


def reload_cli() -> Any:
    from stmpo_celery.cli import _bundle, _config, _main, _plan

    for module in (_bundle, _config, _plan):  # their options are made from the table
        importlib.reload(module)
    return importlib.reload(_main)


@pytest.fixture
def extra_setting(monkeypatch: pytest.MonkeyPatch) -> Iterator[Setting]:
    """A setting added in one place: the table."""
    new = Setting("slot_nice", int, 5, "Nice value of every slot.", "STMPO_SLOT_NICE",
                  minimum=0, maximum=19, bundle="SlotNice")
    monkeypatch.setitem(SETTINGS, new.name, new)
    yield new
    monkeypatch.delitem(SETTINGS, new.name)
    reload_cli()


def test_a_setting_added_to_the_table_appears_everywhere(
        extra_setting: Setting, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli_main = reload_cli()
    from stmpo_celery.cli._bundle import bundle_command

    runner = CliRunner()
    for argv in (["render", "--help"], ["plan", "--help"], ["config", "show", "--help"]):
        out = runner.invoke(cli_main.cli, argv).output
        assert "--slot-nice" in out and "STMPO_SLOT_NICE" in out and "default: 5" in out, argv
    assert "--slot-nice" in runner.invoke(bundle_command, ["--help"]).output
    # config show: default, then environment, then flag, each named as the source
    shown = json.loads(runner.invoke(cli_main.cli, ["config", "show", "--json"]).output)
    assert shown["slot_nice"] == {"value": 5, "source": "default"}
    monkeypatch.setenv("STMPO_SLOT_NICE", "7")
    shown = json.loads(runner.invoke(cli_main.cli, ["config", "show", "--json"]).output)
    assert shown["slot_nice"] == {"value": 7, "source": "$STMPO_SLOT_NICE"}
    res = runner.invoke(cli_main.cli, ["config", "show", "--json", "--slot-nice", "3"])
    assert json.loads(res.output)["slot_nice"] == {"value": 3, "source": "--slot-nice"}
    # a profile key of that name is accepted
    prof = tmp_path / "p.toml"
    prof.write_text("slot_nice = 2\n")
    monkeypatch.delenv("STMPO_SLOT_NICE")
    assert settings.resolve({}, str(prof))["slot_nice"] == (2, "profile p")
    # the bundle writes it as its parameter, checked by the same range
    from stmpo_celery.deadline._bundle import plan_bundle

    (tmp_path / "a.aep").write_text("aep")
    kw = {"project": str(tmp_path / "a.aep"), "comp": "C", "frames": "1-10",
          "output": str(tmp_path / "o_[##].png"), "slot_nice": 4}
    assert plan_bundle(kw).values["SlotNice"] == "4"
    with pytest.raises(BadInput, match="--slot-nice is 40: use a value from 0 to 19"):
        plan_bundle({**kw, "slot_nice": 40})


def test_every_setting_reaches_the_render() -> None:
    """A setting the render never receives would be a knob that does nothing."""
    fields = {f.name for f in dataclasses.fields(RenderOptions)}
    assert set(SETTINGS) <= fields


def test_plan_offers_only_what_changes_a_plan() -> None:
    from stmpo_celery.cli._plan import plan_cmd

    names = {p.name for p in plan_cmd.params if isinstance(p, click.Option)}
    for gone in ("fail_fast", "skip_existing", "retries", "stall_timeout", "broker",
                 "log_dir", "spawn_delay"):
        assert gone not in names
    assert {"concurrency", "mfr", "schedule", "numa_map"} <= names


def test_bundle_parameters_are_the_tables_and_the_template_exports_them() -> None:
    template = yaml.safe_load((BUNDLE / "template.yaml").read_text(encoding="utf-8"))
    params = {p["name"] for p in template["parameterDefinitions"]}
    exported = " ".join(json.dumps(e) for e in template["jobEnvironments"])
    for s in for_command(Command.BUNDLE):
        assert s.bundle in params, s.name
        assert f"{s.env}={{{{Param.{s.bundle}}}}}" in exported, s.name


@pytest.mark.parametrize(("name", "value", "words"), [
    ("spawn_delay", float("inf"), "finite"),
    ("launch_cost", float("nan"), "finite"),
    ("max_concurrency", 0, "more than zero"),
    ("mfr_max_cpu", 101, "percentage from 1 to 100"),
    ("schedule", "fastest", "is unknown: use one of adaptive"),
    ("retries", -1, "zero or more"),
])
def test_the_table_refuses_out_of_range_values(name: str, value: Any, words: str) -> None:
    with pytest.raises(BadInput, match=re.escape(words)):
        SETTINGS[name].check(value)


def test_non_finite_text_is_refused_where_settings_are_read() -> None:
    with pytest.raises(BadInput, match="finite number"):
        settings.resolve({}, env={"STMPO_SPAWN_DELAY": "inf"})


def test_editing_a_default_changes_behaviour(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two tunables read from the defaults where they act, not copied."""
    from stmpo_celery.aerender._argv import RenderTarget
    from stmpo_celery.plan._sizing import default_threads_per_slot
    from stmpo_celery.slot._spec import RunSpec

    target = RenderTarget(project="p.aep", output="o_[#].png", comp="C")

    def spec() -> RunSpec:
        return RunSpec(run_id="r", host="h", queue="q", broker_url="redis://x", aerender="a",
                       target=target, log_dir="/tmp")

    assert spec().stall_floor == defaults.STALL_FLOOR_S
    monkeypatch.setattr(defaults, "STALL_FLOOR_S", 42.0)
    assert spec().stall_floor == 42.0
    assert default_threads_per_slot(True) == defaults.THREADS_PER_SLOT_MFR
    monkeypatch.setattr(defaults, "THREADS_PER_SLOT_MFR", 6)
    assert default_threads_per_slot(True) == 6
