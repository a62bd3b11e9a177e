"""The Flower process: ``python -m stmpo_celery.monitor.flower_main`` (see ``_flowerctl``).

Reads one JSON line of settings from stdin (the broker URL and credentials never
appear in argv or the environment), builds the run's Celery app with
:func:`app.make_app` (same key prefix as the run; :data:`flowerctl.ALL_RUNS` for a
host Flower that watches every run), starts Flower's web server, waits until its
event receiver hears a probe event, then prints ``{"port": N}`` on stdout. Unless
detached it exits when stdin reaches EOF: its parent, the orchestrator, is gone.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

PROBE_TIMEOUT_S = 5.0


def _watch_parent() -> None:
    """Exit when stdin reaches EOF (the orchestrator is gone), unless the orchestrator
    said ``{"linger": S}`` first (``--flower-linger`` after a failure): then in S s."""

    def watch() -> None:
        linger = 0.0
        try:
            for line in sys.stdin.buffer:
                try:
                    linger = float(json.loads(line).get("linger") or 0.0)
                except (ValueError, AttributeError, TypeError):
                    pass
        except OSError:
            pass
        if linger > 0:
            time.sleep(linger)
        os._exit(0)

    threading.Thread(target=watch, name="stmpo-flower-parent", daemon=True).start()


def _configure(cfg: dict[str, Any]) -> Any:
    from flower.options import options

    options.address = cfg["address"]
    options.port = int(cfg["port"])
    options.basic_auth = [cfg["auth"]] if cfg.get("auth") else []
    options.url_prefix = cfg.get("url_prefix") or ""
    options.read_only = True  # remote control would bypass the orchestrator
    options.enable_events = False  # slots always send events; no broadcast every 5 s
    options.tasks_columns = cfg.get("tasks_columns") or options.tasks_columns
    options.purge_offline_workers = cfg.get("purge_offline_s")
    if cfg.get("max_tasks"):  # the oldest tasks (old runs' rows) leave Flower's memory
        options.max_tasks = int(cfg["max_tasks"])
    options.inspect_timeout = 500.0
    if cfg.get("unauthenticated_api"):
        os.environ["FLOWER_UNAUTHENTICATED_API"] = "true"
    else:
        os.environ.pop("FLOWER_UNAUTHENTICATED_API", None)
    return options


def _protect_metrics() -> None:
    """Flower serves ``/metrics`` to anyone; with basic auth on, it needs it too."""
    import tornado.web
    from flower.views import monitor

    monitor.Metrics.get = tornado.web.authenticated(monitor.Metrics.get)


def _settings(prefix: str) -> dict[str, Any]:
    from flower.urls import settings
    from flower.utils import prepend_url

    out = dict(settings)
    out["debug"] = False
    if prefix:
        for name in ("login_url", "static_url_prefix"):
            out[name] = prepend_url(out[name], prefix)
    return out


def _announce_when_listening(flower: Any, port: int) -> None:
    """Print the ready line once Flower's event receiver hears events (or after a while)."""
    t0 = time.monotonic()
    capp = flower.capp

    def probe() -> None:
        try:
            with capp.events.default_dispatcher(hostname="stmpo-flower-probe") as d:
                d.send("stmpo-probe")
        except Exception:  # noqa: BLE001 - the broker may not be up yet; try again
            pass

    def check() -> None:
        heard = flower.events.state.event_count > 0
        if heard or time.monotonic() - t0 > PROBE_TIMEOUT_S:
            out = json.dumps({"port": port, "events": heard}) + "\n"
            os.write(1, out.encode())
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)  # the parent stops reading: never block or SIGPIPE on stdout
            os.close(null)
            return
        flower.io_loop.run_in_executor(None, probe)
        flower.io_loop.call_later(0.05, check)

    flower.io_loop.add_callback(check)


def main() -> None:
    cfg = json.loads(sys.stdin.buffer.readline().decode())
    detach = bool(cfg.get("detach"))
    if not detach:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator decides when we end
        _watch_parent()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("tornado.access").setLevel(logging.WARNING)

    from flower.app import Flower

    from ..broker import BrokerUrl, make_app

    options = _configure(cfg)
    if cfg.get("auth"):
        _protect_metrics()
    capp = make_app(BrokerUrl(cfg["broker"]), cfg["run_id"], cfg.get("queue") or "stmpo")
    flower = Flower(capp=capp, options=options, **_settings(options.url_prefix))
    port = flower.start_http_server()
    logging.getLogger("stmpo.flower").info(
        "Flower for %s listening on %s:%s", "every run" if "?" in cfg["run_id"]
        else f"run {cfg['run_id']}", cfg["address"], port)
    _announce_when_listening(flower, int(port or 0))
    flower.start()


if __name__ == "__main__":
    main()
