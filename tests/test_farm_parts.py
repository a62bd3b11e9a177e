"""`stmpo farm`'s parts that need no worker, as one command or in-process: versions and
their reviews, submit's refusals, cancel, retry, remove, wait. Its rules alone:
test_farm_rules.py; the farm with real workers: test_farm.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


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
    from stmpo_celery.aerender._fakeframes import frame_bytes

    png = frame_bytes(str(vdir / "f_0001.png"), 1)  # a whole frame: approvable
    (vdir / "f_0001.png").write_bytes(png)
    digest = hashlib.sha256(png).hexdigest()
    (vdir / "version.json").write_text(json.dumps({
        "status": "pending-review", "history": [],
        "frames": [{"frame": 1, "file": "f_0001.png", "size": len(png), "sha256": digest}]}))
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
    # no temp file left, and no lock file either: the version folder holds what it publishes
    assert sorted(p.name for p in vdir.iterdir()) == ["f_0001.png", "version.json"]


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


# -- commands in-process, on a Redis of the test's own, no worker -------------------------
BUNDLE = Path(__file__).resolve().parent.parent / "openjd_bundle"


class FarmCli:
    """``stmpo farm ...`` run in-process (the ``main`` the command runs) against a farm
    Redis of this test's own; job folders under ``tmp/farm``."""

    def __init__(self, tmp: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp, self.url, self.capsys = tmp, redis_url, capsys
        self.project = tmp / "proj" / "shot.aep"
        self.project.parent.mkdir()
        self.project.write_text("project\n")
        self.farm = tmp / "farm"
        self.cwd = tmp / "cwd"
        self.cwd.mkdir()

    def __call__(self, *args: str, group: str = "farm") -> tuple[int, str, str]:
        from stmpo_celery.cli import main

        try:
            main([group, *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = self.capsys.readouterr()
        return code, out.out, out.err

    def submit(self, *extra: str) -> tuple[int, str, str]:
        return self("submit", str(BUNDLE), "-p", f"ProjectFile={self.project}", "-p",
                    "RenderBy=comp", "-p", "Comp=Main Comp", "-p", "Frames=1-8", "-p",
                    "FramesPerTask=4", "-p", f"OutputDir={self.tmp / 'out'}", *extra)

    def store(self) -> Any:
        from stmpo_celery.farm import FarmStore, resolve_farm_url

        return FarmStore.connect(resolve_farm_url(self.url))


@pytest.fixture
def farm_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str], private_redis: Any) -> FarmCli:
    for name in list(os.environ):
        if name.startswith("STMPO_"):
            monkeypatch.delenv(name)
    cli = FarmCli(tmp_path, private_redis.url, capsys)
    monkeypatch.setenv("STMPO_FARM_URL", private_redis.url)
    monkeypatch.setenv("STMPO_FARM_DIR", str(cli.farm))
    monkeypatch.setenv("STMPO_HOST_DIR", str(tmp_path / "host"))
    monkeypatch.chdir(cli.cwd)
    return cli


def _one_error(code: int, out: str, err: str, *words: str) -> str:
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stmpo: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


PW = "hunter2pw"
SUBMIT_REFUSED = [
    # a password travels in no job parameter: the workers' sessions refuse it anyway
    ("broker-password", ("-p", f"BrokerUrl=redis://:{PW}@127.0.0.1:6411/0"),
     ["job parameter BrokerUrl holds a password", "set STMPO_BROKER_URL on the workers",
      "empty or without a password"]),
    ("broker-query-password", ("-p", f"BrokerUrl=redis://127.0.0.1:6411/0?password={PW}"),
     ["BrokerUrl holds a password"]),
    ("broker-not-redis", ("-p", "BrokerUrl=http://127.0.0.1:6411/0"),
     ["job parameter BrokerUrl", "is not a Redis URL"]),
    # the bundle's own output check (its OutputDirectories environment)
    ("output-leaves-dir", ("-p", "OutputFileName=../v001/render_[#####].png"),
     ["OutputFileName '../v001/render_[#####].png' leaves OutputDir"]),
    ("output-movie", ("-p", "OutputFileName=movie.mov"),
     ["OutputFileName 'movie.mov' has no [#####] frame token", "openjd_bundle/movie"]),
    # stmpo render's checks of --output OutputDir/OutputFileName
    ("output-two-tokens", ("-p", "OutputFileName=a_[##]_[###].png"),
     ["OutputDir/OutputFileName", "more than one frame token"]),
    ("output-device-name", ("-p", "OutputFileName=COM[#].png"),
     ["OutputDir/OutputFileName names frame 1 'COM1.png'"]),
    # the settings as the job's StmpoSettings environment resolves them on a worker
    ("profile-unknown", ("-p", "Profile=nope"),
     ["job parameter Profile: unknown profile 'nope'", "hero"]),
    ("concurrency-negative", ("-p", "Concurrency=-3"),
     ["job parameter Concurrency is -3: it must be zero or more"]),
    ("mfr-cpu-range", ("-p", "MfrMaxCpu=300"), ["job parameter MfrMaxCpu is 300", "1 to 100"]),
    ("threads-not-a-number", ("-p", "ThreadsPerSlot=many"),
     ["job parameter ThreadsPerSlot is 'many'", "whole number"]),
    ("chunk-size-with-static", ("-p", "Schedule=static", "-p", "ChunkSize=5"),
     ["job parameter ChunkSize does nothing with job parameter Schedule static"]),
    ("profile-and-job-combined", ("-p", "Profile=farm", "-p", "Schedule=static", "-p",
                                  "ChunkSize=5"), ["job parameter ChunkSize"]),
    # folders
    ("farm-dir-under-a-file", ("--farm-dir", "{tmp}/proj/shot.aep/farm"),
     ["farm folder", "shot.aep is not a folder", "--farm-dir", "STMPO_FARM_DIR"]),
    ("farm-dir-empty", ("--farm-dir", ""), ["--farm-dir is empty"]),
    ("publish-under-a-file", ("--publish", "{tmp}/proj/shot.aep/sh010"),
     ["--publish", "shot.aep is not a folder"]),
    ("publish-empty", ("--publish", ""), ["--publish is empty"]),
    ("farm-empty", ("--farm", ""), ["--farm is empty", "STMPO_FARM_URL"]),
    # what Comp holds when rendering by render-queue item (stmpo render --rqindex)
    ("rqindex-not-a-number", ("-p", "RenderBy=rqindex", "-p", "Comp=Main Comp"),
     ["job parameter Comp is 'Main Comp' while RenderBy is rqindex", "RenderBy=comp"]),
    ("rqindex-zero", ("-p", "RenderBy=rqindex", "-p", "Comp=0"),
     ["job parameter Comp is '0'"]),
    ("rqindex-superscript", ("-p", "RenderBy=rqindex", "-p", "Comp=1\u00b2"),
     ["job parameter Comp is '1\u00b2'"]),
]
if sys.platform.startswith("linux"):  # a folder no one can make, root included
    SUBMIT_REFUSED += [
        ("farm-dir-in-proc", ("--farm-dir", "/proc/stmpo-x"),
         ["farm folder /proc/stmpo-x cannot be written", "--farm-dir"]),
        ("publish-in-proc", ("--publish", "/proc/stmpo-x/sh010"),
         ["--publish /proc/stmpo-x/sh010 cannot be written"]),
    ]


@pytest.mark.parametrize("case", SUBMIT_REFUSED, ids=[c[0] for c in SUBMIT_REFUSED])
def test_submit_refuses_what_every_worker_would_refuse_before_writing_anything(
        farm_cli: FarmCli, private_redis: Any, case: tuple[str, tuple[str, ...], list[str]]
        ) -> None:
    """Values each worker's session (or its ``stmpo render``) would refuse, after the
    job's retries, are refused at submit by the same checks: one line, exit 2, and no job
    folder, no shot folder, no version, no Redis key."""
    _name, extra, words = case
    extra = tuple(a.replace("{tmp}", str(farm_cli.tmp)) for a in extra)
    shot = farm_cli.tmp / "shots" / "new" / "sh010"
    publish = () if "--publish" in extra else ("--publish", str(shot))
    code, out, err = farm_cli.submit(*extra, *publish)
    line = _one_error(code, out, err, *words)
    assert PW not in line
    assert not farm_cli.farm.exists() and not (farm_cli.tmp / "shots").exists()
    assert list(farm_cli.cwd.iterdir()) == []  # not published into the current folder
    assert sorted(p.name for p in farm_cli.tmp.iterdir()) == ["cwd", "proj"]
    assert private_redis.all_keys() == set()
    # what is fine is still accepted: the same submit without the bad values, with files
    # only the workers have (a profile or NUMA map given as a path, aerender) and values
    # the job's StmpoSettings environment exports nothing for (empty, DEFAULT)
    code, out, err = farm_cli.submit(
        "-p", "Profile=/on/the/workers/look.toml", "-p", "NumaMap=/on/the/workers/numa.json",
        "-p", "AerenderPath=/on/the/workers/aerender", "-p", "Concurrency= ", "-p",
        "Mfr=DEFAULT", "-p", "BrokerUrl=redis://farm-redis:6379/0", "--publish", str(shot))
    assert code == 0, err
    assert (shot / "v001").is_dir()
    code, out, err = farm_cli.submit("-p", "Profile=DEFAULT", "-p", "Schedule=fixed", "-p",
                                     "ChunkSize=5")
    assert code == 0, err


def _set_states(store: Any, jid: str, *states: str) -> None:
    """What workers would have done to the job's tasks."""
    for index, state in enumerate(states):
        store.update_task(jid, index, None, lambda r, s=state: {**r, "state": s})


def test_cancel_and_retry_change_only_what_they_say(farm_cli: FarmCli) -> None:
    code, out, err = farm_cli.submit()
    assert code == 0, err
    jid = out.strip()
    store = farm_cli.store()

    def view() -> dict[str, Any]:
        from stmpo_celery.farm import jobs

        return next(j for j in jobs(store) if j["id"] == jid)

    # a job still queued or running is not retried (it would run its tasks twice)
    _one_error(*farm_cli("retry", jid), f"job {jid} is still queued",
               f"stmpo farm wait {jid}")
    _set_states(store, jid, "running", "queued")
    _one_error(*farm_cli("retry", jid), f"job {jid} is still running")
    assert [t["state"] for t in view()["tasks"]] == ["running", "queued"]
    assert [t["attempts"] for t in view()["tasks"]] == [0, 0]
    # canceling: retry would un-cancel the job under the worker that is stopping its task
    code, out, _err = farm_cli("cancel", jid)
    assert code == 0 and "1 queued task(s) revoked, 1 running task(s) being canceled" in out
    assert view()["state"] == "canceling"
    _one_error(*farm_cli("retry", jid), f"job {jid} is still canceling")
    assert view()["state"] == "canceling" and store.job_state(jid) == "canceled"
    # ended: cancel changes nothing and says so; retry queues the canceled tasks again
    _set_states(store, jid, "canceled")
    assert view()["state"] == "canceled"
    code, out, err = farm_cli("cancel", jid)
    assert (code, out, err) == (0, f"job {jid} already canceled: nothing to cancel\n", "")
    code, out, _err = farm_cli("retry", jid)
    assert code == 0 and out == f"job {jid}: 2 task(s) queued again\n"
    assert [t["state"] for t in view()["tasks"]] == ["queued", "queued"]
    # failed: its failed task runs again, the succeeded one does not
    _set_states(store, jid, "succeeded", "failed")
    assert view()["state"] == "failed"
    code, out, _err = farm_cli("retry", jid)
    assert code == 0 and out == f"job {jid}: 1 task(s) queued again\n"
    assert [t["state"] for t in view()["tasks"]] == ["succeeded", "queued"]
    # succeeded: neither cancel nor retry touches it
    _set_states(store, jid, "succeeded", "succeeded")
    for command, words in (("cancel", "already succeeded: nothing to cancel"),
                           ("retry", "succeeded: nothing to retry")):
        code, out, err = farm_cli(command, jid)
        assert (code, out, err) == (0, f"job {jid} {words}\n", "")
        assert view()["state"] == "succeeded" and store.job_state(jid) == "queued"
    code, out, _err = farm_cli("wait", jid, "--timeout", "5")
    assert code == 0 and out == f"job {jid}: succeeded\n"


def test_remove_forgets_only_ended_jobs_and_keeps_their_versions(
        farm_cli: FarmCli, private_redis: Any) -> None:
    shot = farm_cli.tmp / "shots" / "sh010"
    ended, live = (farm_cli.submit("--publish", str(shot))[1].strip() for _ in range(2))
    store = farm_cli.store()
    _set_states(store, ended, "succeeded", "canceled")
    folder = Path(store.job(ended)["job_dir"])
    assert (folder / "job.json").is_file() and (shot / "v001").is_dir()
    # a job that has not ended is refused, and so is the whole command (all or nothing)
    _one_error(*farm_cli("remove", ended, live), f"job {live} is still queued",
               f"stmpo farm cancel {live}")
    _one_error(*farm_cli("remove", "nope0000"), "no farm job 'nope0000'")
    for other_key in (f"{ended}:state", f"{ended}:tasks", "*"):  # never another key
        _one_error(*farm_cli("remove", other_key), f"no farm job {other_key!r}")
    assert folder.is_dir() and store.job(ended)
    code, out, err = farm_cli("remove", ended, ended)
    assert (code, err) == (0, "") and out == f"job {ended} removed (deleted {folder})\n"
    assert not folder.exists() and (shot / "v001").is_dir()  # its version stays
    # versions list says how each unpublished version's job stands, from the farm Redis
    code, out, err = farm_cli("list", str(shot), group="versions")
    assert code == 0, err
    assert f"v001  unpublished     job {ended}    ! no version.json: job {ended} has not " \
        "succeeded (yet): see 'stmpo farm jobs'" in out, out
    assert f"no version.json: job {live} is queued" in out, out
    farm_cli("cancel", live)
    assert f"job {live} is canceled" in farm_cli("list", str(shot), group="versions")[1]
    assert not [k for k in private_redis.all_keys() if ended in k]
    assert [j["id"] for j in json.loads(farm_cli("jobs", "--json")[1])] == [live]
    assert {k for k in private_redis.all_keys() if live in k}  # the other one untouched
    # a job folder that is a link is not followed, and the message does not claim it was
    _set_states(store, live, "canceled", "canceled")
    linked = Path(store.job(live)["job_dir"])
    moved = farm_cli.tmp / "elsewhere"
    linked.rename(moved)
    linked.symlink_to(moved)
    code, out, err = farm_cli("remove", live)
    assert (code, err) == (0, "") and out == (
        f"job {live} removed; its folder {linked} was not deleted (it is a link, not the "
        "folder submit made): remove it by hand\n")
    assert (moved / "job.json").is_file() and linked.is_symlink()


@pytest.mark.parametrize("value", ["nan", "inf", "-5"])
def test_wait_refuses_a_timeout_that_is_no_duration(farm_cli: FarmCli, value: str) -> None:
    code, out, err = farm_cli.submit()
    assert code == 0, err
    line = _one_error(*farm_cli("wait", out.strip(), "--timeout", value), "'--timeout'",
                      repr(value))
    assert "still queued" not in line


def test_a_task_whose_worker_is_gone_is_said_by_jobs_and_wait(farm_cli: FarmCli) -> None:
    """The only worker killed mid-task: nothing requeues its task until a worker starts,
    and it showed "running" while ``farm wait`` waited on in silence. Now both say the
    worker is gone (once per attempt), and stop saying so while its worker lives."""
    code, out, err = farm_cli.submit()
    assert code == 0, err
    jid = out.strip()
    store = farm_cli.store()
    for index, instance in ((0, "inst-dead"), (1, "inst-live")):
        store.update_task(jid, index, None, lambda r, i=instance: {
            **r, "state": "running", "worker": f"w-{i}", "instance": i})
    store.heartbeat("w-inst-live", "inst-live", {"host": "h"})
    code, out, err = farm_cli("jobs")
    lines = out.splitlines()
    assert "worker w-inst-dead is gone: the task runs again when a worker takes it" in lines[1]
    assert "gone" not in lines[2]
    code, out, err = farm_cli("jobs", "--json")
    assert [t["worker_lost"] for t in json.loads(out)[0]["tasks"]] == [True, False]
    code, out, err = farm_cli("wait", jid, "--timeout", "1.2")
    assert code == 1 and out == ""
    assert err.count("is gone") == 1 and f"job {jid} task 0: worker w-inst-dead" in err, err
    assert err.splitlines()[-1] == f"stmpo: error: job {jid} still running after 1.2 s"
    store.heartbeat("w-inst-dead", "inst-dead", {"host": "h"})  # it lives after all
    assert "gone" not in farm_cli("jobs")[1]


def test_jobs_on_an_empty_farm_says_so(farm_cli: FarmCli) -> None:
    code, out, err = farm_cli("jobs")
    assert (code, err) == (0, "")
    assert out == "no jobs on this farm: submit one with 'stmpo farm submit BUNDLE'\n"
    assert farm_cli("jobs", "--json")[:2] == (0, "[]\n")  # machines get an empty list


@pytest.mark.parametrize("args, words", [
    (("--bind", "0.0.0.0:5611"), ["--bind 0.0.0.0:5611 would let anyone",
                                  "pass --auth user:password", "(--bind 127.0.0.1:5611)"]),
    (("--bind", "0.0.0.0:5611", "--auth", "nopassword"), ["--auth (or $STMPO_FLOWER_AUTH)"]),
    (("--bind", "here"), ["--bind 'here' is not [HOST:]PORT"]),
    (("--url-prefix", "a b"), ["--url-prefix 'a b' is not a URL path"]),
])
def test_farm_flower_names_its_own_options(farm_cli: FarmCli, args: tuple[str, ...],
                                           words: list[str]) -> None:
    """Refused before Flower starts, in the words of this command: its options are --bind,
    --auth and --url-prefix (stmpo render's --flower... mean nothing here)."""
    logs = farm_cli.tmp / "flower-logs"
    line = _one_error(*farm_cli("flower", *args, "--log-dir", str(logs)), *words)
    assert "--flower" not in line
    assert not logs.exists()
