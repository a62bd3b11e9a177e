"""What ``stmpo render`` does before the run takes over: the frames of one big-task task,
cancels that arrive early (and their summary), the embedded Redis started before Celery
is imported."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from typing import Any, ClassVar

from ..broker.keys import host_name
from ..config import RenderOptions
from ..errors import CANCEL_CODES, BadInput, ExitCode, cancel_words
from ..host import make_run_dir, remove_run_dir, replace_file
from ._cancelled import cancelled_early


def _task_frames(spec: str, task_of: str, output: str) -> str:
    """The frames of task I/N of ``spec`` (a frame spec stmpo render accepts). A movie
    (``output`` without a frame token) is one file one process writes whole: it is not
    cut into tasks (each would write its share over the same file)."""
    from ..plan import format_frames, parse_frames, parse_output, task_share

    index, sep, count = task_of.partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise BadInput(f"--task {task_of!r} is not I/N: pass e.g. --task 2/5")
    if int(count) > 1 and output and not parse_output(output).is_sequence:
        raise BadInput(f"--task {task_of}: --output {output!r} is a movie (no [#####] "
                       "token), which one aerender process renders whole, so it cannot be "
                       "cut into tasks: drop --task, or render an image sequence")
    return format_frames(task_share(parse_frames(spec), int(index), int(count)))


class _EarlyCancel:
    """Cancel signals before the run installs its own: raise, so ``render`` cleans up what
    it made (the output lock, an early embedded Redis and its folder) and exits with the
    cancel's code; once a run exists, hand the signal to it instead."""

    class Cancelled(BaseException):  # not an error: no ``except Exception`` may eat it
        def __init__(self, signum: int) -> None:
            super().__init__(signum)
            self.code = CANCEL_CODES.get(signum, ExitCode.TERMINATED)
            self.name = signal.Signals(signum).name
            self.words = cancel_words(self.name)

    current: ClassVar[_EarlyCancel | None] = None  #: installed and not yet uninstalled

    @staticmethod
    def found_in(exc: BaseException) -> _EarlyCancel.Cancelled | None:
        """The cancel behind ``exc``: itself, or the cause of what the code it cut short
        raised instead (a class being built mid-import wraps it in a RuntimeError)."""
        seen: set[int] = set()
        cur: BaseException | None = exc
        while cur is not None and id(cur) not in seen:
            if isinstance(cur, _EarlyCancel.Cancelled):
                return cur
            seen.add(id(cur))
            cur = cur.__cause__ or cur.__context__
        return None

    def __init__(self) -> None:
        self.run: Any = None
        self.old: dict[int, Any] = {}
        #: the cancel received: the handler's raise can be swallowed where Python ignores
        #: exceptions (an at-fork hook while a helper is started, a ``__del__``)
        self.pending: int | None = None
        #: the cancel was raised: later signals are not, or they would cut short the
        #: cleanup it runs (a submit's half-copied project, the render's early Redis)
        self.raised = False

    @classmethod
    def install(cls, keep_sigint: bool = False) -> _EarlyCancel:
        """Take the cancel signals (once: a second call returns the installed one, with
        SIGINT added if it was left out); ``keep_sigint``: leave SIGINT to Python (a
        command other than render, which takes Ctrl-C as KeyboardInterrupt)."""
        from ..host import cancel_signals

        early = cls.current or cls()
        for sig in cancel_signals():
            if (keep_sigint and sig == signal.SIGINT) or sig in early.old:
                continue  # (render run by demo: it takes SIGINT too, from now on)
            early.old[sig] = signal.signal(sig, early.handle)
        cls.current = early
        return early

    def handle(self, signum: int, frame: Any) -> None:
        if self.run is None:
            if self.raised:  # a second signal: the cleanup the first one started runs on
                return
            self.pending = self.pending or signum
            if _ignores_raises(frame):  # Python would print it as ignored, then drop it:
                return  # check() (after the helper started) or attach() takes it
            self.raised = True
            raise _EarlyCancel.Cancelled(self.pending)
        if self.run.cancel_signal is None:
            self.run.cancel_signal = signum

    def check(self) -> None:
        """Raise a cancel whose raise was swallowed (see :attr:`pending`)."""
        if self.pending is not None:  # (also when raised: the raise may have been dropped)
            self.raised = True
            raise _EarlyCancel.Cancelled(self.pending)

    def attach(self, run: Any) -> None:
        """Hand cancels to ``run`` from now on, and one already received, if any."""
        self.run = run
        if self.pending is not None and run.cancel_signal is None:
            run.cancel_signal = self.pending

    def uninstall(self) -> None:
        for sig, handler in self.old.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)
        type(self).current = None


#: logging's at-fork hooks (they run while a helper process is started): an exception
#: raised in them is printed as "Exception ignored" with its traceback, and dropped
_AT_FORK_HOOKS = frozenset({"_acquireLock", "_releaseLock", "_after_at_fork_child_reinit_locks",
                            "_prepareFork", "_afterFork"})  # (the last two: Python >= 3.13)


def _swallows(code: Any) -> bool:
    """Code Python calls on its own and whose exceptions it prints as ignored and drops:
    logging's at-fork hooks, the weakref callback that frees an import's module lock,
    a finalizer."""
    if code.co_name == "__del__":
        return True
    if code.co_name == "cb" and code.co_filename == "<frozen importlib._bootstrap>":
        return True
    return code.co_name in _AT_FORK_HOOKS and os.path.basename(
        os.path.dirname(code.co_filename)) == "logging"


def _ignores_raises(frame: Any) -> bool:
    """Whether a signal handler's raise in ``frame`` would be ignored by Python: that
    frame, or one it was called from, is code whose exceptions Python drops."""
    while frame is not None:
        code = getattr(frame, "f_code", None)
        if code is not None and _swallows(code):
            return True
        frame = getattr(frame, "f_back", None)
    return False


def _early_redis(prep: Any) -> Any:
    """Start the run's embedded Redis before the orchestrator imports Celery (the Run
    owns it from then on: stopped and its folder removed at teardown)."""
    if prep.broker is not None or not prep.to_render:
        return None
    from ..broker import EmbeddedRedis

    embedded = EmbeddedRedis(make_run_dir("stmpo-run-"))
    try:
        embedded.start()
    except BaseException:
        remove_run_dir(embedded.run_dir)
        raise
    return embedded


def _comp_label(options: RenderOptions) -> str:
    """What a history record is keyed by besides the project: the comp or queue item."""
    return options.comp if options.comp is not None else f"rqindex {options.rqindex}"


def write_cancelled_early(path: str, prep: Any, signal_name: str, code: int,
                          started: float) -> None:
    """The ``--summary`` of a render cancelled before its run started: nothing rendered
    (the keys of a run's summary, empty where there was no run). Best effort: the path
    may not have been checked yet. Imports nothing: the cancel may have cut an import
    short, and importing after that can fail."""
    if prep is None:  # the frames were not read yet
        doc = cancelled_early(code, signal_name, started, host=host_name())
    else:  # prepare() finished: the plan package is whole
        from ..plan import format_frames

        doc = cancelled_early(code, signal_name, started, run=prep.run_id, host=host_name(),
                              frames=list(prep.frames), spec=format_frames(prep.frames),
                              output=prep.pattern.raw)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
        replace_file(tmp, path)
    except (OSError, ValueError, TypeError):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
