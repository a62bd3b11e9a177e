"""Where After Effects installs aerender, per OS and installed version (recorded facts).

Windows: ``%ProgramFiles%\\Adobe\\Adobe After Effects 2025\\Support Files\\aerender.exe``
(older: ``Adobe After Effects CC 2019``; previews: ``Adobe After Effects (Beta)``).
macOS: ``/Applications/Adobe After Effects 2025/aerender``. Linux has no After Effects
(``/opt/adobe`` is where a wrapper or the simulator may be put). Newest version first;
a Beta comes after every release.
"""

from __future__ import annotations

import ntpath
import posixpath
import re
from collections.abc import Iterable, Mapping

_VERSION = re.compile(r"Adobe After Effects (?:CC )?(\d{4})\b")


def install_globs(os_kind: str, env: Mapping[str, str]) -> list[str]:
    """Glob patterns for aerender on ``os_kind`` ("windows", "macos", "linux")."""
    if os_kind == "windows":
        roots: list[str] = []
        for var in ("ProgramW6432", "ProgramFiles", "PROGRAMFILES"):
            root = env.get(var)
            if root and root.lower() not in {r.lower() for r in roots}:
                roots.append(root)
        roots = roots or [r"C:\Program Files"]
        return [ntpath.join(r, "Adobe", "Adobe After Effects *", "Support Files", "aerender.exe")
                for r in roots]
    if os_kind == "macos":
        return [posixpath.join("/Applications", "Adobe After Effects *", "aerender")]
    return ["/opt/adobe/Adobe After Effects */aerender"]


def version_key(path: str) -> tuple[int, int, str]:
    """Sort key: releases by year, then a Beta, then anything unrecognised."""
    m = _VERSION.search(path)
    if m:
        return (2, int(m.group(1)), path)
    if "(Beta)" in path:
        return (1, 0, path)
    return (0, 0, path)


def newest_first(paths: Iterable[str]) -> list[str]:
    return sorted(set(paths), key=version_key, reverse=True)
