"""The bad-input catalogue: one clear line, a documented exit code, nothing left behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
import redis
from conftest import FAKE, Farm, free_port, stmpo_keys, system_redis, tagged

from stmpo_celery.broker._redis import find_redis_server

pytestmark = pytest.mark.slow

# (id, extra args, argv overrides, env, expected exit code, words the message must contain)
CASES: list[tuple[str, list[str], dict[str, object], dict[str, str], int, list[str]]] = [
    ("frames-empty", [], {"frames": ""}, {}, 2, ["frame spec is empty"]),
    ("frames-garbage", [], {"frames": "abc"}, {}, 2, ["'abc'", "not a frame"]),
    ("frames-reversed", [], {"frames": "10-1"}, {}, 2, ["ends before it starts", "1-10"]),
    ("frames-empty-item", [], {"frames": "1,,2"}, {}, 2, ["stray comma"]),
    ("frames-three-dashes", [], {"frames": "1-2-3"}, {}, 2, ["not a frame"]),
    ("frames-huge", [], {"frames": "0-99999999"}, {}, 2, ["more than"]),
    ("comp-and-rqindex-missing", [], {"comp": None}, {}, 2, ["exactly one of --comp"]),
    ("comp-and-rqindex-both", ["--rqindex", "1"], {}, {}, 2, ["exactly one of --comp"]),
    ("comp-empty", [], {"comp": ""}, {}, 2, ["--comp is empty"]),
    ("rqindex-zero", ["--rqindex", "0"], {"comp": None}, {}, 2, ["start at 1"]),
    ("rqindex-text", ["--rqindex", "two"], {"comp": None}, {}, 2, ["--rqindex"]),
    ("project-missing", ["--project", "/nonexistent/shot.aep"], {}, {}, 2,
     ["project file does not exist", "/nonexistent/shot.aep"]),
    ("project-is-dir", ["--project", "/tmp"], {}, {}, 2, ["not a file"]),
    ("project-empty-file", ["--project", "EMPTY"], {}, {}, 2, ["project file is empty"]),
    ("mem-usage-negative", ["--mem-usage", "50", "-3"], {}, {}, 2, ["--mem-usage"]),
    ("flower-linger-negative", ["--flower-linger", "-1"], {}, {}, 2,
     ["--flower-linger", ">= 0"]),
    ("flower-options-without-flower", ["--flower-linger", "5", "--flower-url-prefix", "/x"],
     {}, {}, 2, ["--flower-url-prefix, --flower-linger", "add --flower"]),
    # an option twice: the last won in silence (two frames rendered of 1-6, exit 0)
    ("frames-twice", ["--frames", "1-6", "--frames=7-8"], {}, {}, 2,
     ["--frames is given twice", "once"]),
    ("flag-and-its-off-flag", ["--mfr", "--no-mfr"], {}, {}, 2,
     ["--mfr and --no-mfr are both given"]),
    # typed flags that the rest of the command line makes do nothing
    ("mfr-cpu-with-mfr-off", ["--no-mfr", "--mfr-max-cpu", "37"], {}, {}, 2,
     ["--mfr-max-cpu does nothing here", "MFR is off"]),
    ("launch-cost-static", ["--schedule", "static", "--launch-cost", "3"], {}, {}, 2,
     ["--launch-cost does nothing here", "static"]),
    ("history-guided", ["--schedule", "guided", "--history"], {}, {}, 2,
     ["--history does nothing here", "guided"]),
    ("flower-auth-without-flower", ["--flower-auth", "u:p"], {}, {}, 2,
     ["--flower-auth does nothing here", "--flower"]),
    ("summary-blank", ["--summary", " "], {}, {}, 2, ["--summary is blank"]),
    ("movie-off-flag-named-as-typed", ["--no-skip-existing"],
     {"output": "OUT/shot.mov", "concurrency": 1}, {}, 2, ["--no-skip-existing cannot"]),
    ("output-empty", [], {"output": " "}, {}, 2, ["--output is empty"]),
    ("output-two-tokens", [], {"output": "/tmp/x_[##]_[##].png"}, {}, 2, ["more than one"]),
    ("output-bad-token", [], {"output": "/tmp/x_[#x#].png"}, {}, 2, ["malformed frame token"]),
    ("movie-many-processes", [], {"output": "OUT/shot.mov", "concurrency": 4}, {}, 2,
     ["is a movie", "--concurrency cannot apply"]),
    ("movie-task-share", ["--task", "2/2"], {"output": "OUT/shot.mov", "concurrency": 1}, {},
     2, ["--task 2/2", "is a movie", "cannot be cut into tasks"]),
    ("movie-launch-cost", ["--launch-cost", "5"], {"output": "OUT/shot.mov",
                                                   "concurrency": 1}, {}, 2,
     ["--launch-cost does nothing here", "a movie"]),
    ("movie-history", ["--history"], {"output": "OUT/shot.mov", "concurrency": 1}, {}, 2,
     ["--history does nothing here", "a movie"]),
    ("movie-schedule-flags", ["--schedule", "fixed", "--chunk-size", "3", "--spawn-delay", "2"],
     {"output": "OUT/shot.mov", "concurrency": 1}, {}, 2,
     ["is a movie", "--schedule, --chunk-size, --spawn-delay cannot apply", "Drop them"]),
    ("output-is-a-folder", [], {"output": "OUT/"}, {}, 2, ["is a folder", "shot_[#####]"]),
    ("output-still-without-token", [], {"output": "OUT/f_#####.png"}, {}, 2,
     ["no [#####] frame token", "f_[#####].png"]),
    # After Effects renders on Windows: a name it cannot create there fails up front
    ("output-name-windows-char", [], {"output": "OUT/a?b_[####].png"}, {}, 2,
     ["file name 'a?b_[####].png' holds '?'", "rename it"]),
    ("output-name-device", [], {"output": "OUT/CON.[####].png"}, {}, 2,
     ["Windows device name CON"]),
    ("output-frame-name-device", [], {"output": "OUT/COM[#].png"}, {}, 2,
     ["frame 1 'COM1.png'", "device name COM1", "[####]"]),
    ("output-name-trailing-dot", [], {"output": "OUT/shot_[####].png."}, {}, 2,
     ["ends with a dot or a space"]),
    ("output-dir-uncreatable", [], {"output": "PROJECT/sub/x_[####].png"}, {}, 2,
     ["output directory cannot be created"]),
    ("concurrency-negative", [], {"concurrency": -1}, {}, 2, ["--concurrency", "zero or more"]),
    ("max-concurrency-zero", ["--max-concurrency", "0"], {}, {}, 2, ["--max-concurrency"]),
    ("ram-zero", ["--ram-per-process-gb", "0"], {}, {}, 2, ["--ram-per-process-gb"]),
    ("threads-zero", ["--threads-per-slot", "0"], {}, {}, 2, ["--threads-per-slot"]),
    ("mfr-cpu-0", ["--mfr-max-cpu", "0"], {}, {}, 2, ["--mfr-max-cpu", "1 to 100"]),
    ("mfr-cpu-101", ["--mfr-max-cpu", "101"], {}, {}, 2, ["--mfr-max-cpu"]),
    ("chunk-size-zero", ["--chunk-size", "0"], {}, {}, 2, ["--chunk-size"]),
    ("chunk-size-text", ["--chunk-size", "big"], {}, {}, 2, ["--chunk-size", "'big'"]),
    ("chunk-size-static", ["--chunk-size", "10", "--schedule", "static"], {}, {}, 2,
     ["does nothing with --schedule static"]),
    ("retries-negative", ["--retries", "-1"], {}, {}, 2, ["--retries"]),
    ("spawn-delay-negative", ["--spawn-delay", "-1"], {}, {}, 2, ["--spawn-delay"]),
    ("schedule-unknown", ["--schedule", "magic"], {}, {}, 2, ["--schedule"]),
    ("aerender-missing", ["--aerender", "/nonexistent/aerender"], {}, {}, 3,
     ["aerender", "does not exist"]),
    ("aerender-dir", ["--aerender", "/tmp"], {}, {}, 3, ["is a directory"]),
    ("aerender-not-executable", ["--aerender", "PROJECT"], {}, {}, 3, ["not executable"]),
    ("aerender-not-a-program", ["--aerender", "SCRIPT:echo hi"], {}, {}, 3,
     ["cannot run", "not a program"]),
    ("aerender-bad-interpreter", ["--aerender", "SCRIPT:#!/nonexistent/python\n"], {}, {}, 3,
     ["cannot run", "/nonexistent/python"]),
    ("aerender-env-missing", [], {"aerender": None}, {"AERENDER_PATH": "/nope/aerender"}, 3,
     ["$AERENDER_PATH", "does not exist"]),
    ("broker-not-redis", ["--broker", "http://127.0.0.1:6379"], {}, {}, 2,
     ["not a Redis URL"]),
    ("broker-bad-db", ["--broker", "redis://127.0.0.1:6379/abc"], {}, {}, 2, ["database"]),
    ("broker-no-host", ["--broker", "redis:///0"], {}, {}, 2, ["names no host"]),
    ("broker-unreachable", ["--broker", "redis://127.0.0.1:1/0"], {}, {}, 3,
     ["unreachable", "127.0.0.1:1"]),
    ("env-concurrency-text", [], {"concurrency": None}, {"STMPO_CONCURRENCY": "many"}, 2,
     ["$STMPO_CONCURRENCY", "whole number"]),
    ("env-fail-fast-garbage", [], {}, {"STMPO_FAIL_FAST": "maybe"}, 2,
     ["$STMPO_FAIL_FAST", "true or false"]),
    ("env-broker-not-redis", [], {}, {"STMPO_BROKER_URL": "amqp://guest@localhost//"}, 2,
     ["not a Redis URL"]),
    ("profile-unknown", ["--profile", "turbo"], {}, {}, 2, ["unknown profile 'turbo'"]),
    ("numa-map-not-json", ["--numa-map", "PROJECT"], {}, {}, 2, ["is not JSON"]),
    ("numa-map-missing", ["--numa-map", "/nonexistent/map.json"], {}, {}, 2,
     ["cannot read numa map"]),
    ("numa-map-foreign-cpus", ["--numa-map", "MAP:{\"group_0\": [0, 4000]}"], {}, {}, 2,
     ["may not use"]),
    ("numa-map-duplicate-cpu", ["--numa-map", "MAP:{\"group_0\": [0, 1], \"group_1\": [1]}"],
     {}, {}, 2, ["numa map"]),
    ("env-profile-unknown", [], {}, {"STMPO_PROFILE": "turbo"}, 2, ["unknown profile"]),
    ("profile-bool-for-a-number", ["--profile", "LATIN1:retries = true\n"], {}, {}, 2,
     ["key retries is True: it must be a whole number"]),
    ("profile-not-utf8", ["--profile", "LATIN1:concurrency = \"\xe9\"\n"], {}, {}, 2,
     ["not UTF-8"]),
    ("broker-port-text", ["--broker", "redis://127.0.0.1:abc/0"], {}, {}, 2, ["malformed"]),
    ("broker-port-too-big", ["--broker", "redis://127.0.0.1:99999/0"], {}, {}, 2,
     ["malformed"]),
    ("broker-password-query-masked", ["--broker", "redis://127.0.0.1:1/0?password=Qz9secret"],
     {}, {}, 3, ["unreachable", ":***@127.0.0.1"]),
    ("spawn-delay-inf", ["--spawn-delay", "inf"], {}, {}, 2, ["--spawn-delay", "finite"]),
    ("stall-timeout-nan", ["--stall-timeout", "nan"], {}, {}, 2, ["--stall-timeout", "finite"]),
    ("chunk-timeout-inf", ["--chunk-timeout", "inf"], {}, {}, 2, ["--chunk-timeout", "finite"]),
    ("env-spawn-delay-inf", [], {}, {"STMPO_SPAWN_DELAY": "inf"}, 2,
     ["$STMPO_SPAWN_DELAY", "finite"]),
    # a bad value from the environment is blamed on the variable, not on a flag not given
    ("env-schedule-unknown", [], {}, {"STMPO_SCHEDULE": "bogus"}, 2,
     ["$STMPO_SCHEDULE 'bogus' is unknown", "adaptive"]),
    ("env-retries-negative", [], {}, {"STMPO_RETRIES": "-1"}, 2,
     ["$STMPO_RETRIES is -1", "zero or more"]),
    ("env-chunk-size-text", [], {}, {"STMPO_CHUNK_SIZE": "abc"}, 2,
     ["$STMPO_CHUNK_SIZE 'abc'", "auto"]),
    ("env-chunk-size-with-static", [], {}, {"STMPO_SCHEDULE": "static", "STMPO_CHUNK_SIZE": "4"},
     2, ["$STMPO_CHUNK_SIZE does nothing with $STMPO_SCHEDULE static"]),
    ("env-log-dir-uncreatable", [], {}, {"STMPO_LOG_DIR": "/proc/stmpo-logs"}, 2,
     ["$STMPO_LOG_DIR /proc/stmpo-logs cannot be created"]),
    ("output-token-in-folder", [], {"output": "OUT/[##]/x.png"}, {}, 2,
     ["frame token in its folder"]),
    ("output-name-too-long", [], {"output": "OUT/" + "a" * 250 + "_[####].png"}, {}, 2,
     ["255"]),
    ("log-dir-uncreatable", ["--log-dir", "/proc/stmpo-logs"], {}, {}, 2, ["--log-dir"]),
    ("summary-unwritable", ["--summary", "/proc/stmpo-summary.json"], {}, {}, 2,
     ["--summary"]),
    ("summary-is-a-folder", ["--summary", "/tmp"], {}, {}, 2, ["--summary", "folder"]),
]


#: Cases also run end to end through a real ``stmpo`` process; the rest run in-process
#: through the same entry point (``main``), which is what keeps this catalogue fast.
END_TO_END = {"frames-garbage", "movie-many-processes", "aerender-missing",
              "broker-unreachable", "env-concurrency-text", "numa-map-not-json"}


def _argv(farm: Farm, case: tuple) -> tuple[list[str], dict[str, str]]:
    _id, extra, overrides, env_extra, _code, _words = case
    kw: dict[str, object] = {"frames": "1-10", "concurrency": 2}
    for k, v in overrides.items():
        if isinstance(v, str):
            v = v.replace("OUT", str(farm.out)).replace("PROJECT", str(farm.project))
        kw[k] = v
    aerender = kw.pop("aerender", FAKE)
    args = []
    for a in extra:
        if a.startswith("MAP:"):  # a NUMA map file with this content
            path = farm.tmp / "map.json"
            path.write_text(a[4:])
            a = str(path)
        elif a.startswith("LATIN1:"):  # a profile file in another encoding
            path = farm.tmp / "profile.toml"
            path.write_bytes(a[7:].encode("latin-1"))
            a = str(path)
        elif a.startswith("SCRIPT:"):  # an executable file with this content
            path = farm.tmp / "aerender"
            path.write_text(a[7:])
            path.chmod(0o755)
            a = str(path)
        if a == "EMPTY":  # a project file of 0 bytes
            path = farm.tmp / "empty.aep"
            path.write_bytes(b"")
            a = str(path)
        args.append(a.replace("PROJECT", str(farm.project)))
    argv = farm.argv(*args, **kw)  # type: ignore[arg-type]
    if aerender is None and "--aerender" not in extra:  # (the case's own replaced ours)
        i = argv.index("--aerender")
        del argv[i : i + 2]
    if "STMPO_LOG_DIR" in env_extra:  # the variable decides, not the fixture's flag
        i = argv.index("--log-dir")
        del argv[i : i + 2]
    return argv, dict(env_extra)


def _check(case: tuple, code: int, stdout: str, stderr: str) -> None:
    assert code == case[4], (code, stdout, stderr)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("stmpo: error: ")
    for w in case[5]:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in stderr + stdout


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(farm: Farm, case: tuple, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    """In-process: the same ``main`` the ``stmpo`` command runs, no subprocess."""
    from stmpo_celery.cli import main
    from stmpo_celery.orchestrator import Run

    def reached(*_a: object, **_k: object) -> None:
        raise AssertionError("bad input got past validation")

    monkeypatch.setattr(Run, "execute", reached)
    argv, env_extra = _argv(farm, case)
    private_tmp = farm.tmp / "tmp"  # the run's temp files would land here, and only here
    private_tmp.mkdir()
    for name in list(os.environ):
        if name.startswith("STMPO_") or name == "AERENDER_PATH":
            monkeypatch.delenv(name)
    for name, value in {**farm.env(), **env_extra}.items():
        if name.startswith("STMPO_") or name in ("AERENDER_PATH", "PATH"):
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    before_children = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(SystemExit) as stop:
        main(argv[3:])  # after "python -m stmpo_celery.cli"
    out = capsys.readouterr()
    _check(case, int(stop.value.code or 0), out.out, out.err)
    # the render reports to OpenJD (--progress openjd): the session sees the reason too
    assert out.out.splitlines()[-1:] == [out.err.strip().replace("stmpo: error: ",
                                                                "openjd_fail: ", 1)]
    started = {p.pid for p in psutil.Process().children(recursive=True)} - before_children
    assert not started, "nothing may be started"
    assert not farm.journal.exists(), "aerender must not run"
    assert list(private_tmp.iterdir()) == []  # and Run.execute, which makes keys, never ran


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in END_TO_END],
                         ids=[c[0] for c in CASES if c[0] in END_TO_END])
def test_bad_input_end_to_end(farm: Farm, case: tuple) -> None:
    argv, env_extra = _argv(farm, case)
    private_tmp = farm.tmp / "tmp"
    private_tmp.mkdir()
    env = farm.env(TMPDIR=str(private_tmp), **env_extra)
    client = system_redis()
    before_keys = stmpo_keys(client) if client else set()
    t0 = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30,
                         stdin=subprocess.DEVNULL)
    assert time.monotonic() - t0 < 8, "bad input must fail fast"
    _check(case, res.returncode, res.stdout, res.stderr)
    assert not tagged(farm.tag), "nothing may be started"
    assert not farm.journal.exists(), "aerender must not run"
    assert list(private_tmp.iterdir()) == []
    assert not farm.out.exists(), "the output folder is created only once all is known good"
    assert "Qz9secret" not in res.stderr
    if client:
        assert stmpo_keys(client) - before_keys == set()


def test_wrong_password_fails_within_seconds(farm: Farm, tmp_path: Path) -> None:
    server = find_redis_server()
    assert server
    sock = tmp_path / "r.sock"
    proc = subprocess.Popen([server, "--port", "0", "--unixsocket", str(sock),
                             "--requirepass", "right", "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(unix_socket_path=str(sock), password="right")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                client.ping()
                break
            except redis.RedisError:
                time.sleep(0.02)
        for url, word in ((f"redis+socket://:Xq7pw9Z@{sock}", "refused the password"),
                          (f"redis+socket://{sock}", "needs a password")):
            t0 = time.monotonic()
            res = farm.run("--broker", url, frames="1-4")
            assert time.monotonic() - t0 < 8
            assert res.returncode == 3, res.stderr
            assert word in res.stderr and "Xq7pw9Z" not in res.stderr  # password masked
            assert len(res.stderr.strip().splitlines()) == 1
        # ?password= is a password too, alone or repeating the one before the host
        for url in (f"redis+socket://{sock}?password=right",
                    f"redis+socket://:right@{sock}?password=right"):
            res = farm.run("--broker", url, frames="1-4")
            assert res.returncode == 0, res.stdout + res.stderr
        res = farm.run("--broker", f"redis+socket://:right@{sock}?password=Xq7pw9Z",
                       frames="1-4")
        assert res.returncode == 2 and "two different passwords" in res.stderr, res.stderr
        assert "Xq7pw9Z" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    finally:
        proc.kill()
        proc.wait()


# -- other commands' input gaps, end to end ---------------------------------------------
def test_status_on_an_unreachable_broker_is_exit_3(farm: Farm) -> None:
    res = subprocess.run([sys.executable, "-m", "stmpo_celery.cli", "status", "--once",
                          "--broker", f"redis://127.0.0.1:{free_port()}/0"],
                         capture_output=True, text=True, timeout=30, env=farm.env())
    assert res.returncode == 3, res.stdout + res.stderr
    assert res.stderr.startswith("stmpo: error: ") and len(res.stderr.splitlines()) == 1


def test_status_and_doctor_use_the_profiles_broker_as_render_does(farm: Farm) -> None:
    """A profile's broker key, which render uses: status said "no stmpo runs found" and
    doctor "renders use an embedded redis-server", both exit 0, while render on the same
    host was refused for an unreachable broker."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    prof = farm.tmp / "br.toml"
    prof.write_text(f'broker = "{dead}"\n')
    env = {k: v for k, v in farm.env().items() if k != "STMPO_BROKER_URL"}
    env["STMPO_PROFILE"] = str(prof)
    cli = [sys.executable, "-m", "stmpo_celery.cli"]
    status = subprocess.run([*cli, "status", "--once"], capture_output=True, text=True,
                            timeout=30, env=env)
    assert status.returncode == 3, status.stdout + status.stderr
    assert "unreachable" in status.stderr and len(status.stderr.splitlines()) == 1
    doctor = subprocess.run([*cli, "doctor", "--aerender", FAKE], capture_output=True,
                            text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    line = next(ln for ln in doctor.stdout.splitlines() if " broker:" in ln)
    assert doctor.returncode == 3 and "unreachable" in line, doctor.stdout


def test_broker_port_that_answers_garbage_is_one_line(farm: Farm) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]

    def answer() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n\xff\xfe garbage\r\n")
            conn.close()

    threading.Thread(target=answer, daemon=True).start()
    try:
        res = farm.run("--broker", f"redis://127.0.0.1:{port}/0", frames="1-4")
    finally:
        srv.close()
    assert res.returncode == 3, res.stdout + res.stderr
    assert "does not answer like Redis" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not farm.out.exists()


@pytest.mark.parametrize(("args", "words"), [
    (["--port", "0"], "--port 0"),
    (["--bind", "999.1.1.1"], "--bind '999.1.1.1' is not an IP address"),
    (["--bind", ""], "--bind '' is not an IP address"),
])
def test_host_up_bad_port_or_address_is_refused(tmp_path: Path, args: list[str],
                                                words: str) -> None:
    env = dict(os.environ, STMPO_HOST_DIR=str(tmp_path / "host"))
    res = subprocess.run([sys.executable, "-m", "stmpo_celery.cli", "host", "up", *args],
                         capture_output=True, text=True, timeout=30, env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert words in res.stderr and len(res.stderr.splitlines()) == 1
    assert not (tmp_path / "host").exists()


def test_bundle_dest_on_a_read_only_file_system(tmp_path: Path) -> None:
    (tmp_path / "a.aep").write_text("aep")
    res = subprocess.run([sys.executable, "-m", "stmpo_celery.cli", "bundle", "--project",
                          str(tmp_path / "a.aep"), "--comp", "C", "--frames", "1-10",
                          "--output", str(tmp_path / "f_[####].png"),
                          "--dest", "/proc/stmpo-bundle"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith("stmpo: error: --dest /proc/stmpo-bundle")
    assert "Traceback" not in res.stderr and len(res.stderr.splitlines()) == 1


_TOO_LONG = "(300 bytes) is longer than the file system allows: shorten it"


@pytest.mark.parametrize(("argv", "words"), [
    (["bundle", "--project", "{aep}", "--comp", "C", "--frames", "1-20",
      "--output", "{tmp}/o_[##].png", "--dest", "{long}"], _TOO_LONG),
    (["bundle", "--project", "{aep}", "--comp", "C", "--frames", "1-20",
      "--output", "{long}/o_[##].png", "--dest", "{tmp}/b"],
     "--output has a folder name of 300 bytes"),
    (["bundle", "--project", "{aep}", "--comp", "C", "--frames", "1-20",
      "--output", "{tmp}/o_[##].png", "--dest", "{tmp}/b", "--fonts-dir", "{long}"],
     "--fonts-dir is not a folder on this machine"),
    (["fonts", "install", "--from", "{long}"], _TOO_LONG),
    (["versions", "list", "{long}"], _TOO_LONG),
    (["doctor", "--output-dir", "{long}", "--aerender", "{aep}"], _TOO_LONG),
])
def test_a_name_longer_than_the_file_system_allows_is_one_line(tmp_path: Path,
                                                               argv: list[str],
                                                               words: str) -> None:
    """ENAMETOOLONG wherever a path is first touched: one line, exit 2, nothing made."""
    (tmp_path / "a.aep").write_text("aep")
    long = str(tmp_path / ("n" * 300))
    args = [a.replace("{aep}", str(tmp_path / "a.aep")).replace("{long}", long)
            .replace("{tmp}", str(tmp_path)) for a in argv]
    before = sorted(tmp_path.iterdir())
    res = subprocess.run([sys.executable, "-m", "stmpo_celery.cli", *args],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, HOME=str(tmp_path)))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.splitlines()) == 1, res.stderr
    assert words in res.stderr
    assert sorted(tmp_path.iterdir()) == before
