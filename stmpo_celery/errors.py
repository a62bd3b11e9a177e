"""Named exit codes and the one exception type that carries them to the CLI."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Every way ``stmpo`` can end. Documented in the README; scripts rely on them."""

    OK = 0  #: every requested frame is on disk
    RENDER_FAILED = 1  #: a chunk failed or frames are missing
    BAD_INPUT = 2  #: the command line, a file or an environment variable is wrong
    ENVIRONMENT = 3  #: aerender or the broker is unusable on this host
    HANGUP = 129  #: cancelled by SIGHUP (the terminal or ssh session went away)
    INTERRUPTED = 130  #: cancelled by SIGINT (Ctrl-C)
    TERMINATED = 143  #: cancelled by SIGTERM (OpenJD cancel, Deadline)


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
