"""Deadline Cloud: the job bundle writer (``stmpo bundle``) and job fonts with
per-session leases (``stmpo fonts``).

Runs on the submitting machine (bundle) and inside OpenJD environment actions on the
worker (fonts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._bigtask import CHUNK_LIMIT, describe_tasks
    from ._bundle import BIG, IMAGE, plan_bundle, task_chunks, template_roots, write_bundle
    from ._fontfiles import (
        FONT_EXTENSIONS,
        find_fonts,
        refuse_broken_fonts,
        skipped_files,
        skipped_note,
    )
    from ._fontleases import Registry, current_session, say, session_ended
    from ._fonts import install_fonts, places, refresh_cache, remove_fonts
    from ._project import describe, read_project

# Imported on first use: a command that never needs Celery never loads it.
_HOME = {
    "BIG": "._bundle",
    "CHUNK_LIMIT": "._bigtask",
    "describe": "._project",
    "describe_tasks": "._bigtask",
    "read_project": "._project",
    "FONT_EXTENSIONS": "._fontfiles",
    "Registry": "._fontleases",
    "current_session": "._fontleases",
    "find_fonts": "._fontfiles",
    "refuse_broken_fonts": "._fontfiles",
    "skipped_files": "._fontfiles",
    "skipped_note": "._fontfiles",
    "install_fonts": "._fonts",
    "places": "._fonts",
    "refresh_cache": "._fonts",
    "remove_fonts": "._fonts",
    "say": "._fontleases",
    "session_ended": "._fontleases",
    "IMAGE": "._bundle",
    "plan_bundle": "._bundle",
    "task_chunks": "._bundle",
    "template_roots": "._bundle",
    "write_bundle": "._bundle",
}

__all__ = [
    "BIG",
    "CHUNK_LIMIT",
    "describe",
    "describe_tasks",
    "read_project",
    "FONT_EXTENSIONS",
    "Registry",
    "current_session",
    "find_fonts",
    "refuse_broken_fonts",
    "skipped_files",
    "skipped_note",
    "install_fonts",
    "places",
    "refresh_cache",
    "remove_fonts",
    "say",
    "session_ended",
    "IMAGE",
    "plan_bundle",
    "task_chunks",
    "template_roots",
    "write_bundle",
]


__getattr__ = lazy_exports(__name__, _HOME)
