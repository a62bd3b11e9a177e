"""The bad-input catalogue of the commands other than render: one clear line, a documented
exit code, nothing started and nothing left behind (in process)."""

from __future__ import annotations

import pytest
from conftest import Farm

#: (id, argv, env, code, words): commands other than render, in process
OTHER_COMMANDS: list[tuple[str, list[str], dict[str, str], int, list[str]]] = [
    ("status-interval-huge", ["status", "--interval", "1e10"], {}, 2, ["at most 86400"]),
    ("farm-worker-loglevel", ["farm", "worker", "--loglevel", "bogus",
                              "--farm", "redis://127.0.0.1:1/0"], {}, 2, ["--loglevel"]),
    ("farm-flower-log-dir-file", ["farm", "flower", "--log-dir", "AFILE",
                                  "--farm", "redis://127.0.0.1:1/0"], {}, 2, ["not a folder"]),
    ("farm-flower-no-redis", ["farm", "flower", "--log-dir", "TMP",
                              "--farm", "redis://127.0.0.1:1/0"], {}, 3, ["does not answer"]),
    ("demo-dir-uncreatable", ["demo", "--dir", "/proc/stmpo-demo"], {}, 2, ["--dir", "cannot"]),
    ("fonts-session-not-text", ["fonts", "install", "--from", "TMP", "--session", "\udcff"], {},
     2, ["not UTF-8"]),
    ("host-up-flower-auth-alone", ["host", "up", "--flower-auth", "a:b"], {}, 2,
     ["--flower-auth only applies to Flower", "add --flower"]),
    ("bundle-aerender-blank", ["bundle", "--project", "PROJECT", "--comp", "Main Comp",
                               "--frames", "1-4", "--output", "TMP/o_[####].png",
                               "--aerender", "  ", "--dest", "TMP/bundle"], {}, 2,
     ["--aerender is empty"]),
    ("bundle-output-empty", ["bundle", "--project", "PROJECT", "--comp", "Main Comp",
                             "--frames", "1-4", "--output", "", "--dest", "TMP/bundle"], {}, 2,
     ["--output is empty"]),
    ("versions-list-blank", ["versions", "list", ""], {}, 2, ["SHOT_DIR is empty"]),
    ("versions-list-farm-silent", ["versions", "list", "TMP", "--farm", "redis://127.0.0.1:1/0"],
     {}, 3, ["does not answer"]),
    ("farm-submit-max-retries", ["farm", "submit", "TMP", "--max-retries", "99999999999"], {}, 2,
     ["--max-retries", "0-100"]),
    # bad input, not an unreachable farm: checked before the farm is contacted
    ("farm-submit-priority-farm-silent", ["farm", "submit", "TMP", "--priority", "500",
                                          "--farm", "redis://127.0.0.1:1/0"], {}, 2,
     ["--priority 500", "0-100"]),
    ("farm-submit-publish-empty-farm-silent", ["farm", "submit", "TMP", "--publish", " ",
                                               "--farm", "redis://127.0.0.1:1/0"], {}, 2,
     ["--publish is empty"]),
    ("status-broker-empty", ["status", "--broker", "", "--once"], {}, 2, ["--broker is empty"]),
    ("status-interval-once", ["status", "--once", "--interval", "5"], {}, 2,
     ["--interval does nothing with --once"]),
    ("plan-comp-empty", ["plan", "--frames", "1-2", "--project", "PROJECT", "--comp", ""], {},
     2, ["--comp is empty"]),
    ("plan-rqindex-zero", ["plan", "--frames", "1-2", "--project", "PROJECT", "--rqindex", "0"],
     {}, 2, ["start at 1"]),
    ("demo-refused-leaves-nothing", ["demo", "--dir", "TMP/demo"],
     {"STMPO_START_METHOD": "bogus"}, 2, ["bogus"]),
    ("config-show-profile-empty", ["config", "show", "--profile", ""], {}, 2,
     ["--profile is empty"]),
    ("config-show-flower-auth", ["config", "show"], {"STMPO_FLOWER_AUTH": "nocolon"}, 2,
     ["must be user:password"]),
    ("render-log-dir-blank", ["RENDER", "--log-dir", " "], {}, 2, ["blank"]),
]


@pytest.mark.parametrize("case", OTHER_COMMANDS, ids=[c[0] for c in OTHER_COMMANDS])
def test_bad_input_to_other_commands_is_one_line(
        farm: Farm, case: tuple, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Each ended in a traceback, or started anyway (a Flower on a farm Redis that does
    not answer, logs in a folder named ' ')."""
    from stmpo_celery.cli import main
    from stmpo_celery.orchestrator import Run

    def reached(*_a: object, **_k: object) -> None:
        raise AssertionError("bad input got past validation")

    monkeypatch.setattr(Run, "execute", reached)
    name, argv, env, code, words = case
    afile = farm.tmp / "afile"
    afile.write_text("a file")
    places = {"AFILE": str(afile), "TMP": str(farm.tmp), "PROJECT": str(farm.project)}
    argv = [places.get(a, a.replace("TMP/", f"{farm.tmp}/")) for a in argv]
    if argv[:1] == ["RENDER"]:  # a render whose only fault is the one given after
        argv = farm.argv(*argv[1:])[3:]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    out = capsys.readouterr()
    assert int(stop.value.code or 0) == code, out.out + out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), out.err
    assert "Traceback" not in out.out + out.err
    assert not [p.name for p in farm.tmp.iterdir() if p.name in (" ", "bundle", "demo")]
