"""Named exit codes and the one exception type that carries them to the CLI."""

from __future__ import annotations

import enum
import signal


class ExitCode(enum.IntEnum):
    """Every way ``stmpo`` can end. Documented in the README; scripts rely on them."""

    OK = 0  #: every requested frame is on disk
    RENDER_FAILED = 1  #: a chunk failed or frames are missing
    BAD_INPUT = 2  #: the command line, a file or an environment variable is wrong
    ENVIRONMENT = 3  #: aerender or the broker is unusable on this host
    HANGUP = 129  #: cancelled by SIGHUP (the terminal or ssh session went away)
    INTERRUPTED = 130  #: cancelled by SIGINT (Ctrl-C)
    TERMINATED = 143  #: cancelled by SIGTERM (OpenJD cancel, Deadline)


#: the cancel signals and their exit codes (SIGHUP: a closed terminal or dropped ssh)
CANCEL_CODES: dict[int, ExitCode] = {
    signal.SIGINT: ExitCode.INTERRUPTED,
    signal.SIGTERM: ExitCode.TERMINATED,
}
if hasattr(signal, "SIGHUP"):
    CANCEL_CODES[signal.SIGHUP] = ExitCode.HANGUP


def outcome(code: int) -> str:
    """A run's ``status`` in its summary: ``ok``, ``cancelled`` (ended by a cancel signal)
    or ``failed``."""
    if code == ExitCode.OK:
        return "ok"
    cancelled = {ExitCode.HANGUP, ExitCode.INTERRUPTED, ExitCode.TERMINATED}
    return "cancelled" if code in cancelled else "failed"


_SIGNAL_WORDS = {"SIGINT": "Ctrl-C (SIGINT)", "SIGTERM": "SIGTERM",
                 "SIGBREAK": "CTRL_BREAK (SIGBREAK)"}


def cancel_words(signal_name: str | None) -> str:
    """How a cancel signal is named to a human (``CANCELLED by …``)."""
    return _SIGNAL_WORDS.get(signal_name or "", signal_name or "a signal")


class StmpoError(Exception):
    """A failure with a one-line message for a human and an exit code for a machine.

    The message names the problem and, where there is one, the fix.
    """

    code: ExitCode = ExitCode.RENDER_FAILED

    def __init__(self, message: str, code: ExitCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class BadInput(StmpoError):
    code = ExitCode.BAD_INPUT


class EnvironmentProblem(StmpoError):
    code = ExitCode.ENVIRONMENT
