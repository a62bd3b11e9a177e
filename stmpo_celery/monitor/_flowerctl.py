"""Flower for a run (``stmpo render --flower``) or for a host (``stmpo host up --flower``).

Flower runs as a child process, ``python -m stmpo_celery.monitor.flower_main`` (no ``celery``
CLI), that builds its Celery app with :func:`app.make_app` so it uses the run's key
prefix. Its settings, the broker URL and the basic-auth credentials among them, reach
the child as one JSON line on its stdin: never argv, never the environment. A run's
Flower keeps that stdin open and exits when it reaches EOF, so it dies with the
orchestrator however the orchestrator ends (and, on Linux, ``PR_SET_PDEATHSIG`` too);
a host Flower is detached and stopped by ``stmpo host down``.

Security: Flower bound to anything but loopback requires basic auth
(:func:`check_bind`); its API then needs the same credentials. Without auth, on
loopback only, the API is open too (``FLOWER_UNAUTHENTICATED_API``). Flower runs
read-only: no remote-control actions, which would bypass the orchestrator.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ..broker import BrokerUrl, keys
from ..config import RenderOptions, defaults
from ..errors import BadInput, EnvironmentProblem, StmpoError
from ..host import child_kwargs

#: A "run id" that is a Redis glob matching every run: a Flower whose key prefix is
#: ``stmpo:????????:`` subscribes (PSUBSCRIBE) to the event channel of every run on
#: the broker, and kombu strips exactly ``len(prefix)`` characters from each channel
#: name, which is right because every real prefix has the same length.
ALL_RUNS = "?" * keys.RUN_ID_LEN
START_TIMEOUT_S = 20.0
#: Flower's tasks table: what renders (project, comp, frames), where, its state and the
#: progress line (ETA first, so a narrow window does not cut it); sorted by "received"
TASK_COLUMNS = "name,args,worker,state,result,runtime,received,uuid"
_PREFIX_RE = re.compile(r"^[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$")


class FlowerFlags(NamedTuple):
    """The options a command takes Flower's settings by, named in its messages."""

    bind: str = "--flower"
    auth: str = "--flower-auth"
    url_prefix: str = "--flower-url-prefix"


RENDER_FLAGS = FlowerFlags()  #: ``stmpo render``'s and ``stmpo host up``'s


def parse_bind(bind: str, flags: FlowerFlags = RENDER_FLAGS) -> tuple[str, int]:
    """``[HOST:]PORT`` (``[::1]:5555`` for IPv6) -> (host, port); host defaults to loopback."""
    text = bind.strip()
    host, sep, port_s = text.rpartition(":")
    if not sep:
        host, port_s = "127.0.0.1", text
    host = host.strip("[]") or "0.0.0.0"
    if host == "*":
        host = "0.0.0.0"
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise BadInput(f"{flags.bind} {bind!r} is not [HOST:]PORT: use e.g. 5555 or "
                       "0.0.0.0:5555")
    return host, int(port_s)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_auth(auth: str | None, flags: FlowerFlags = RENDER_FLAGS) -> None:
    if auth is None:
        return
    user, sep, password = auth.partition(":")
    if not sep or not user or not password or any(c.isspace() for c in auth):
        raise BadInput(f"{flags.auth} (or $STMPO_FLOWER_AUTH) must be user:password, "
                       "both non-empty, without spaces")


def check_url_prefix(prefix: str | None, flags: FlowerFlags = RENDER_FLAGS) -> str | None:
    if prefix is None:
        return None
    clean = prefix.strip().strip("/")
    if not clean:
        return None
    if not _PREFIX_RE.match(clean):
        raise BadInput(f"{flags.url_prefix} {prefix!r} is not a URL path: use e.g. "
                       "stmpo/flower")
    return clean


def check_bind(bind: str | None, auth: str | None, url_prefix: str | None = None,
               flags: FlowerFlags = RENDER_FLAGS) -> None:
    """Refuse (BadInput, exit 2) a Flower that others could reach without a password.

    Call before anything starts (``validate.prepare``); :func:`start_flower` calls it too.
    """
    if bind is None:
        return
    host, port = parse_bind(bind, flags)
    check_auth(auth, flags)
    check_url_prefix(url_prefix, flags)
    if not auth and not is_loopback(host):
        raise BadInput(
            f"{flags.bind} {bind} would let anyone who reaches this host see and use Flower: "
            f"pass {flags.auth} user:password (or set $STMPO_FLOWER_AUTH), "
            f"or bind to loopback ({flags.bind} 127.0.0.1:{port})")


def flower_url(host: str, port: int, url_prefix: str | None) -> str:
    shown = host
    if host in ("0.0.0.0", "::"):
        shown = socket.getfqdn() or socket.gethostname()
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/" + (f"{url_prefix}/" if url_prefix else "")


def serves_at(url: str, bind: str, url_prefix: str | None) -> bool:
    """Whether a Flower serving at ``url`` is the one ``bind`` and ``url_prefix`` ask
    for: the same port and prefix, and the same address (every loopback name is one)."""
    import urllib.parse

    host, port = parse_bind(bind)
    now = urllib.parse.urlsplit(url)
    want = urllib.parse.urlsplit(flower_url(host, port, check_url_prefix(url_prefix)))
    same_host = want.hostname == now.hostname or (
        is_loopback(host) and is_loopback(now.hostname or ""))
    return now.port == port and same_host and want.path == now.path


@dataclass
class FlowerProcess:
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Stop Flower now (it holds no state worth saving)."""
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def _read_line(stream: Any, timeout: float,
               cancelled: Callable[[], bool] | None = None) -> bytes:
    out: list[bytes] = []
    t = threading.Thread(target=lambda: out.append(stream.readline()), daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while t.is_alive() and time.monotonic() < deadline:
        if cancelled is not None and cancelled():
            break  # a cancel does not wait for Flower to come up
        t.join(0.05)
    return out[0] if out else b""


def _log_tail(path: Path) -> str:
    """The line of Flower's log that says why it stopped (not a traceback's last frame)."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()
                 if ln.strip() and "<no Python frame>" not in ln]
    except OSError:
        return ""
    for ln in reversed(lines):
        if "Error" in ln or "error:" in ln.lower() or "Exception" in ln:
            return ln
    return lines[-1] if lines else ""


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port`` (checked before Flower starts)."""
    if port == 0:
        return False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        probe = "127.0.0.1" if host == "0.0.0.0" else "::1" if host == "::" else host
        try:
            return s.connect_ex((probe, port)) == 0
        except OSError:
            return False


def start_flower(broker: BrokerUrl, run_id: str, queue: str, bind: str, auth: str | None,
                 url_prefix: str | None, log_dir: Path, *, detach: bool = False,
                 purge_offline_s: int | None = None,
                 max_tasks: int | None = None, pdeathsig: bool = True,
                 cancelled: Callable[[], bool] | None = None,
                 flags: FlowerFlags = RENDER_FLAGS) -> FlowerProcess:
    """Start Flower for ``run_id`` (or :data:`ALL_RUNS`); return once it serves and listens.

    Raises :class:`BadInput` for an unsafe bind and :class:`EnvironmentProblem` when
    Flower does not come up (its log is ``log_dir/flower.log``).
    """
    check_bind(bind, auth, url_prefix, flags)
    host, port = parse_bind(bind, flags)
    prefix = check_url_prefix(url_prefix, flags)
    if port_in_use(host, port):
        raise EnvironmentProblem(f"Flower cannot listen on {host}:{port}: the port is in use "
                                 f"by another program; pick a free one ({flags.bind} "
                                 f"{host}:PORT)")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "flower.log"
    config = {
        "broker": broker.url, "run_id": run_id, "queue": queue, "address": host,
        "port": port, "auth": auth, "url_prefix": prefix, "detach": detach,
        "unauthenticated_api": auth is None and is_loopback(host),
        "purge_offline_s": purge_offline_s, "tasks_columns": TASK_COLUMNS,
        "max_tasks": max_tasks,
    }
    env = {k: v for k, v in os.environ.items()  # its config comes on stdin, secrets too
           if not k.startswith("FLOWER_") and k not in defaults.SECRET_ENVS}
    err = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stmpo_celery.monitor.flower_main"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env,
            close_fds=True,
            **child_kwargs(die_with_parent=pdeathsig and not detach, detach=detach),
        )
    finally:
        os.close(err)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        with contextlib.suppress(OSError):
            proc.stdin.write(json.dumps(config).encode() + b"\n")
            proc.stdin.flush()
            if detach:
                proc.stdin.close()
        line = _read_line(proc.stdout, START_TIMEOUT_S, cancelled)
        try:
            ready = json.loads(line.decode())
        except ValueError:
            ready = {}
        if not ready.get("port"):
            why = _log_tail(log_path) or f"no answer within {START_TIMEOUT_S:g} s"
            raise EnvironmentProblem(f"Flower did not start on {bind}: {why} (log: {log_path})")
    except BaseException:  # a cancel too: a detached Flower nobody knows of would live on
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        raise
    port = int(ready["port"])
    return FlowerProcess(proc, flower_url(host, port, prefix), port, log_path)


def start_for_run(o: RenderOptions, broker: BrokerUrl, run_id: str, queue: str,
                  log_dir: Path, say: Callable[[str], None],
                  cancelled: Callable[[], bool] | None = None) -> FlowerProcess | None:
    """The orchestrator's hook: start the run's Flower if asked; a failure only warns."""
    if not o.flower:
        return None
    try:
        # a Flower that may linger must outlive us: it ends by its stdin, not PDEATHSIG
        fp = start_flower(broker, run_id, queue, o.flower, o.flower_auth,
                          o.flower_url_prefix, log_dir, pdeathsig=o.flower_linger <= 0,
                          cancelled=cancelled)
    except StmpoError as exc:
        say(f"WARNING: Flower not started, rendering without it: {exc.message}")
        return None
    say(f"Flower for run {run_id}: {fp.url}" + (" (basic auth)" if o.flower_auth else ""))
    return fp


def end_for_run(fp: FlowerProcess, linger_s: float, say: Callable[[str], None]) -> None:
    """The run ends: stop its Flower now, or (after a failure, with ``--flower-linger``) let
    it serve what it saw for ``linger_s`` more seconds, then exit by itself."""
    if linger_s <= 0 or not fp.alive():
        fp.stop()
        return
    try:
        assert fp.proc.stdin is not None
        fp.proc.stdin.write(json.dumps({"linger": linger_s}).encode() + b"\n")
        fp.proc.stdin.close()
    except (OSError, AssertionError):
        fp.stop()
        return
    with contextlib.suppress(OSError):
        if fp.proc.stdout is not None:
            fp.proc.stdout.close()
    say(f"Flower stays up {linger_s:g} s to inspect the failure: {fp.url} "
        f"(pid {fp.proc.pid})")
