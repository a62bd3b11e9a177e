"""Published versions of a shot: ``SHOT_DIR/vNNN/`` with a ``version.json`` manifest.

A job submitted with ``--publish SHOT_DIR`` takes the next free ``vNNN`` (created with
``mkdir``, so two submits never share one) and renders into it. When its last task ends
the worker that ran it writes ``version.json``: job, project snapshot hash, comp, frame
range, every frame's size and sha256, each task's host and summary, status
``pending-review``. ``stmpo versions approve|reject`` change only the status (with a
history line); listing re-hashes the frames and says when they no longer match.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..aerender import file_problem
from ..errors import BadInput, EnvironmentProblem, StmpoError
from ..host import read_text, replace_file, transient_file_lock
from ..plan import parse_frames, parse_output
from ._snapshot import sha256_file

MANIFEST = "version.json"
JOB_MARK = ".stmpo-job"
REVIEW_LOCK = ".stmpo-review.lock"  #: held while a review changes the manifest
REVIEW_LOCK_WAIT_S = 30.0
_VERSION = re.compile(r"^v(\d{3,})$")
STATUSES = ("pending-review", "approved", "rejected")


def version_dirs(shot: Path) -> list[Path]:
    if not shot.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in shot.iterdir()
             if p.is_dir() and (m := _VERSION.match(p.name))]
    return [p for _, p in sorted(found)]


def reserve_version(shot: Path, job_id: str) -> tuple[str, Path]:
    """Create the next free ``vNNN`` (atomic ``mkdir``); mark it with the job id."""
    existing = version_dirs(shot)
    n = int(existing[-1].name[1:]) + 1 if existing else 1
    while True:
        path = shot / f"v{n:03d}"
        try:
            path.mkdir()
        except FileExistsError:
            n += 1
            continue
        (path / JOB_MARK).write_text(job_id + "\n", encoding="utf-8")
        return path.name, path


def release_version(path: Path) -> None:
    """Undo :func:`reserve_version` (a submit that failed before queuing anything)."""
    with contextlib.suppress(OSError):
        (path / JOB_MARK).unlink()
    with contextlib.suppress(OSError):
        path.rmdir()


def _write(path: Path, data: dict[str, Any]) -> None:
    """Write the manifest whole or not at all; a file the OS will not let go of (another
    program holds it open on Windows for longer than ``replace_file`` waits) is one line
    (exit 3), the manifest as it was."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per writer
    try:
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        replace_file(tmp, path)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write {path} ({exc.strerror or exc}): if another "
                                 "program holds it open, close it and run again") from None
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _review_lock(vdir: Path, wait: float = REVIEW_LOCK_WAIT_S) -> Iterator[None]:
    """Hold ``vdir``'s review lock: reviews of one version change its manifest one at a
    time, so none is lost (released by the OS if this process dies; the lock file is
    removed once released)."""
    with transient_file_lock(vdir / REVIEW_LOCK, wait, unusable=f"cannot lock {vdir} for review",
                           busy=f"{vdir.name} stayed locked by another review for "
                                f"{wait:.0f} s: try again"):
        yield


def frame_files(job: dict[str, Any]) -> list[tuple[int, Path]]:
    out = job.get("output") or {}
    if not job.get("frames") or "OutputFileName" not in out:
        return []
    pattern = parse_output(str(Path(out["OutputDir"]) / out["OutputFileName"]))
    if not pattern.is_sequence:
        return [(0, Path(pattern.raw))]
    return [(f, Path(pattern.path_for(f))) for f in parse_frames(job["frames"])]


def write_manifest(job: dict[str, Any], tasks: list[dict[str, Any]]) -> Path:
    """``version.json`` of a published job whose tasks all succeeded."""
    pub = job["publish"]
    vdir = Path(pub["dir"])
    frames, missing, broken = [], [], []
    for number, path in frame_files(job):
        if not path.is_file():
            missing.append(number)
            continue
        problem = file_problem(str(path))  # whole when its task ended; maybe not now
        if problem is not None:
            broken.append({"frame": number, "problem": problem})
            continue
        frames.append({"frame": number, "file": os.path.relpath(path, vdir),
                       "size": path.stat().st_size, "sha256": sha256_file(path)})
    snap = job.get("snapshot") or {}
    now = time.time()
    status = "pending-review" if not missing and not broken else "incomplete"
    manifest = {
        "version": pub["version"], "shot_dir": pub["shot_dir"], "job": job["id"],
        "job_name": job.get("name"),
        "project": {"original": snap.get("original"), "snapshot": snap.get("snapshot"),
                    "sha256": snap.get("sha256")},
        "comp": job.get("comp"), "frame_range": job.get("frames"),
        "frame_count": len(frames), "missing_frames": missing, "broken_frames": broken,
        "frames": frames,
        "tasks": [{"index": t["index"], "step": t["step"], "task": t["label"],
                   "host": t.get("host"), "worker": t.get("worker"), "runs": t.get("runs"),
                   "summary": t.get("summary")} for t in tasks],
        "status": status, "created": now,
        "history": [{"status": status, "at": now, "by": "stmpo farm"}],
    }
    path = vdir / MANIFEST
    _write(path, manifest)
    return path


def verify(vdir: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems of the frames on disk against the manifest (empty: they match)."""
    changed, gone, cut = [], [], []
    for f in manifest.get("frames") or []:
        path = vdir / f["file"]
        if not path.is_file():
            gone.append(f["frame"])
        elif path.stat().st_size != f["size"] or sha256_file(path) != f["sha256"]:
            changed.append(f["frame"])
        elif file_problem(str(path)) is not None:  # hashed as it was: cut short already
            cut.append(f["frame"])
    out = []
    if changed:
        out.append(f"{len(changed)} frame(s) changed since publishing: {_few(changed)}")
    if gone:
        out.append(f"{len(gone)} frame(s) missing: {_few(gone)}")
    if cut:
        out.append(f"{len(cut)} frame(s) not whole: {_few(cut)}")
    if manifest.get("missing_frames"):
        out.append(f"published without {len(manifest['missing_frames'])} frame(s)")
    broken = manifest.get("broken_frames")
    if isinstance(broken, list) and broken:
        out.append(f"published without {len(broken)} frame(s) that were not whole: "
                   + _few([int(b.get("frame", 0)) for b in broken if isinstance(b, dict)]))
    return out


def _few(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:8]))
    return shown + (" ..." if len(numbers) > 8 else "")


def read_manifest(path: Path) -> dict[str, Any]:
    """A version's manifest as :func:`write_manifest` wrote it; ``ValueError`` saying
    what is wrong otherwise (``FileNotFoundError`` when there is none)."""
    try:
        data = json.loads(read_text(path))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__}, not an object")
    frames = data.get("frames")
    if not isinstance(frames, list) or not all(
            isinstance(f, dict) and isinstance(f.get("frame"), int)
            and isinstance(f.get("file"), str) and isinstance(f.get("size"), int)
            and isinstance(f.get("sha256"), str) for f in frames):
        raise ValueError("no list of frames (frame, file, size, sha256)")
    if not isinstance(data.get("missing_frames", []), list):
        raise ValueError("missing_frames is not a list")
    if not isinstance(data.get("status"), str):
        raise ValueError("no status")
    if not isinstance(data.get("history", []), list):
        raise ValueError("history is not a list")
    return data


def list_versions(shot: Path, job_state: Callable[[str], str | None] | None = None
                  ) -> list[dict[str, Any]]:
    """Every ``vNNN`` of ``shot`` with its status and problems; ``job_state(job id)``, when
    given (the farm Redis answers), says how an unpublished version's job stands."""
    if not shot.is_dir():
        what = "is not a folder" if shot.exists() else "does not exist"
        raise BadInput(f"shot folder {shot} {what}: pass the folder that holds v001, v002, ...")
    out = []
    for vdir in version_dirs(shot):
        entry: dict[str, Any] = {"version": vdir.name, "dir": str(vdir)}
        try:
            manifest = read_manifest(vdir / MANIFEST)
        except FileNotFoundError:
            job = ""
            with contextlib.suppress(OSError):
                job = (vdir / JOB_MARK).read_text(encoding="utf-8").strip()
            state = job_state(job) if job and job_state is not None else None
            why = (f"job {job} is {state}" if state else
                   f"job {job} has not succeeded (yet): see 'stmpo farm jobs'" if job else "")
            entry.update(status="unpublished", job=job or None, job_state=state,
                         problems=[f"no {MANIFEST}: {why}" if why else f"no {MANIFEST}"])
            out.append(entry)
            continue
        except (OSError, ValueError) as exc:
            entry.update(status="unreadable", problems=[f"{MANIFEST}: {exc}"])
            out.append(entry)
            continue
        problems = verify(vdir, manifest)
        entry.update(status=manifest.get("status"), job=manifest.get("job"),
                     frames=manifest.get("frame_count"), frame_range=manifest.get("frame_range"),
                     comp=manifest.get("comp"), matches=not problems, problems=problems,
                     created=manifest.get("created"))
        out.append(entry)
    return out


def set_status(shot: Path, version: str, status: str, note: str | None) -> dict[str, Any]:
    if status not in STATUSES:
        raise BadInput(f"status {status!r}: use one of {', '.join(STATUSES)}")
    vdir = shot / version
    path = vdir / MANIFEST
    if not _VERSION.match(version) or not vdir.is_dir():
        raise BadInput(f"{shot} has no version {version!r}: see 'stmpo versions list {shot}'")
    if note is not None and not note.strip():
        raise BadInput(f"--note is empty: say why {version} is {status}")
    if not path.is_file():  # checked before the lock file is made
        raise BadInput(f"{version} is not published yet (no {MANIFEST}): wait for its job")
    with _review_lock(vdir):
        return _review(vdir, version, status, note)


def _review(vdir: Path, version: str, status: str, note: str | None) -> dict[str, Any]:
    path = vdir / MANIFEST
    try:
        manifest = read_manifest(path)
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path} is not a manifest stmpo wrote: {exc}; render the version "
                       "again (its job writes a new one)") from None
    problems = verify(vdir, manifest)
    if not manifest["frames"]:
        problems.append("its manifest lists no frame")
    if status == "approved" and problems:
        raise StmpoError(f"{version} cannot be approved: {'; '.join(problems)}. Render it "
                         "again or reject it")
    manifest["status"] = status
    entry = {"status": status, "at": time.time(), "by": _user()}
    if note:
        entry["note"] = note
    manifest.setdefault("history", []).append(entry)
    _write(path, manifest)
    return manifest


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
