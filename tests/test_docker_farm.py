"""The docker-compose farm (docker/): checked without an engine, and run with one.

Without Docker: compose.yaml is read with PyYAML; every stmpo command line in it is
parsed by the real click command line; the submitted job's parameters are decoded
against the job template; the Dockerfile's base image is a build argument and its COPY
sources exist and survive the root .dockerignore; the image is built once; no cpuset,
password or fixed port is baked in.

With a Docker engine (``docker info`` answers): ``docker compose up`` runs the farm end
to end and must end with a published version in the volume; ``down`` must leave nothing
but volumes. Set ``STMPO_DOCKER_OVERRIDE`` to a compose override file to add (e.g. the
one ``compose-offline.sh docker/compose.yaml`` prints for an engine without networks).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from openjd.model import create_job, decode_job_template, preprocess_job_parameters

from stmpo_celery.cli import _main as cli_mod

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE_TEXT = (DOCKER / "compose.yaml").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, Any] = COMPOSE["services"]
STMPO_SERVICES = [n for n in SERVICES if n != "redis"]
HOSTS = [n for n in SERVICES if re.fullmatch(r"render-host-\d+", n)]
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


def script_commands(name: str) -> list[list[str]]:
    """The stmpo command lines of a ``sh -c`` script (continuations joined)."""
    args = command(name)
    assert args[:2] == ["sh", "-c"], name
    text = args[2].replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = re.sub(r"^\s*\w+=\$\((.*)\)\s*$", r"\1", line.strip())
        if line.startswith("stmpo "):
            out.append(shlex.split(line.replace('"$job"', "JOBID"))[1:])
    return out


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
        ctx = click.Context(sub, info_name=path[-1], parent=ctx)
    leaf = cmd.make_context(path[-1], rest, parent=ctx.parent)
    assert not leaf.args, f"stmpo {' '.join(path)}: unexpected arguments {leaf.args}"
    return " ".join(path), leaf.params


# -- services, volumes, environment ----------------------------------------------------------
def test_services_volumes_and_one_build() -> None:
    assert {"redis", "flower", "submit"} <= set(SERVICES)
    assert 2 <= len(HOSTS) <= 3
    assert "renders" in COMPOSE["volumes"]
    built = [n for n in SERVICES if "build" in SERVICES[n]]
    assert built == ["submit"], "the image is built once"
    build = SERVICES["submit"]["build"]
    assert build["context"] == ".." and build["dockerfile"] == "docker/Dockerfile"
    assert interpolate(build["args"]["PYTHON_IMAGE"]) == "python:3.11-slim"
    for name in STMPO_SERVICES:
        svc = SERVICES[name]
        assert svc["image"] == "stmpo-celery:dev", name
        assert name == "submit" or svc["pull_policy"] == "never", name
        assert "renders:/renders" in svc["volumes"], name
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc["init"] is True
    for name, svc in SERVICES.items():  # a fixed cpuset fails on small machines
        assert "cpuset" not in svc and "cpus" not in svc, name


def test_redis_image_port_and_password_come_from_the_environment() -> None:
    redis = SERVICES["redis"]
    assert redis["image"] == "${REDIS_IMAGE:-redis:7-alpine}"
    env = environment("redis")
    password, port = env["REDIS_PASSWORD"], env["REDIS_PORT"]
    assert env["REDISCLI_AUTH"] == password
    health = " ".join(redis["healthcheck"]["test"])
    assert "-a " not in health and "PASSWORD" not in health, "no password in argv"
    script = " ".join(redis["command"])
    assert '--requirepass "$$REDIS_PASSWORD"' in script and '--port "$$REDIS_PORT"' in script
    assert "ports" not in redis
    for name in STMPO_SERVICES:
        env = environment(name)
        for key in ("STMPO_FARM_URL", "STMPO_BROKER_URL"):
            assert env[key] == f"redis://:{password}@redis:{port}/0", (name, key)
        assert password not in " ".join(command(name)), "no password on a command line"
        assert env["STMPO_FARM_DIR"].startswith("/renders/")


# -- the command lines are the real CLI's ------------------------------------------------------
@pytest.mark.parametrize("name", HOSTS)
def test_render_hosts_run_farm_workers(name: str) -> None:
    sub, params = parse_cli(command(name)[1:])
    assert command(name)[0] == "stmpo" and sub == "farm worker"
    assert params["name"] == name and params["farm_url"] is None  # from STMPO_FARM_URL


def test_flower_is_the_farms() -> None:
    sub, params = parse_cli(command("flower")[1:])
    assert sub == "farm flower" and params["bind"] == "0.0.0.0:5555"
    user, _, password = environment("flower")["STMPO_FLOWER_AUTH"].partition(":")
    assert user and password  # required off loopback
    assert SERVICES["flower"]["ports"] == ["127.0.0.1:${FLOWER_PORT:-5555}:5555"]


def test_submit_publishes_the_shipped_bundle_with_defined_parameters(tmp_path: Path) -> None:
    cmds = script_commands("submit")
    subs = [parse_cli(c) for c in cmds]
    assert [s for s, _ in subs] == ["farm submit", "farm wait", "farm jobs", "versions list"]
    params = subs[0][1]
    assert params["publish"] == "/renders/shots/sh010"
    assert subs[3][1]["shot_dir"] == params["publish"]
    assert params["bundle"] == "/usr/local/share/stmpo-celery/openjd_bundle"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"share/stmpo-celery/openjd_bundle" = ["openjd_bundle/*.yaml"' in pyproject
    values = dict(p.split("=", 1) for p in params["params"])
    template_path = ROOT / "openjd_bundle" / "template.yaml"
    doc = yaml.safe_load(template_path.read_text(encoding="utf-8"))
    assert set(values) <= {p["name"] for p in doc["parameterDefinitions"]}
    assert values["AerenderPath"] == "stmpo-fake-aerender"
    values["OutputDir"] = "/renders/shots/sh010/v001"  # what --publish sets
    template = decode_job_template(template=doc, supported_extensions=["TASK_CHUNKING"])
    pv = preprocess_job_parameters(job_template=template, job_parameter_values=values,
                                   job_template_dir=template_path.parent,
                                   current_working_dir=tmp_path)
    job = create_job(job_template=template, job_parameter_values=pv)
    assert len(job.steps) == 1


def test_unknown_options_would_be_caught() -> None:
    with pytest.raises(click.UsageError):
        parse_cli(["farm", "worker", "--nam", "x"])


def test_the_image_default_command_parses() -> None:
    cmd = re.search(r"^CMD (\[.*\])$", (DOCKER / "Dockerfile").read_text(), re.M)
    assert cmd
    args = yaml.safe_load(cmd.group(1))
    sub, params = parse_cli(args[1:])
    assert sub == "demo" and params["directory"].startswith("/renders")


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


def test_dockerfile_base_is_an_argument_sources_exist_and_runs_as_a_user() -> None:
    ins = dockerfile_instructions()
    assert ins[0] == ("ARG", "PYTHON_IMAGE=python:3.11-slim")
    assert ins[1] == ("FROM", "${PYTHON_IMAGE}")
    # the classic builder reads only the root .dockerignore
    assert not (DOCKER / "Dockerfile.dockerignore").exists()
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
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
    assert ignored(".git/HEAD", patterns)
    users = [rest for word, rest in ins if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    installs = [i.split() for i in re.findall(r"pip install ([^&]+)", runs)]
    assert installs == [["/src", '"openjd-cli==0.8.0"']]


def test_readme_walks_the_whole_sequence_offline() -> None:
    readme = (DOCKER / "README.md").read_text(encoding="utf-8")
    for step in ("docker compose up", "stmpo farm jobs", "stmpo farm cancel",
                 "stmpo versions approve", "docker compose down"):
        assert step in readme, step
    assert "alpine" not in readme.replace("redis:7-alpine", ""), "no extra image to pull"


# -- with a Docker engine -----------------------------------------------------------------------
def _engine() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        ok = subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return None
    return docker if ok else None


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_compose_farm_publishes_a_version_and_down_leaves_only_volumes() -> None:
    docker = _engine()
    if docker is None:
        pytest.skip("no Docker engine answers `docker info` (set DOCKER_HOST to run this)")
    project = f"stmpo-farm-test-{uuid.uuid4().hex[:6]}"
    files = ["-f", str(DOCKER / "compose.yaml")]
    override = os.environ.get("STMPO_DOCKER_OVERRIDE")
    if override:
        files += ["-f", override]
    base = [docker, "compose", "-p", project, *files]

    def compose(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=timeout,
                              cwd=DOCKER)

    try:
        up = compose("up", "-d", "--build", timeout=480)
        assert up.returncode == 0, up.stderr[-3000:]
        wait = compose("wait", "submit", timeout=300)
        logs = compose("logs", "submit", "render-host-1", "render-host-2").stdout
        out = wait.stdout.strip()
        assert wait.returncode == 0 and (out == "0" or out.endswith("status code 0")), \
            logs[-4000:]
        assert "v001  pending-review" in logs
        run = compose("run", "--rm", "--no-deps", "submit", "stmpo", "versions", "list",
                      "/renders/shots/sh010", "--json")
        versions = json.loads(run.stdout)
        assert versions[0]["version"] == "v001" and versions[0]["matches"] is True
        assert versions[0]["frames"] == 48
        jobs = json.loads(compose("exec", "-T", "render-host-1", "stmpo", "farm", "jobs",
                                  "--json").stdout)
        workers = {t["worker"].split("@")[0] for t in jobs[0]["tasks"]}
        assert workers <= {"render-host-1", "render-host-2"} and workers
    finally:
        down = compose("down", "--remove-orphans", timeout=120)
        left = subprocess.run([docker, "ps", "-a", "--filter", f"label=com.docker.compose."
                               f"project={project}", "-q"], capture_output=True, text=True)
        volumes = subprocess.run([docker, "volume", "ls", "-q", "--filter",
                                  f"label=com.docker.compose.project={project}"],
                                 capture_output=True, text=True).stdout.split()
        subprocess.run([docker, "volume", "rm", *volumes], capture_output=True)
    assert down.returncode == 0, down.stderr
    assert not left.stdout.strip(), "containers left after down"
    assert volumes == [f"{project}_renders"]
