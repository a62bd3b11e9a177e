"""A render host whose disk fills: the output folder, the host service's folder, the
summary, the logs, the history. Real small file systems (tmpfs, mounted by root); the
module skips, saying why, where mounting is not allowed."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

Disk = Callable[[str], Path]


def fill(folder: Path) -> None:
    """Fill ``folder``'s file system to the last byte."""
    fd = os.open(folder / f"fill-{uuid.uuid4().hex}", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Disk]:
    """``small_disk(size)``: a fresh tmpfs of that size (``"256k"``), unmounted after."""
    mounted: list[Path] = []

    def make(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(where)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a small file system here: {res.stderr.strip()}")
        mounted.append(where)
        return where

    yield make
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_output_disk_still_keeps_the_output_lock_fresh(small_disk: Disk) -> None:
    """Other hosts judge a run by its lock's mtime. Rewriting the lock needs free space:
    on a full disk it is touched instead, so a run on another host never takes this live
    run for a dead one (two runs writing the same frames); if even that fails, the
    refresh says so instead of going stale in silence."""
    from stmpo_celery.orchestrator import _outlock
    from stmpo_celery.plan import OutputPattern

    disk = small_disk("64k")
    pattern = OutputPattern(str(disk / "f_[####].png"))
    lock, _ = _outlock.acquire(pattern, [1, 2, 3], "full0001")
    try:
        old = time.time() - 1000
        os.utime(lock.path, (old, old))
        fill(disk)
        with pytest.raises(OSError) as full:
            (disk / "one-more").write_bytes(b"x" * 8192)
        assert full.value.errno == errno.ENOSPC
        assert lock.refresh(force=True) is None
        mtime = lock.path.stat().st_mtime
        assert _outlock.alive({**lock.info, "host": "another-host"}, mtime,
                              _outlock.folder_now(lock.path.parent))
        lock.path.unlink()  # removed by hand meanwhile: neither rewrite nor touch works
        fill(disk)
        said = lock.refresh(force=True)
        assert said is not None and "cannot be re-stamped" in said and str(lock.path) in said
    finally:
        lock.release()
