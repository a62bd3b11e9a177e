"""Scene protection: the project as submitted, copied into the job's folder.

Tasks render the copy, so an artist saving the .aep after submitting changes nothing.
The footage the bundle attaches (``asset_references`` inputs) is listed with sizes and
mtimes beside it, so a changed plate can be spotted later; footage is not copied.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(CHUNK)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def snapshot_file(src: Path, dest_dir: Path) -> dict[str, Any]:
    """Copy ``src`` into ``dest_dir`` (metadata kept); its facts for the job record."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    shutil.copy2(src, dest)
    os.chmod(dest, 0o444)  # the snapshot is read-only: nothing edits it in place
    st = dest.stat()
    return {"original": str(src), "snapshot": str(dest), "size": st.st_size,
            "mtime": st.st_mtime, "sha256": sha256_file(dest)}


def footage_list(inputs: dict[str, Any], base: Path) -> list[dict[str, Any]]:
    """Files named by asset references (``filenames`` and files under ``directories``)."""
    files: list[Path] = []
    for name in inputs.get("filenames") or []:
        files.append(base / name)
    for d in inputs.get("directories") or []:
        root = base / d
        if root.is_dir():
            files.extend(p for p in sorted(root.rglob("*")) if p.is_file())
    out = []
    for f in files:
        try:
            st = f.stat()
            out.append({"path": str(f.resolve()), "size": st.st_size, "mtime": st.st_mtime})
        except OSError:
            out.append({"path": str(f), "missing": True})
    return out


def write_footage(dest_dir: Path, footage: list[dict[str, Any]]) -> Path:
    path = dest_dir / "footage.json"
    path.write_text(json.dumps(footage, indent=1), encoding="utf-8")
    return path
