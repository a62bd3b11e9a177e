"""What aerender left on disk: which requested frames are not whole files.

After Effects writes a frame in place, so a renderer killed mid-write leaves a file of
non-zero size that is not a frame. A frame counts only when the format's own structure
says it is complete (:func:`stmpo_celery.plan.frame_problem`: PNG ends with IEND, JPEG
with EOI, EXR/TIFF/DPX offsets and sizes inside the file). Used by a slot to verify its
chunk, by the orchestrator before planning (resume) and after the run, and by
redelivery.
"""

from __future__ import annotations

import os

from ..plan import OutputPattern, can_check, frame_problem


def _read_problem(path: str) -> str | None:
    """Why ``path``, read now, is not a whole frame (empty, truncated), or None; raises
    the OSError when it cannot be read at all (absent, or this process out of file
    descriptors, an I/O error: then nothing is known of it)."""
    size = os.path.getsize(path)
    if size <= 0:
        return "empty file"
    with open(path, "rb") as fh:
        def read(offset: int, length: int) -> bytes:
            fh.seek(offset)
            return fh.read(length)

        return frame_problem(path, size, read)


def known_not_whole(path: str) -> bool:
    """Whether ``path`` was read just now and is not a whole frame (empty, cut short). An
    absent file, or one that cannot be read (no file descriptor left, an I/O error), is
    not known to be anything: a frame is never deleted on such a guess."""
    try:
        return _read_problem(path) is not None
    except OSError:
        return False


def file_problem(path: str) -> str | None:
    """Why ``path`` is not a whole frame (absent, empty, truncated, unreadable), or None."""
    try:
        return _read_problem(path)
    except OSError as exc:
        return exc.strerror or "missing"


Signature = tuple[int, int, int]  #: a file's (mtime ns, size, inode)


def signature(path: str) -> Signature | None:
    """What tells one version of a file from another, without comparing clocks (a file
    server's may differ from this host's)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def signatures(pattern: OutputPattern, frames: list[int]) -> dict[int, Signature]:
    """The signatures of the frames' files that exist now (before a render)."""
    out: dict[int, Signature] = {}
    for f in frames:
        sig = signature(pattern.path_for(f))
        if sig is not None:
            out[f] = sig
    return out


def written_whole(path: str, before: Signature | None) -> bool:
    """Whether ``path`` is a whole frame this render wrote: whole, and not the file that
    was there before it started (``before``; None = there was none)."""
    now = signature(path)
    return now is not None and now != before and file_problem(path) is None


def untrusted_since(path: str, counted: Signature | None) -> str | None:
    """Why a frame counted done (its file's signature then: ``counted``) can no longer be
    trusted: its file changed since and is not whole — or is of a format whose end cannot
    be checked, where a rewrite cut short passes for whole. None when it is unchanged, or
    rewritten whole in a format that says where it ends."""
    now = signature(path)
    if now == counted:
        return None
    if now is None:
        return "deleted"
    problem = file_problem(path)
    if problem is not None:
        return problem
    if not can_check(path):
        return "rewritten, and a cut-short file of this format cannot be told from a whole one"
    return None


def missing_frames(pattern: OutputPattern, frames: list[int]) -> list[int]:
    """Frames that are not whole files: absent, empty, or cut short mid-write."""
    return [f for f in frames if file_problem(pattern.path_for(f)) is not None]


def delete_incomplete(pattern: OutputPattern, frames: list[int]) -> list[str]:
    """Delete the files of ``frames`` (frames found not whole) that exist and, read again,
    are not whole: a cut-short or empty file must never be left where a compositor or a
    publish step could take it for a frame. Returns the paths deleted."""
    gone: list[str] = []
    for f in frames:
        path = pattern.path_for(f)
        try:
            if known_not_whole(path):
                os.unlink(path)
                gone.append(path)
        except OSError:
            continue
    return gone
