"""``stmpo farm ...`` and ``stmpo versions ...`` (click only; the work is in farm/)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..errors import BadInput, ExitCode, StmpoError
from ._finite import NON_NEGATIVE

FARM_HELP = ("Farm Redis URL [default: $STMPO_FARM_URL, else the host service's Redis].")


def _connect(url: str | None) -> tuple[Any, Any]:
    from ..farm import FarmStore, resolve_farm_url

    broker = resolve_farm_url(url)
    return FarmStore.connect(broker), broker


@click.group("farm")
def farm_group() -> None:
    """A local render farm: submit job bundles, run render hosts, watch and steer jobs."""


@farm_group.command("submit")
@click.argument("bundle")
@click.option("-p", "--parameter", "params", multiple=True, metavar="NAME=VALUE",
              help="A job parameter (repeatable); overrides the bundle's parameter_values "
                   "[default: the bundle's values].")
@click.option("--priority", type=int, default=None,
              help="0-100, higher runs first, in ten levels (91-100, 81-90, ..., 0-10; "
                   "within a level, in submit order) [default: 50].")
@click.option("--max-retries", type=int, default=None,
              help="Times a failed task runs again [default: 1].")
@click.option("--publish", "publish", metavar="SHOT_DIR",
              help="Render into the next free SHOT_DIR/vNNN and publish it for review "
                   "[default: render where the bundle says, publish nothing].")
@click.option("--farm-dir", help="Job folders, seen by every render host at the same path "
              "[default: $STMPO_FARM_DIR, else <host dir>/farm].")
@click.option("--farm", "farm_url", help=FARM_HELP)
@click.option("--json", "as_json", is_flag=True,
              help="Print {\"job\": ID} [default: the job id alone].")
def submit_cmd(bundle: str, params: tuple[str, ...], priority: int | None,
               max_retries: int | None, publish: str | None, farm_dir: str | None,
               farm_url: str | None, as_json: bool) -> None:
    """Expand BUNDLE (an OpenJD job bundle or template) into tasks and queue them."""
    from ..config import defaults
    from ..farm import check_submit_options, make_farm_app, submit
    from ..farm import farm_dir as resolve_dir

    if farm_dir is not None and not farm_dir.strip():  # "" would fall back silently
        raise BadInput("--farm-dir is empty: name the folder of job folders every render "
                       f"host sees, or leave --farm-dir out (${defaults.FARM_DIR_ENV}, else "
                       "<host dir>/farm)")
    priority = defaults.FARM_PRIORITY if priority is None else priority
    max_retries = defaults.FARM_MAX_RETRIES if max_retries is None else max_retries
    check_submit_options(priority, max_retries, publish)  # bad input before the farm
    store, broker = _connect(farm_url)
    job = submit(store, make_farm_app(broker), bundle, list(params), priority=priority,
                 publish=publish, jobs_root=resolve_dir(farm_dir), max_retries=max_retries)
    if as_json:
        click.echo(json.dumps({"job": job["id"]}))
        return
    click.echo(job["id"])
    pub = job.get("publish")
    click.echo(f"job {job['id']}: {job['tasks']} task(s) queued"
               + (f", publishing {pub['dir']}" if pub else ""), err=True)


@farm_group.command("worker")
@click.option("--name", help="Worker name, unique on the farm [default: this host's name].")
@click.option("--farm", "farm_url", help=FARM_HELP)
@click.option("--loglevel", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                                case_sensitive=False),
              help="Celery's log level for the worker.")
def worker_cmd(name: str | None, farm_url: str | None, loglevel: str) -> None:
    """Render farm tasks on this host, one at a time, until stopped."""
    from ..config import defaults
    from ..farm import resolve_farm_url, run_worker
    from ..host import forget_env

    farm = resolve_farm_url(farm_url)
    forget_env([defaults.FARM_URL_ENV])  # read: never in a task's environment
    sys.exit(run_worker(farm, name, loglevel))


@farm_group.command("jobs")
@click.option("--farm", "farm_url", help=FARM_HELP)
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output [default: text].")
def jobs_cmd(farm_url: str | None, as_json: bool) -> None:
    """Jobs with their state, and each task's state, worker, attempts and progress."""
    from ..farm import jobs

    store, _ = _connect(farm_url)
    views = jobs(store)
    if as_json:
        click.echo(json.dumps(views, indent=1))
        return
    if not views:
        click.echo("no jobs on this farm: submit one with 'stmpo farm submit BUNDLE'")
    for j in views:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(j["submitted"]))
        pub = f"  -> {j['publish']['dir']}" if j.get("publish") else ""
        click.echo(f"{j['id']}  {j['state']:<10} {when}  {j['name']}{pub}")
        for t in j["tasks"]:
            click.echo(f"    {t['index']:>3} {t['step']} {t['task']:<16} {t['state']:<10} "
                       f"{t['progress']:5.1f}%  {t['worker'] or '-'}  "
                       f"attempts {t['attempts']}  {t['status']}")


@farm_group.command("wait")
@click.argument("job")
@click.option("--timeout", type=NON_NEGATIVE,
              help="Give up after this many seconds (exit 1) [default: wait for the end].")
@click.option("--farm", "farm_url", help=FARM_HELP)
def wait_cmd(job: str, timeout: float | None, farm_url: str | None) -> None:
    """Wait for JOB: exit 0 when every task succeeded, 1 when it failed or was canceled."""
    from ..farm import wait

    store, _ = _connect(farm_url)
    state = wait(store, job, timeout, say=lambda line: click.echo(line, err=True))
    click.echo(f"job {job}: {state}")
    if state != "succeeded":
        sys.exit(int(ExitCode.RENDER_FAILED))


@farm_group.command("cancel")
@click.argument("job")
@click.option("--farm", "farm_url", help=FARM_HELP)
def cancel_cmd(job: str, farm_url: str | None) -> None:
    """Cancel JOB: queued tasks are revoked, running ones canceled through OpenJD (a job
    that has ended is left as it is)."""
    from ..farm import cancel, make_farm_app

    store, broker = _connect(farm_url)
    done = cancel(store, make_farm_app(broker), job)
    if done.ended:
        click.echo(f"job {job} already {done.state}: nothing to cancel")
        return
    click.echo(f"job {job}: {done.queued} queued task(s) revoked, {done.running} running "
               "task(s) being canceled (see 'stmpo farm wait')")


@farm_group.command("retry")
@click.argument("job")
@click.option("--farm", "farm_url", help=FARM_HELP)
def retry_cmd(job: str, farm_url: str | None) -> None:
    """Once JOB has ended, queue its failed and canceled tasks again."""
    from ..farm import make_farm_app, retry

    store, broker = _connect(farm_url)
    done = retry(store, make_farm_app(broker), job)
    if done.state == "succeeded":
        click.echo(f"job {job} succeeded: nothing to retry")
        return
    click.echo(f"job {job}: {done.queued} task(s) queued again")


@farm_group.command("remove")
@click.argument("job_ids", metavar="JOB...", nargs=-1, required=True)
@click.option("--farm", "farm_url", help=FARM_HELP)
def remove_cmd(job_ids: tuple[str, ...], farm_url: str | None) -> None:
    """Forget jobs that have ended: their records leave the farm Redis and their job
    folders (project snapshot, task logs) are deleted. Published versions stay."""
    from ..farm import removable, remove

    store, _broker = _connect(farm_url)
    for jid in job_ids:  # every one checked first: all or nothing
        removable(store, jid)
    for jid in dict.fromkeys(job_ids):
        done = remove(store, jid)
        if done.deleted:
            click.echo(f"job {jid} removed (deleted {done.folder})")
        elif done.folder is None:
            click.echo(f"job {jid} removed")
        else:
            click.echo(f"job {jid} removed; its folder {done.folder} was not deleted "
                       f"({done.why}): remove it by hand")


@farm_group.command("flower")
@click.option("--bind", default="127.0.0.1:5555", show_default=True, help="[HOST:]PORT.")
@click.option("--auth", help="user:password, required off loopback "
              "[default: $STMPO_FLOWER_AUTH, else none].")
@click.option("--url-prefix", help="URL prefix behind a reverse proxy [default: none].")
@click.option("--log-dir", default=".", show_default=True, help="Where flower.log goes.")
@click.option("--farm", "farm_url", help=FARM_HELP)
def flower_cmd(bind: str, auth: str | None, url_prefix: str | None, log_dir: str,
               farm_url: str | None) -> None:
    """Serve Flower for the farm: its tasks by job, step and frames, its render hosts."""
    import os
    import signal

    from ..config import defaults
    from ..farm import FARM_ID
    from ..host import cancel_signals, forget_env
    from ..monitor import FlowerFlags, check_bind, start_flower
    from ..orchestrator import check_log_dir

    flags = FlowerFlags("--bind", "--auth", "--url-prefix")
    auth = auth or os.environ.get(defaults.FLOWER_AUTH_ENV)
    check_bind(bind, auth, url_prefix, flags)  # everything refused before anything is made
    check_log_dir(log_dir)
    _store, broker = _connect(farm_url)  # a farm Redis that does not answer: exit 3 now
    forget_env(defaults.SECRET_ENVS)  # read: Flower gets them on its stdin only
    try:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--log-dir {log_dir} cannot be created ({exc.strerror or exc}): "
                       "pick a folder you can write") from None
    fp = start_flower(broker, FARM_ID, defaults.FARM_QUEUE, bind, auth, url_prefix,
                      Path(log_dir), flags=flags)
    click.echo(f"Flower for the farm: {fp.url}")
    stop: list[int] = []
    for s in cancel_signals():  # SIGHUP too: Flower stopped, not left to die with us
        signal.signal(s, lambda n, _f: stop.append(n))
    while not stop and fp.alive():
        time.sleep(0.2)
    fp.stop()
    if stop:
        sys.exit(128 + stop[0])
    raise StmpoError("Flower exited: see its log", ExitCode.ENVIRONMENT)


@click.group("versions")
def versions_group() -> None:
    """Published versions of a shot (SHOT_DIR/vNNN): list, approve, reject."""


def _job_states(url: str | None) -> Any:
    """How a job stands (``succeeded``, ``canceled``, ...) from the farm Redis, or None
    when no farm is set up or it does not answer within a second: listing versions needs
    only the shot folder."""
    from ..farm import job_state_reader

    try:
        return job_state_reader(url)
    except StmpoError:
        return None


@versions_group.command("list")
@click.argument("shot_dir")
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output [default: text].")
@click.option("--farm", "farm_url", help="Farm Redis URL, to say how unpublished versions' "
              "jobs stand [default: $STMPO_FARM_URL, else the host service's Redis, "
              "else not said].")
def versions_list(shot_dir: str, as_json: bool, farm_url: str | None) -> None:
    """Every version with its status; frames are checked against the manifest."""
    from ..farm import job_state_reader, list_versions

    if not shot_dir.strip():  # "" would list the current folder
        raise BadInput("SHOT_DIR is empty: name the shot folder whose versions to list")
    # a --farm given is checked (a wrong one was dropped in silence); only the default
    # farm may be missing or silent, as listing needs only the shot folder
    states = job_state_reader(farm_url) if farm_url is not None else _job_states(None)
    entries = list_versions(Path(shot_dir), states)
    if as_json:
        click.echo(json.dumps(entries, indent=1))
        return
    if not entries:
        click.echo(f"{shot_dir}: no versions")
    for e in entries:
        extra = f"{e.get('frames')} frames {e.get('frame_range')}" if e.get("frames") else ""
        check = "" if not e.get("problems") else "  ! " + "; ".join(e["problems"])
        status = e.get("status") or "-"
        click.echo(f"{e['version']}  {status:<15} job {e.get('job') or '-'}  {extra}{check}")


def _set(shot_dir: str, version: str, status: str, note: str | None) -> None:
    from ..farm import set_status

    set_status(Path(shot_dir), version, status, note)
    click.echo(f"{version}: {status}")


@versions_group.command("approve")
@click.argument("shot_dir")
@click.argument("version")
@click.option("--note", help="Why (kept in the version's history) [default: no note].")
def versions_approve(shot_dir: str, version: str, note: str | None) -> None:
    """Mark VERSION approved (refused if its frames no longer match its manifest)."""
    _set(shot_dir, version, "approved", note)


@versions_group.command("reject")
@click.argument("shot_dir")
@click.argument("version")
@click.option("--note", required=True, help="Why it is rejected [default: none: required].")
def versions_reject(shot_dir: str, version: str, note: str) -> None:
    """Mark VERSION rejected, with a note."""
    _set(shot_dir, version, "rejected", note)

