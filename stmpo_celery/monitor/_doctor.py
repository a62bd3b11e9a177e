"""``stmpo doctor``: can this host render? One line per check; non-zero when one fails."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..aerender import resolve_aerender
from ..broker import (
    check_reachable,
    find_redis_server,
    mask_url,
    no_redis_server_problem,
    parse_broker_url,
)
from ..errors import StmpoError
from ..host import (
    RunJob,
    child_kwargs,
    decode_output,
    has_render_only_licence_file,
    kill_tree,
    pinning_check,
    uncreatable,
    unix_socket_broker,
)
from ..plan import ram_budget
from ._hostdir import discover_broker

AERENDER_VERSION_WAIT_S = 30.0  #: ``aerender -version`` answers in this long, or fails
VERSION_PIPE_GRACE_S = 1.0  #: after the launcher exits, its output pipe closes within this


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fatal: bool = True

    def line(self) -> str:
        mark = "ok  " if self.ok else ("FAIL" if self.fatal else "warn")
        return f"{mark} {self.name}: {self.detail}"


def check_aerender(explicit: str | None) -> Check:
    try:
        path = resolve_aerender(explicit)
    except StmpoError as exc:
        return Check("aerender", False, exc.message)
    try:
        answered, out, code = _ask_version(path)
    except OSError as exc:
        return Check("aerender", False, f"{path} cannot run: {exc.strerror or exc}")
    if not answered:
        return Check("aerender", False, f"{path} -version did not answer in "
                     f"{AERENDER_VERSION_WAIT_S:g} s: check the install (a licence or "
                     "first-run dialog waiting?)")
    version = next((ln.strip() for ln in out.splitlines() if "aerender version" in ln), None)
    if version is None:
        return Check("aerender", False, f"{path} is not aerender: `-version` printed no "
                     f"'aerender version' line (exit {code}); fix --aerender or "
                     "$AERENDER_PATH")
    return Check("aerender", True, f"{path} ({version})")



def _ask_version(path: str) -> tuple[bool, str, int | None]:
    """``aerender -version``: (did the launcher end in time, what it printed, its exit
    code). Started in a group of its own, so that whatever it leaves behind — an AfterFX
    waiting on a dialog, holding the output pipe after the launcher exited — is found and
    killed: nothing outlives doctor, and doctor never waits on a pipe such a process
    holds."""
    job = RunJob()
    proc = subprocess.Popen([path, "-version"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            **child_kwargs(detach=True))
    job.assign(proc)
    got: list[bytes] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: got.append(stdout.read()), daemon=True)
    reader.start()
    try:
        proc.wait(timeout=AERENDER_VERSION_WAIT_S)
        answered = True
    except subprocess.TimeoutExpired:
        answered = False
    reader.join(timeout=VERSION_PIPE_GRACE_S)  # the pipe closes now, unless held
    job.kill_all()
    kill_tree(proc.pid, pgid=proc.pid)
    job.close()
    reader.join(timeout=5)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    stdout.close()
    return answered, decode_output(b"".join(got)), proc.returncode


def check_broker(url: str | None) -> Check:
    """The broker a render started now would use, found the way ``stmpo render`` finds it:
    ``--broker``, ``$STMPO_BROKER_URL``, ``$STMPO_PROFILE``'s broker key, the host service
    (if it answers), else embedded."""
    from ..config import broker_setting
    from ._hostdir import read_broker_url

    try:
        url, origin = broker_setting(url)
    except StmpoError as exc:  # the profile does not load: render would refuse it too
        return Check("broker", False, exc.message)
    if url:
        try:
            broker = parse_broker_url(url)
            check_reachable(broker)
        except StmpoError as exc:
            return Check("broker", False, exc.message)
        return Check("broker", True, f"{mask_url(url)} ({origin}) answers")
    hosted = discover_broker()
    if hosted:
        return Check("broker", True, f"the host service's Redis {mask_url(hosted)} answers; "
                     "renders on this host use it (stmpo host up)")
    server = find_redis_server()
    silent = (" (the host service's broker file exists but its Redis does not answer)"
              if read_broker_url() else "")
    if server is None:
        return Check("broker", False, no_redis_server_problem().message + silent)
    where = ("a private unix socket" if unix_socket_broker()
             else "127.0.0.1 (loopback TCP, random password)")
    return Check("broker", True, f"renders use an embedded redis-server ({server}), one per "
                 f"run, on {where}{silent}")


def check_pinning() -> Check:
    ok, detail = pinning_check()
    return Check("pinning", ok, detail, fatal=False)


def check_ram(min_gb: float) -> Check:
    """What ``stmpo render`` would plan with: the same budget as its slot sizing."""
    vm = psutil.virtual_memory()
    budget, text = ram_budget(vm.total / 2**30, vm.available / 2**30)
    ok = budget >= min_gb
    return Check("ram", ok, text + ("" if ok else f" (need {min_gb:g} GB for one aerender)"))


def check_disk(output_dir: str | None, min_gb: float) -> Check:
    path = Path(output_dir or os.getcwd())
    blocked = uncreatable(str(path))
    if blocked is not None:
        return Check("disk", False, f"the output folder {path} cannot be created: "
                     f"{' '.join(blocked)}")
    probe = path
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    ok = free >= min_gb
    return Check("disk", ok, f"{free:.1f} GB free at {probe}"
                 + ("" if ok else f" (need {min_gb:g} GB)"))


def licence_file() -> Path:
    return Path.home() / "Documents" / "ae_render_only_node.txt"


def check_licence() -> Check:
    path = licence_file()
    if path.exists():
        return Check("licence", True, f"render-only node file present ({path})", fatal=False)
    if not has_render_only_licence_file():
        return Check("licence", True, "not applicable on this platform", fatal=False)
    return Check("licence", False, f"no render-only node file at {path}: create an empty one "
                 "on render-only nodes (or sign in to Creative Cloud)", fatal=False)


def run_checks(aerender: str | None, broker: str | None, output_dir: str | None,
               min_ram_gb: float, min_disk_gb: float) -> list[Check]:
    return [check_aerender(aerender), check_broker(broker), check_pinning(),
            check_ram(min_ram_gb), check_disk(output_dir, min_disk_gb), check_licence()]
