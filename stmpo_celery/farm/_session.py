"""One farm task run with the OpenJD sessions runtime, as a Deadline worker agent runs it.

The job is instantiated again from the recorded template and (preprocessed) parameter
values; an ``openjd.sessions.Session`` enters the job's and the step's environments,
runs the task, and exits the environments in reverse order, whatever happened. While an
action runs, ``openjd_progress`` / ``openjd_status`` reach ``on_progress``; when
``should_cancel`` turns true the running action is canceled the way its template says
(NOTIFY_THEN_TERMINATE: SIGTERM, then the process group is killed after the notify
period) and no further action but the environments' exits runs.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import defaults
from ..errors import EnvironmentProblem


@dataclass
class Outcome:
    state: str = "succeeded"  #: succeeded | failed | canceled
    message: str = ""
    exit_code: int | None = None
    progress: float = 0.0
    status: str = ""
    seconds: float = 0.0
    actions: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"state": self.state, "message": self.message, "exit_code": self.exit_code,
                "status": self.status, "seconds": round(self.seconds, 2),
                "actions": self.actions}


def check_runtime() -> None:
    """Import what running a task needs, once, when a worker starts: a worker that could
    not (a broken install, a Windows host missing a DLL an extension needs) took every
    task, failed it in a second and spent each job's retries on it."""
    try:
        import openjd.model  # noqa: F401
        import openjd.sessions  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError (a DLL), anything
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise EnvironmentProblem(
            f"this host cannot run farm tasks: the OpenJD runtime does not load "
            f"({type(exc).__name__}: {text}): reinstall stmpo-celery with its dependencies "
            f"in this Python ({sys.executable})") from None


def _values(serialized: dict[str, dict[str, str]]) -> dict[str, Any]:
    from openjd.model import ParameterValue, ParameterValueType

    return {k: ParameterValue(type=ParameterValueType(v["type"]), value=v["value"])
            for k, v in serialized.items()}


class _FileLog(logging.Handler):
    """The session's log lines (openjd.sessions' logger, this session only) to a file."""

    def __init__(self, session_id: str, path: Path) -> None:
        super().__init__(logging.INFO)
        self.session_id = session_id
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "session_id", None) != self.session_id:
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        self.fh.write(f"{stamp} {record.getMessage()}\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()
        super().close()


def run_task(job: dict[str, Any], task: dict[str, Any], session_id: str, log_path: Path,
             on_progress: Callable[[float, str], None],
             should_cancel: Callable[[], bool], add_env: dict[str, str] | None = None,
             root: Path | None = None) -> Outcome:
    """Run ``task`` of ``job`` in an OpenJD session (its working folder under ``root``, its
    actions' environment with ``add_env`` added) until it ends or ``should_cancel``."""
    from openjd.model import (
        RevisionExtensions,
        SpecificationRevision,
        create_job_with_symbol_tables,
        decode_job_template,
    )
    from openjd.sessions import LOG, ActionState, Session, SessionState

    t0 = time.monotonic()
    template = decode_job_template(template=job["template"],
                                   supported_extensions=list(defaults.OPENJD_EXTENSIONS))
    values = _values(job["parameters"])
    created = create_job_with_symbol_tables(job_template=template, job_parameter_values=values)
    the_job = created.job
    step = next(s for s in the_job.steps if s.name == task["step"])
    symtab = created.step_symbol_tables.get(step.name)
    out = Outcome()
    last: dict[str, Any] = {"progress": -1.0, "status": ""}

    def callback(_sid: str, status: Any) -> None:
        if status.state != ActionState.RUNNING:
            return
        progress = float(status.progress) if status.progress is not None else last["progress"]
        text = status.status_message or last["status"]
        if progress != last["progress"] or text != last["status"]:
            last.update(progress=progress, status=text)
            on_progress(max(0.0, progress), text)

    handler = _FileLog(session_id, log_path)
    LOG.addHandler(handler)
    session = Session(
        session_id=session_id, job_parameter_values=values, job_name=str(the_job.name),
        callback=callback, os_env_vars=add_env or None,
        session_root_directory=root if root is not None and str(root) not in ("", ".")
        else None,
        revision_extensions=RevisionExtensions(spec_rev=SpecificationRevision.v2023_09,
                                               supported_extensions=list(defaults.OPENJD_EXTENSIONS)))
    canceled = [False]

    def wait(name: str, cancelable: bool) -> bool:
        """Wait for the running action; True when it succeeded."""
        out.actions.append(name)
        while session.state in (SessionState.RUNNING, SessionState.CANCELING):
            if cancelable and not canceled[0] and should_cancel():
                canceled[0] = True
                try:
                    session.cancel_action()
                except RuntimeError:
                    pass  # it ended in between
            time.sleep(defaults.FARM_POLL_S)
        status = session.action_status
        if status is None or status.state == ActionState.SUCCESS:
            return True
        if out.state == "succeeded":
            out.state = "canceled" if (canceled[0] or status.state == ActionState.CANCELED) \
                else "failed"
            out.exit_code = status.exit_code
            out.message = status.fail_message or f"{name}: {status.state.value}" + (
                f" (exit code {status.exit_code})" if status.exit_code is not None else "")
        return False

    entered: list[tuple[str, Any]] = []
    try:
        envs: list[tuple[str, Any, str | None]] = [
            (f"JOB - {e.name}", e, None) for e in the_job.jobEnvironments or []]
        envs += [(f"STEP - {e.name}", e, step.name) for e in step.stepEnvironments or []]
        ok = True
        for ident, env, step_name in envs:
            if should_cancel():
                canceled[0] = True
                out.state = "canceled"
                out.message = "canceled before it started"
                ok = False
                break
            kwargs: dict[str, Any] = {"step_name": step_name} if step_name else {}
            if step_name:
                kwargs["resolved_symtab"] = symtab
            session.enter_environment(environment=env, identifier=ident, **kwargs)
            entered.append((ident, kwargs.get("resolved_symtab")))
            if not wait(f"enter {env.name}", cancelable=True):
                ok = False
                break
        if ok and not should_cancel():
            session.run_task(step_script=step.script, task_parameter_values=_values(
                task["params"]), step_name=step.name, resolved_symtab=symtab)
            if wait(f"run {task['label']}", cancelable=True):
                out.progress = 100.0
        elif ok:
            canceled[0] = True
            out.state, out.message = "canceled", "canceled before it started"
    finally:
        for ident, table in reversed(entered):  # exits run even after a failure or cancel
            try:
                session.exit_environment(identifier=ident, resolved_symtab=table,
                                         keep_session_running=bool(entered[0][0] != ident))
            except RuntimeError as exc:
                out.actions.append(f"exit {ident}: {exc}")
                continue
            wait(f"exit {ident.split(' - ', 1)[1]}", cancelable=False)
        session.cleanup()
        LOG.removeHandler(handler)
        handler.close()
    out.status = last["status"]
    out.progress = max(out.progress, last["progress"], 0.0)
    out.seconds = time.monotonic() - t0
    return out
