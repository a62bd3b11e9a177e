"""The docker-compose demo farm (docker/), checked without a Docker engine.

compose.yaml is read with PyYAML; every stmpo command line in it is parsed by the real
click command line and its STMPO_* environment resolved like `stmpo render` does; the
`openjd run` host's parameters are decoded against the job template; the Dockerfile's
COPY sources must exist and survive its .dockerignore; render-loop is run for real.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from openjd.model import create_job, decode_job_template, preprocess_job_parameters

from stmpo_celery.cli import _main as cli_mod

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
RENDER_HOSTS = [n for n in SERVICES if n != "redis"]
_VAR = re.compile(r"\$\{(?P<name>\w+)(?::?[-?](?P<default>[^}]*))?\}")


def interpolate(text: str) -> str:
    """What compose makes of ${VAR:-default} with an empty environment ($$ -> $)."""
    out = _VAR.sub(lambda m: m.group("default") or "", text)
    return out.replace("$$", "$")


def command(name: str) -> list[str]:
    cmd = SERVICES[name]["command"]
    args = shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]
    return [interpolate(a) for a in args]


def environment(name: str) -> dict[str, str]:
    env = SERVICES[name].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def stmpo_args(name: str) -> list[str]:
    args = command(name)
    assert args[0] == "render-loop", name
    assert args[1] == "stmpo", name
    return args[2:]


def parse_cli(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``stmpo ARGS`` with the real click commands, without running anything."""
    cmd: click.Command = cli_mod.cli
    ctx = click.Context(cmd, info_name="stmpo")
    path: list[str] = []
    rest = list(args)
    while isinstance(cmd, click.Group):
        assert rest, f"stmpo {' '.join(path)}: no subcommand"
        sub = cmd.get_command(ctx, rest[0])
        assert sub is not None, f"stmpo has no command {' '.join([*path, rest[0]])}"
        path.append(rest.pop(0))
        cmd = sub
        if isinstance(sub, click.Group):
            ctx = click.Context(sub, info_name=path[-1], parent=ctx)
    leaf = cmd.make_context(path[-1], rest, parent=ctx)
    assert not leaf.args, f"stmpo {' '.join(path)}: unexpected arguments {leaf.args}"
    return " ".join(path), leaf.params


# -- services, volumes, environment ----------------------------------------------------------
def test_services_and_volumes() -> None:
    assert {"redis", "flower"} <= set(SERVICES)
    hosts = [n for n in SERVICES if re.fullmatch(r"render-host-\d+", n)]
    assert 2 <= len(hosts) <= 3
    assert "renders" in COMPOSE["volumes"]
    for name in RENDER_HOSTS:
        svc = SERVICES[name]
        assert "renders:/renders" in svc["volumes"], name
        assert svc["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc["init"] is True  # orphans reaped, signals passed on
        assert re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", interpolate(svc["cpuset"])), name
        assert command(name)[0] == "render-loop"


def test_redis_is_official_with_a_password_from_the_environment() -> None:
    redis = SERVICES["redis"]
    assert redis["image"].startswith("redis:")
    assert "${REDIS_PASSWORD" in str(redis["environment"]["REDIS_PASSWORD"])
    assert '--requirepass "$$REDIS_PASSWORD"' in " ".join(redis["command"])
    assert "$$REDIS_PASSWORD" in " ".join(redis["healthcheck"]["test"])
    assert "ports" not in redis  # only the farm's network reaches it
    password = environment("redis")["REDIS_PASSWORD"]
    for name in RENDER_HOSTS:  # every host uses that password, from its environment
        url = environment(name)["STMPO_BROKER_URL"]
        assert url == f"redis://:{password}@redis:6379/0", name
        assert password not in " ".join(command(name)), "no password on a command line"


def test_flower_is_per_run_and_honest_about_it() -> None:
    # every key of a run carries its prefix: a plain Flower on the Redis would see nothing
    app_src = (ROOT / "stmpo_celery" / "broker" / "_app.py").read_text(encoding="utf-8")
    assert '"global_keyprefix": prefix' in app_src
    flower = SERVICES["flower"]
    _, params = parse_cli(stmpo_args("flower"))
    host, _, port = params["flower"].rpartition(":")
    assert host == "0.0.0.0" and port == "5555"
    auth = environment("flower")["STMPO_FLOWER_AUTH"]
    user, _, password = auth.partition(":")
    assert user and password and " " not in auth  # required off loopback
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    compose_text = (DOCKER / "compose.yaml").read_text(encoding="utf-8")
    assert "sees no stmpo run at all" in compose_text
    readme = (DOCKER / "README.md").read_text(encoding="utf-8")
    assert "stmpo render --flower" in readme and "global_keyprefix" in readme


# -- the command lines are the real CLI's ------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in RENDER_HOSTS if command(n)[1] == "stmpo"])
def test_stmpo_commands_parse_and_resolve(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sub, params = parse_cli(stmpo_args(name))
    assert sub == "render"
    assert params["aerender"] == "stmpo-fake-aerender"
    assert params["project"] == "/opt/stmpo-demo/demo.aep"
    assert params["output"].startswith("/renders/") and "[#####]" in params["output"]
    assert params["broker"] is None  # from STMPO_BROKER_URL
    for key in [k for k in os.environ if k.startswith("STMPO_")]:
        monkeypatch.delenv(key)
    for key, value in environment(name).items():
        monkeypatch.setenv(key, value)
    resolved = cli_mod._resolved(params)  # what stmpo render would use, with its sources
    assert resolved["broker"][0] == environment(name)["STMPO_BROKER_URL"]
    assert resolved["ram_per_process_gb"][0] == 1.0
    assert resolved["threads_per_slot"][0] == 1
    options = cli_mod._options_from(params)
    assert options.concurrency == params["concurrency"]


def test_unknown_options_would_be_caught() -> None:
    with pytest.raises(click.UsageError):
        parse_cli(["render", "--project", "p", "--frames", "1", "--output", "o", "--brokr", "x"])


def test_the_image_default_command_parses() -> None:
    cmd = re.search(r"^CMD (\[.*\])$", (DOCKER / "Dockerfile").read_text(), re.M)
    assert cmd
    args = yaml.safe_load(cmd.group(1))
    assert args[0] == "stmpo"
    sub, params = parse_cli(args[1:])
    assert sub == "demo" and params["directory"].startswith("/renders")


def test_openjd_host_runs_the_shipped_bundle_with_defined_parameters(tmp_path: Path) -> None:
    hosts = [n for n in RENDER_HOSTS if command(n)[1] == "openjd"]
    assert hosts, "one render host runs the job bundle through openjd run"
    args = command(hosts[0])[2:]
    assert args[0] == "run"
    template_in_image = args[1]
    # pip installs openjd_bundle/*.yaml to <prefix>/share/stmpo-celery/openjd_bundle/
    assert template_in_image == "/usr/local/share/stmpo-celery/openjd_bundle/template.yaml"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"share/stmpo-celery/openjd_bundle" = ["openjd_bundle/*.yaml"' in pyproject
    template_path = ROOT / "openjd_bundle" / "template.yaml"
    doc = yaml.safe_load(template_path.read_text(encoding="utf-8"))
    rest = args[2:]
    step = rest[rest.index("--step") + 1]
    assert step in [s["name"] for s in doc["steps"]]
    values = dict(rest[i + 1].split("=", 1) for i, a in enumerate(rest) if a == "-p")
    defined = {p["name"] for p in doc["parameterDefinitions"]}
    assert set(values) <= defined
    assert values["AerenderPath"] == "stmpo-fake-aerender"
    template = decode_job_template(template=doc, supported_extensions=["TASK_CHUNKING"])
    params = preprocess_job_parameters(job_template=template, job_parameter_values=values,
                                       job_template_dir=template_path.parent,
                                       current_working_dir=tmp_path)
    create_job(job_template=template, job_parameter_values=params)


# -- the image ----------------------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    result = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        if fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p.rstrip("/*") + "/*") or \
                (p.endswith("/**") and rel.startswith(p[:-3] + "/")) or p == "**" or \
                (p.startswith("**/") and fnmatch.fnmatch(Path(rel).name, p[3:])):
            result = not neg
    return result


def test_dockerfile_copies_existing_sources_and_runs_as_a_user() -> None:
    ins = dockerfile_instructions()
    assert ins[0] == ("FROM", "python:3.11-slim")
    patterns = [ln.strip() for ln in (DOCKER / "Dockerfile.dockerignore").read_text()
                .splitlines() if ln.strip() and not ln.startswith("#")]
    copies = [rest.split() for word, rest in ins if word == "COPY"]
    assert copies
    for parts in copies:
        for src in [p for p in parts[:-1] if not p.startswith("--")]:
            path = ROOT / src
            assert path.exists(), f"COPY source {src} does not exist"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()
                                                   and "__pycache__" not in p.parts]
            for f in files:
                rel = f.relative_to(ROOT).as_posix()
                assert not ignored(rel, patterns), f"{rel} is excluded from the build context"
    assert ignored(".venv/bin/python", patterns) and ignored("tests/test_jsx.py", patterns)
    users = [rest for word, rest in ins if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    installs = [i.split() for i in re.findall(r"pip install ([^&]+)", runs)]
    assert installs == [["/src", '"openjd-cli==0.8.0"']]  # the source tree, a pinned openjd


# -- render-loop --------------------------------------------------------------------------------
LOOP = str(DOCKER / "render-loop.sh")


def test_render_loop_repeats_and_returns_the_last_exit_code(tmp_path: Path) -> None:
    count = tmp_path / "count"
    res = subprocess.run([LOOP, "sh", "-c", f'echo x >> "{count}"; exit 3'],
                         env={**os.environ, "RENDER_LOOP_COUNT": "2", "RENDER_LOOP_PAUSE": "0"},
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 3
    assert count.read_text() == "x\nx\n"
    assert "render-loop: run 2 ended with exit code 3" in res.stdout
    assert subprocess.run([LOOP], capture_output=True, timeout=30).returncode == 2


def test_render_loop_passes_sigterm_on_and_ends(tmp_path: Path) -> None:
    marker = tmp_path / "got-term"
    child = (f"import signal, sys, time\n"
             f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w').close(), "
             f"sys.exit(143)))\n"
             f"print('ready', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([LOOP, sys.executable, "-c", child], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "RENDER_LOOP_PAUSE": "60"})
    assert proc.stdout is not None
    deadline = time.monotonic() + 10
    while proc.stdout.readline().strip() != "ready" and time.monotonic() < deadline:
        pass
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 143
    assert time.monotonic() - t0 < 5
    assert marker.exists()  # the command got SIGTERM before the loop ended
