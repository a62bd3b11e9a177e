"""Host service mode: one long-lived Redis (and Flower) per render host.

``stmpo host up`` starts a password-protected ``redis-server`` whose config and data
live in the host directory, writes the broker URL to ``<dir>/broker.url`` (0600, or
0640 with ``--group``) and optionally starts a host Flower; ``stmpo render`` finds the
URL without configuration (:func:`._hostdir.discover_broker`, after ``--broker`` and
``$STMPO_BROKER_URL``). ``stmpo host down`` stops both. Both refuse a service started in
another process space that shares the folder (:meth:`HostService.elsewhere`). Run by
``stmpo host``; the host directory and discovery are in :mod:`._hostdir`.

Runs keep their own key prefix on the host Redis (``stmpo:<run>:``: isolation and
one-scan cleanup unchanged). The host Flower watches all of them through the glob
prefix :data:`flowerctl.ALL_RUNS`; see ``docs/monitoring.md`` for what it can and
cannot show.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

from ..broker import BrokerUrl, find_redis_server, keys, no_redis_server_problem, reap_dead_runs
from ..config import defaults
from ..errors import BadInput, EnvironmentProblem
from ..host import (
    cancel_signals,
    child_kwargs,
    group_id,
    process_space,
    raise_fd_limit,
    read_text,
    replace_file,
    same_space,
)
from ._flowerctl import ALL_RUNS, check_bind, start_flower
from ._hostdir import BROKER_FILE, SPACE_FILE, ping_error

#: How a host Flower's command line names its module (this layout's, then the previous one).
FLOWER_MODULES = ("stmpo_celery.monitor.flower_main", "stmpo_celery.flower_main")


@dataclass
class HostService:
    dir: Path
    _password: str | None = None

    @property
    def conf(self) -> Path:
        return self.dir / "redis.conf"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def pidfile(self, name: str) -> Path:
        return self.dir / f"{name}.pid"

    # -- state --------------------------------------------------------------------
    def conf_value(self, name: str) -> str | None:
        with contextlib.suppress(OSError):
            for line in self.conf.read_text().splitlines():
                if line.startswith(name + " "):
                    return line.split(None, 1)[1].strip().strip('"')
        return None

    def elsewhere(self) -> str | None:
        """Why this folder's service is not this process space's to start or stop: it was
        started in another one (a container or machine sharing the folder: its pids mean
        nothing here) and its Redis still answers. None when it is ours, or stale (a
        reboot changes the space too, and leaves nothing answering)."""
        try:
            space = json.loads(read_text(self.dir / SPACE_FILE))
            url = read_text(self.dir / BROKER_FILE).strip()
        except (OSError, ValueError):
            return None
        if same_space(space) or not url or ping_error(url) is not None:
            return None
        return (f"the host service in {self.dir} was started in another process space (a "
                "container or machine sharing this folder) and still serves: run `stmpo "
                "host` there")

    def password(self) -> str:
        """The persisted Redis password (generated on the first ``up``)."""
        if self._password is None:
            self._password = self.conf_value("requirepass") or secrets.token_urlsafe(24)
        return self._password

    def broker(self, port: int, bind: str) -> BrokerUrl:
        host = "127.0.0.1" if bind in ("0.0.0.0", "*", "") else bind
        return BrokerUrl(f"redis://:{self.password()}@{host}:{port}/0")

    def running(self, name: str) -> psutil.Process | None:
        """The live process recorded in ``<name>.pid``, if it still is ours."""
        try:
            pid = int(self.pidfile(name).read_text().split()[0])
            proc = psutil.Process(pid)
            cmd = " ".join([proc.name(), *proc.cmdline()])
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except (OSError, ValueError, IndexError, psutil.Error):
            return None
        if name == "redis":  # redis-server retitles itself "redis-server <bind>:<port>"
            ours = "redis-server" in cmd and f":{self.conf_value('port')}" in cmd
        else:
            # A Flower started before the package was split into subpackages ran as
            # ``stmpo_celery.flower_main``: still ours, so ``host down`` can stop it.
            ours = any(m in cmd for m in FLOWER_MODULES)
        return proc if ours else None

    def info(self) -> dict[str, object]:
        flower: dict[str, object] = {}
        with contextlib.suppress(OSError, ValueError):
            flower = json.loads((self.dir / "flower.json").read_text())
        r, f = self.running("redis"), self.running("flower")
        return {"dir": str(self.dir), "redis_pid": r.pid if r else None,
                "flower_pid": f.pid if f else None,
                "flower_url": flower.get("url") if f else None,
                "broker_file": str(self.dir / BROKER_FILE)}

    def flower_auth_matches(self, auth: str | None) -> bool:
        """Whether the running Flower was started with ``auth`` (user:password; None: no
        auth). Only a salted hash of it is kept; a Flower that kept none is not known
        to match."""
        with contextlib.suppress(OSError, ValueError, AttributeError):
            tag = json.loads((self.dir / "flower.json").read_text()).get("auth", False)
            if tag is None or not auth:
                return tag is None and not auth
            if isinstance(tag, str):
                return hmac.compare_digest(_auth_tag(auth, bytes.fromhex(tag[:32])), tag)
        return False

    # -- up -------------------------------------------------------------------------
    def up(self, port: int, bind: str, flower: str | None, auth: str | None,
           url_prefix: str | None, group: str | None, foreground: bool) -> list[str]:
        """Start what is not running; a start that fails is undone (processes, files)."""
        try:
            return self._up(port, bind, flower, auth, url_prefix, group, foreground)
        except OSError as exc:  # a full or read-only folder: undone already, one line
            where = f" {exc.filename}" if exc.filename else ""
            raise EnvironmentProblem(
                f"cannot write the host service's folder {self.dir}{where} "
                f"({exc.strerror or exc}): free space there, or set STMPO_HOST_DIR to "
                "another folder") from None

    def _up(self, port: int, bind: str, flower: str | None, auth: str | None,
            url_prefix: str | None, group: str | None, foreground: bool) -> list[str]:
        check_bind(flower, auth, url_prefix)
        if not 0 < port < 65536:
            raise BadInput(f"--port {port} is not a TCP port: pass one from 1 to 65535")
        try:
            ipaddress.ip_address(bind)
        except ValueError:
            raise BadInput(f"--bind {bind!r} is not an IP address of this host (e.g. "
                           "127.0.0.1, or 0.0.0.0 for every interface)") from None
        gid = None
        if group:
            try:
                gid = group_id(group)
            except KeyError:
                raise BadInput(f"--group {group!r} is not a group on this host") from None
            except NotImplementedError as exc:
                raise BadInput(f"--group: {exc}") from None
        foreign = self.elsewhere()
        if foreign is not None:  # renders here find and use it through its broker file
            raise EnvironmentProblem(foreign)
        short = raise_fd_limit(defaults.FDS_HOST_SERVICE, "the host service", "")
        if short is not None and self.running("redis") is None:  # before anything is made:
            raise EnvironmentProblem(short)  # its Redis of a few clients fails every render
        fresh = not self.dir.exists()
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700 if gid is None else 0o750)
        (self.dir / "redis").mkdir(exist_ok=True, mode=0o700)
        self.logs.mkdir(exist_ok=True, mode=0o700)
        if gid is not None:
            os.chown(self.dir, -1, gid)
        said: list[str] = []
        redis_proc = self.running("redis")
        if redis_proc is None:
            stale = self.running("flower")  # watching a Redis that died: it sees nothing
            if stale is not None:
                _stop(stale)
                said.append(f"Flower stopped (pid {stale.pid}): it watched the Redis that "
                            "had stopped")
            try:
                redis_proc = self._start_redis(port, bind, foreground)
            except BaseException:  # a folder made for nothing, with a password in it
                if fresh:
                    shutil.rmtree(self.dir, ignore_errors=True)
                raise
            said.append(f"Redis started on {bind}:{port} (pid {redis_proc.pid})")
            try:
                return said + self._serve(port, bind, flower, auth, url_prefix, gid,
                                          foreground)
            except BaseException:  # a service half up would be found and used: none is
                with contextlib.suppress(Exception):
                    self.down(force=True)
                if fresh:  # and a folder made for nothing, with a password in it
                    shutil.rmtree(self.dir, ignore_errors=True)
                raise
        port = int(self.conf_value("port") or port)
        bind = self.conf_value("bind") or bind
        said.append(f"Redis already running on {bind}:{port} (pid {redis_proc.pid})")
        return said + self._serve(port, bind, flower, auth, url_prefix, gid, foreground)

    def _serve(self, port: int, bind: str, flower: str | None, auth: str | None,
               url_prefix: str | None, gid: int | None, foreground: bool) -> list[str]:
        """With Redis up: the broker file, the host-service mark, Flower."""
        said: list[str] = []
        broker = self.broker(port, bind)
        self._write_broker_file(broker, gid)
        (self.dir / SPACE_FILE).write_text(json.dumps(process_space()))
        with contextlib.suppress(Exception):  # runs keep their outcome here a while
            client = broker.client(timeout=3.0)
            client.set(keys.HOST_SERVICE, "1")
            client.close()
        said.append(f"broker URL in {self.dir / BROKER_FILE}")
        if flower and self.running("flower") is None:
            fp = start_flower(broker, ALL_RUNS, "stmpo", flower, auth, url_prefix, self.logs,
                              detach=not foreground,
                              purge_offline_s=defaults.HOST_FLOWER_PURGE_OFFLINE_S,
                              max_tasks=defaults.HOST_FLOWER_MAX_TASKS)
            try:  # without its pid file, nothing would ever stop it
                self.pidfile("flower").write_text(f"{fp.proc.pid}\n")
                (self.dir / "flower.json").write_text(json.dumps(
                    {"url": fp.url, "auth": _auth_tag(auth) if auth else None}))
            except BaseException:
                fp.stop()
                raise
            said.append(f"Flower for every run on this host: {fp.url}")
            if foreground:
                self._flower = fp
        elif flower:
            said.append(f"Flower already running: {self.info()['flower_url']}")
        return said

    def _start_redis(self, port: int, bind: str, foreground: bool) -> psutil.Process:
        binary = find_redis_server()
        if binary is None:
            raise no_redis_server_problem()
        password = self.password()  # read from the old file before it is rewritten
        fd = os.open(self.conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                f"bind {bind}\nport {port}\nprotected-mode yes\n"
                f'requirepass "{password}"\n'
                f'dir "{(self.dir / "redis").as_posix()}"\n'
                "appendonly yes\nappendfsync everysec\n"
                f'logfile "{(self.logs / "redis.log").as_posix()}"\ndaemonize no\n'
            )
        proc = subprocess.Popen(
            [binary, str(self.conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, close_fds=True,
            **child_kwargs(die_with_parent=foreground, detach=not foreground))
        client = self.broker(port, bind).client(timeout=1.0)
        deadline = time.monotonic() + 10
        try:
            self.pidfile("redis").write_text(f"{proc.pid}\n")  # may fail: a full disk
            while True:
                answer, ready = None, False
                with contextlib.suppress(redis.RedisError, OSError):
                    answer = client.info("server").get("process_id")
                    ready = bool(client.ping())  # not while it loads its append-only file
                # a Redis without a password answers any password: only ours will do
                if answer == proc.pid and ready:
                    break
                if answer is not None and answer != proc.pid:
                    raise EnvironmentProblem(
                        f"another Redis (pid {answer}) answers on {bind}:{port}: choose "
                        "another --port")
                if proc.poll() is not None:
                    raise EnvironmentProblem(
                        f"redis-server exited at start (port {port} in use?): see "
                        f"{self.logs / 'redis.log'}")
                if time.monotonic() > deadline:
                    raise EnvironmentProblem("redis-server did not answer within 10 s")
                time.sleep(0.02)
        except BaseException:
            with contextlib.suppress(OSError):
                proc.kill()
                proc.wait(5)
            self.pidfile("redis").unlink(missing_ok=True)
            raise
        finally:
            client.close()
        self._redis = proc
        return psutil.Process(proc.pid)

    def _write_broker_file(self, broker: BrokerUrl, gid: int | None) -> None:
        path = self.dir / BROKER_FILE
        tmp = path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(broker.url + "\n")
            if gid is not None:
                os.chown(tmp, -1, gid)
                os.chmod(tmp, 0o640)
            replace_file(tmp, path)
        except BaseException:  # the file stays as it was, and no temporary one is left
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def wait_foreground(self, ready: Callable[[], None] | None = None) -> int:
        """``up --foreground`` (systemd): serve until SIGTERM/SIGINT or a child dies;
        ``ready`` is called once a signal stops the service cleanly (before, it cancels
        the start, which is undone)."""
        stop: list[int] = []
        for sig in cancel_signals():  # SIGHUP too: stopped as cleanly as by SIGTERM
            signal.signal(sig, lambda s, _f: stop.append(s))
        if ready is not None:
            ready()
        redis_proc = getattr(self, "_redis", None)
        fp = getattr(self, "_flower", None)
        code = 0
        while not stop:
            if redis_proc is not None and redis_proc.poll() is not None:
                code = 1
                break
            if fp is not None and not fp.alive():
                code = 1
                break
            time.sleep(0.2)
        self.down(force=True)
        return code

    # -- down -------------------------------------------------------------------------
    def down(self, force: bool = False) -> list[str]:
        foreign = self.elsewhere()
        if foreign is not None:  # its pids are not ours: nothing here could stop it
            raise EnvironmentProblem(foreign)
        said: list[str] = []
        url = None
        with contextlib.suppress(OSError):
            url = read_text(self.dir / BROKER_FILE).strip() or None
        redis_proc = self.running("redis")
        broker = BrokerUrl(url) if url and redis_proc else None
        client = broker.client(timeout=2.0) if broker is not None else None
        if client is not None:
            try:
                for run_id, why in reap_dead_runs(client, broker=broker).items():
                    said.append(f"removed the keys of dead run {run_id} ({why})")
                live = client.hkeys(keys.REGISTRY)
            except (redis.RedisError, OSError) as exc:
                if not force and "MISCONF" in str(exc):  # it answers, and cannot save
                    raise EnvironmentProblem(
                        f"this host's Redis cannot save its data ({self.dir} is full), so "
                        "it refuses to clean up: free space there and try again, or pass "
                        "--force (runs still using it then fail)") from None
                if not force:  # busy or hung: runs may still use it
                    raise EnvironmentProblem(
                        f"this host's Redis (pid {redis_proc.pid if redis_proc else '?'}) "
                        f"does not answer ({type(exc).__name__}), so whether runs still use "
                        "it cannot be told: try again, or pass --force (they then fail)"
                    ) from None
                live = []
            if live and not force:
                runs = ", ".join(map(str, live))
                raise EnvironmentProblem(
                    f"{len(live)} run(s) still use this host's Redis ({runs}): "
                    "wait for them, or pass --force (they then fail)")
        flower = self.running("flower")
        if flower is not None:
            _stop(flower)
            said.append(f"Flower stopped (pid {flower.pid})")
        if client is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                junk = list(client.scan_iter(match=_glob_escape(keys.prefix(ALL_RUNS)) + "*"))
                if junk:
                    client.delete(*junk)
            with contextlib.suppress(redis.RedisError, OSError):
                client.shutdown()  # writes the append-only file and exits
            client.close()
        if redis_proc is not None:
            _stop(redis_proc)
            said.append(f"Redis stopped (pid {redis_proc.pid})")
        for name in ("redis.pid", "flower.pid", "flower.json", BROKER_FILE, SPACE_FILE):
            with contextlib.suppress(OSError):
                (self.dir / name).unlink()
        return said or ["nothing was running"]


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _gone(proc: psutil.Process, timeout: float) -> bool:
    """Exited (a zombie counts: it is not our child and its parent reaps it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def _stop(proc: psutil.Process, timeout: float = 5.0) -> None:
    if _gone(proc, 0.2):
        return
    with contextlib.suppress(psutil.Error):
        proc.terminate()
    if not _gone(proc, timeout):
        with contextlib.suppress(psutil.Error):
            proc.kill()
        _gone(proc, timeout)


def _auth_tag(auth: str, salt: bytes | None = None) -> str:
    """A salted hash of Flower's ``user:password`` (the salt in its first 32 hex digits):
    what a later ``host up --flower-auth`` is compared with, the password not kept."""
    salt = salt or secrets.token_bytes(16)
    return salt.hex() + hashlib.pbkdf2_hmac("sha256", auth.encode(), salt, 100_000).hex()
