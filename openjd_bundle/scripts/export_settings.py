"""Export a job's stmpo settings to the session, then show what takes effect.

Run by the ``StmpoSettings`` job environment (embedded in the templates; this file is
the source the templates embed). Arguments are ``STMPO_NAME=VALUE`` pairs, one
argument each, so any value survives: spaces, commas, quotes, non-ASCII.

* An empty value or ``DEFAULT`` exports nothing: the setting keeps what the host's
  ``STMPO_*`` environment, the profile or stmpo's built-in default gives it.
* Any other value is exported with ``openjd_env: NAME=VALUE`` for every later action
  of the session (``stmpo doctor``, every ``stmpo render``).
* A value with a line break is refused: it could forge a second stdout directive.
* A broker URL with a password is refused: the exported line is in the session log, and
  the job parameter is visible on the queue; the password belongs on the workers.

First ``stmpo config show`` runs with the new environment: a value stmpo cannot read
(``STMPO_CONCURRENCY=abc``) fails the session here, before any render starts, and
nothing is exported; otherwise the values are exported and every effective setting is
printed with where it came from. Standard library only.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import urllib.parse

_NAME = re.compile(r"^STMPO_[A-Z0-9_]+$")
INHERIT = {"", "DEFAULT"}
SECRET_FREE = {"STMPO_BROKER_URL"}  #: refused with a password: the session log shows them
_SECRET_KEYS = {"password", "pass", "passwd", "pwd", "secret", "token"}


def fail(message: str, code: int = 2) -> int:
    print("openjd_fail: " + " ".join(message.split()), flush=True)
    return code


def parse(argv: list[str]) -> tuple[dict[str, str], str | None]:
    """The settings to export, or an error message."""
    out: dict[str, str] = {}
    for arg in argv:
        name, sep, value = arg.partition("=")
        if not sep or not _NAME.match(name):
            return {}, f"bad setting argument {arg!r}: expected STMPO_NAME=VALUE"
        if any(c in value for c in "\r\n\x00"):
            return {}, f"{name} contains a line break: pass a one-line value"
        if value.strip() in INHERIT:
            continue
        if name in SECRET_FREE and holds_password(value):
            return {}, (f"{name} holds a password: job parameters are stored with the job, "
                        "visible on the queue and printed in this session's log; set "
                        f"{name} on the workers (host or queue environment) and leave the "
                        "job parameter empty or without a password")
        out[name] = value.strip()
    return out, None


def holds_password(url: str) -> bool:
    """A password in the user info (``redis://:pw@host``, also one holding an unencoded
    ``/``, ``?`` or ``#``, which ends the host part early for a URL parser) or in the
    query (``?password=``)."""
    _, sep, rest = url.strip().partition("://")
    info = rest.rpartition("@")[0] if sep and "@" in rest else ""
    query = rest.rpartition("@")[2].partition("?")[2].partition("#")[0]
    pairs = [p.partition("=") for p in query.split("&")]
    return bool(info.partition(":")[2]) or any(
        urllib.parse.unquote_plus(k).lower() in _SECRET_KEYS and v for k, _, v in pairs)


def main(argv: list[str]) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):  # the runtime reads stdout as UTF-8
        sys.stdout.reconfigure(encoding="utf-8", errors="backslashreplace")
    settings, error = parse(argv)
    if error:
        return fail(error)
    stmpo = shutil.which("stmpo")
    if stmpo is None:
        return fail("stmpo is not on PATH on this worker: install stmpo-celery "
                    "(see the bundle README, 'Installing stmpo on workers')", 3)
    env = dict(os.environ)
    env.update(settings)
    env["PYTHONIOENCODING"] = "utf-8"
    res = subprocess.run([stmpo, "config", "show"], env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, encoding="utf-8", errors="replace")
    if res.returncode != 0:  # nothing is exported: the session fails here
        reason = res.stderr.strip().splitlines()[-1:] or [f"exit code {res.returncode}"]
        return fail(f"stmpo settings are invalid: {reason[0]}", res.returncode)
    for name, value in settings.items():
        print(f"openjd_env: {name}={value}", flush=True)
    print("stmpo settings from job parameters: "
          + (", ".join(sorted(settings)) or "none (host environment, profile, defaults)"),
          flush=True)
    for line in res.stdout.splitlines():  # indented: no line can pass for a directive
        print("  " + line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
