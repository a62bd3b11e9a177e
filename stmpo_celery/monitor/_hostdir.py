"""Where a render host's service is recorded, and finding it: ``<host dir>/broker.url``
(run by every command that looks for the host service: render, status, doctor).

The host directory: ``$STMPO_HOST_DIR``; else ``/var/lib/stmpo`` for root; else
``$XDG_STATE_HOME/stmpo`` (``~/.local/state/stmpo``). Discovery also looks in
``/var/lib/stmpo`` when it is readable, so a system service can serve job users.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import redis

from ..broker import BrokerUrl
from ..host import read_text

BROKER_FILE = "broker.url"
SPACE_FILE = "space.json"  #: the process space the service was started in
SYSTEM_DIR = Path("/var/lib/stmpo")


def host_dir() -> Path:
    if os.environ.get("STMPO_HOST_DIR"):
        return Path(os.environ["STMPO_HOST_DIR"])
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return SYSTEM_DIR
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "stmpo"


def _candidates() -> list[Path]:
    dirs = [host_dir()]
    if "STMPO_HOST_DIR" not in os.environ and SYSTEM_DIR not in dirs:
        dirs.append(SYSTEM_DIR)
    return dirs


def read_broker_url() -> str | None:
    """The host service's broker URL, if a host service wrote one that we can read."""
    for d in _candidates():
        with contextlib.suppress(OSError):
            url = read_text(d / BROKER_FILE).strip()
            if url:
                return url
    return None


def ping_error(url: str) -> Exception | None:
    """Why the Redis at ``url`` does not answer a PING within a second, or None."""
    client = BrokerUrl(url).client(timeout=1.0)
    try:
        client.ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        return exc
    finally:
        client.close()
    return None


def discover_broker(why: list[str] | None = None) -> str | None:
    """The host service's broker URL if it answers now, else None (lowest precedence:
    after ``--broker`` and ``$STMPO_BROKER_URL``; None means: use an embedded Redis).
    When a host service is recorded but does not answer, ``why`` is told so."""
    url = read_broker_url()
    if url is None:
        return None
    exc = ping_error(url)
    if exc is None:
        return url
    if why is not None:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        why.append(f"the host service's Redis (stmpo host up) does not answer "
                   f"({text[:160]}): this run uses an embedded Redis of its own")
    return None
