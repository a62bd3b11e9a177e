"""Helpers of the ``stmpo fonts`` tests: font files of each kind, the command run in
this process or in its own, the registry as written (the private HOME is conftest's
``home`` fixture)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
from click.testing import CliRunner

from stmpo_celery.cli._main import cli
from stmpo_celery.deadline._fonts import Registry, Session

BIN = Path(sys.executable).parent
STMPO = str(BIN / "stmpo")
SESSION_VARS = ("DEADLINE_SESSION_ID", "OPENJD_SESSION_WORKING_DIR", "STMPO_FONTS_SESSION",
                 "XDG_DATA_HOME", "XDG_STATE_HOME")


def font_dir(home: Path) -> Path:
    return home / ".local" / "share" / "fonts" / "stmpo"


def state_dir(home: Path) -> Path:
    return home / ".local" / "state" / "stmpo" / "fonts"


_MAGIC = {".pfb": b"\x80\x01", ".pfm": b"\x00\x01"}


def sfnt(body: bytes, tag: bytes = b"\x00\x01\x00\x00", at: int = 0) -> bytes:
    """A TrueType/OpenType font of one table holding ``body``, as if it started at byte
    ``at`` of its file (table offsets count from the file's start)."""
    return tag + struct.pack(">HHHH", 1, 16, 0, 0) + \
        struct.pack(">4sIII", b"body", 0, at + 28, len(body)) + body


def collection(*bodies: bytes) -> bytes:
    """A TrueType/OpenType collection of one :func:`sfnt` per body."""
    at = 12 + 4 * len(bodies)
    fonts = []
    for body in bodies:
        fonts.append(sfnt(body, at=at))
        at += len(fonts[-1])
    offsets = [12 + 4 * len(bodies) + sum(map(len, fonts[:i])) for i in range(len(fonts))]
    return b"ttcf" + struct.pack(f">II{len(bodies)}I", 0x10000, len(bodies), *offsets) + \
        b"".join(fonts)


def font(name: str, body: bytes) -> bytes:
    """A font file's content (``name`` or just its extension): whole font tables holding
    ``body``, or how its kind starts then ``body`` (tells fonts apart)."""
    ext = Path("f" + name).suffix.lower()
    if ext in (".ttf", ".otf"):
        return sfnt(body, b"OTTO" if ext == ".otf" else b"\x00\x01\x00\x00")
    if ext == ".ttc":
        return collection(body)
    return _MAGIC.get(ext, b"") + body


def make_fonts(folder: Path, **files: bytes) -> Path:
    """Font files named ``Name__ext`` holding :func:`font` of the given bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = folder / name.replace("__", ".")
        path.write_bytes(font(path.name, data))
    return folder


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SESSION_VARS}
    env.update(HOME=str(home), PYTHONIOENCODING="utf-8", **extra)
    return env


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def stmpo(home: Path, *args: str, **extra: str) -> Result:
    """``stmpo fonts ARGS`` run in this process (fast); see :func:`stmpo_cli` for the real one."""
    env: dict[str, str | None] = {k: None for k in SESSION_VARS}
    env.update(HOME=str(home), **extra)
    res = CliRunner().invoke(cli, ["fonts", *args], env=env, catch_exceptions=False)
    return Result(res.exit_code, res.stdout, res.stderr)


def stmpo_cli(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """The real ``stmpo fonts ARGS`` command in a process of its own."""
    return subprocess.run([STMPO, "fonts", *args], capture_output=True, text=True,
                          encoding="utf-8", env=env_for(home, **extra), timeout=60)


def me() -> Session:
    p = psutil.Process()
    return Session("unused", p.pid, p.create_time(), None, "test")


def live(key: str) -> Session:
    s = me()
    return Session(key, s.pid, s.create_time, None, "test")


def registry(home: Path) -> Registry:
    return Registry.load(state_dir(home) / "registry.json")


def dead_process() -> tuple[int, float]:
    """The pid and start time of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = psutil.Process(proc.pid).create_time()
    proc.kill()
    proc.wait()
    return proc.pid, started
