"""`stmpo farm`'s parts that need no worker, in-process or as one command: footage
listing and scene snapshots, job states and priorities, versions and their reviews.
The farm with real workers: test_farm.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def test_footage_listed_with_sizes_and_mtimes(tmp_path: Path) -> None:
    from stmpo_celery.farm._snapshot import footage_list, snapshot_file

    (tmp_path / "plates").mkdir()
    (tmp_path / "plates" / "a.exr").write_bytes(b"12345")
    (tmp_path / "logo.png").write_bytes(b"xy")
    listed = footage_list({"filenames": ["logo.png", "gone.mov"], "directories": ["plates"]},
                          tmp_path)
    by_name = {Path(f["path"]).name: f for f in listed}
    assert by_name["logo.png"]["size"] == 2 and by_name["a.exr"]["size"] == 5
    assert by_name["a.exr"]["mtime"] == (tmp_path / "plates" / "a.exr").stat().st_mtime
    assert by_name["gone.mov"]["missing"] is True
    snap = snapshot_file(tmp_path / "logo.png", tmp_path / "job" / "scene")
    assert snap["sha256"] == hashlib.sha256(b"xy").hexdigest() and snap["size"] == 2
    assert not os.access(snap["snapshot"], os.W_OK) or os.geteuid() == 0  # read-only copy


def test_job_state_and_priority_rules() -> None:
    from stmpo_celery.farm._app import redis_priority
    from stmpo_celery.farm._store import job_summary_state

    def tasks(*states: str) -> list[dict[str, Any]]:
        return [{"state": st} for st in states]

    assert job_summary_state("queued", tasks("queued", "queued")) == "queued"
    assert job_summary_state("queued", tasks("succeeded", "queued")) == "running"
    assert job_summary_state("queued", tasks("succeeded", "succeeded")) == "succeeded"
    assert job_summary_state("queued", tasks("succeeded", "failed")) == "failed"
    assert job_summary_state("canceled", tasks("running", "canceled")) == "canceling"
    assert job_summary_state("canceled", tasks("succeeded", "canceled")) == "canceled"
    assert [redis_priority(p) for p in (100, 91, 50, 0)] == [0, 0, 5, 9]  # higher first


def test_versions_refuse_what_is_not_a_manifest_and_approve_nothing_empty(
        tmp_path: Path) -> None:
    from stmpo_celery.errors import BadInput, StmpoError
    from stmpo_celery.farm import list_versions, set_status

    with pytest.raises(BadInput, match="does not exist"):
        list_versions(tmp_path / "nope")
    shot = tmp_path / "shot"
    for name, text in (("v001", "[]"), ("v002", "{bad"), ("v003", '{"status": "x"}')):
        (shot / name).mkdir(parents=True)
        (shot / name / "version.json").write_text(text)
    assert [e["status"] for e in list_versions(shot)] == ["unreadable"] * 3
    for v in ("v001", "v002", "v003"):
        for status in ("approved", "rejected"):
            with pytest.raises(BadInput, match="not a manifest stmpo wrote"):
                set_status(shot, v, status, "n")
    (shot / "v004").mkdir()
    (shot / "v004" / "version.json").write_text('{"frames": [], "status": "pending-review"}')
    with pytest.raises(StmpoError, match="lists no frame"):
        set_status(shot, "v004", "approved", None)
    assert set_status(shot, "v004", "rejected", "empty")["status"] == "rejected"
    with pytest.raises(BadInput, match="--note is empty"):
        set_status(shot, "v004", "rejected", "  ")
    (shot / "v005").mkdir()
    (shot / "v005" / "version.json").write_text('{"frames": []}')  # no status
    (shot / "v006").mkdir()
    assert [e["status"] for e in list_versions(shot)][4:] == ["unreadable", "unpublished"]
    with pytest.raises(BadInput, match="not published yet"):
        set_status(shot, "v006", "rejected", "n")
    assert list((shot / "v006").iterdir()) == []  # no lock file left in it


def test_concurrent_reviews_of_one_version_lose_no_note(tmp_path: Path) -> None:
    """Eight reviewers at once, in processes of their own: every note is in the history."""
    vdir = tmp_path / "shot" / "v001"
    vdir.mkdir(parents=True)
    (vdir / "f_0001.png").write_bytes(b"frame")
    digest = hashlib.sha256(b"frame").hexdigest()
    (vdir / "version.json").write_text(json.dumps({
        "status": "pending-review", "history": [],
        "frames": [{"frame": 1, "file": "f_0001.png", "size": 5, "sha256": digest}]}))
    procs = [subprocess.Popen([sys.executable, "-m", "stmpo_celery.cli", "versions",
                               "approve" if i % 2 else "reject", str(tmp_path / "shot"),
                               "v001", "--note", f"n{i}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i in range(8)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    history = json.loads((vdir / "version.json").read_text())["history"]
    assert sorted(h["note"] for h in history) == [f"n{i}" for i in range(8)]
    assert sorted(p.name for p in vdir.iterdir()) == [".stmpo-review.lock", "f_0001.png",
                                                       "version.json"]  # no temp file left


def test_a_frame_cut_short_after_its_task_is_never_published_nor_approved(
        tmp_path: Path) -> None:
    """A frame whole when its task ended can be cut short before the job's last task ends
    (a re-render writing in place, a copy, a disk filling up): publishing hashes what is
    there, so it must be whole to be published; and a version published before that
    rule, with such a frame hashed into it, cannot be approved."""
    from stmpo_celery.aerender._fakeframes import frame_bytes
    from stmpo_celery.errors import StmpoError
    from stmpo_celery.farm import list_versions, set_status
    from stmpo_celery.farm._versions import write_manifest

    shot = tmp_path / "shot"
    vdir = shot / "v001"
    vdir.mkdir(parents=True)
    for f in (1, 2, 3):
        path = vdir / f"render_{f:05d}.png"
        path.write_bytes(frame_bytes(str(path), f))
    whole = (vdir / "render_00002.png").read_bytes()
    (vdir / "render_00002.png").write_bytes(whole[: len(whole) // 2])
    job = {"id": "j1", "frames": "1-3", "publish": {"dir": str(vdir), "version": "v001",
                                                     "shot_dir": str(shot)},
           "output": {"OutputDir": str(vdir), "OutputFileName": "render_[#####].png"}}
    manifest = json.loads(write_manifest(job, []).read_text())
    assert manifest["status"] == "incomplete"
    assert [f["frame"] for f in manifest["frames"]] == [1, 3]
    assert [b["frame"] for b in manifest["broken_frames"]] == [2]
    with pytest.raises(StmpoError, match="cannot be approved: .*not whole"):
        set_status(shot, "v001", "approved", None)
    # an older manifest that hashed the cut-short frame as it was
    manifest["frames"].insert(1, {"frame": 2, "file": "render_00002.png",
                                  "size": len(whole) // 2, "sha256": hashlib.sha256(
                                      whole[: len(whole) // 2]).hexdigest()})
    manifest.update(status="pending-review", broken_frames=[])
    (vdir / "version.json").write_text(json.dumps(manifest))
    [entry] = list_versions(shot)
    assert not entry["matches"] and "1 frame(s) not whole: 2" in entry["problems"]
    with pytest.raises(StmpoError, match="cannot be approved: 1 frame\\(s\\) not whole"):
        set_status(shot, "v001", "approved", None)
