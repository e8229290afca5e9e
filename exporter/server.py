"""Serving the app under gunicorn, a production WSGI server.

Each worker process builds its own app (and so its own SQLite connections)
after the fork; metrics stay exact across workers because every scrape reads
the shared store.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from typing import Any, ClassVar

from flask import Flask
from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

from .config import Config
from .preflight import SecretFilter, secret_values
from .redact import redact
from .store import StoreError
from .web import background_workers
from .web.services import services


class GunicornServer(BaseApplication):  # type: ignore[misc]
    """Runs ``app_factory`` in gunicorn's threaded workers."""

    def __init__(self, app_factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self._factory = app_factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if key in self.cfg.settings:  # settings newer than the installed gunicorn are skipped
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._factory()


class AccessLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger with credentials masked in access lines.

    The product's webhook can only be given a URL, so its token travels as
    ``?token=``; at ``log_level: debug`` the access log would print it.
    """

    MASKED = ("r", "q", "U", "f", "{authorization}i", "{referer}i")
    SECRETS: ClassVar[tuple[str, ...]] = ()  # the configuration's, set by :func:`gunicorn_options`

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        secrets = SecretFilter(list(self.SECRETS))
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.addFilter(secrets)

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for key in self.MASKED:
            value = atoms.get(key)
            if isinstance(value, str) and value not in ("", "-"):
                atoms[key] = "[REDACTED]" if key == "{authorization}i" else redact(value)
        return atoms


# The longest request line gunicorn takes (its default is 4 KB): room for long read-API filters.
LIMIT_REQUEST_LINE = 8190


class _Recorder:
    """Stands in for a client socket to keep what gunicorn would have written to it."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0  # already non-blocking: gunicorn writes without switching modes

    def sendall(self, data: bytes) -> None:
        self.data += data


class JsonErrorWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's threaded worker whose own refusals are JSON like the app's.

    gunicorn answers some requests before the app sees them (a request line
    over 8 KB: 414, too many or too large headers: 431, a malformed request:
    400) with an HTML page. A client of this API reads every error as
    ``{"error": ..., "field": ...}``, so the same status goes out with that body.
    """

    ERRORS: ClassVar[dict[int, tuple[str, str]]] = {
        414: (f"the request line (method, URL, version) is longer than {LIMIT_REQUEST_LINE} bytes", "url"),
        431: ("the request headers are too many or too large", "headers"),
    }

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        recorder = _Recorder()
        super().handle_error(req, recorder, addr, exc)  # logs, classifies, writes into the recorder
        status_line = recorder.data.partition(b"\r\n")[0].decode("latin-1")
        _, status, reason = [*status_line.split(" ", 2), "", ""][:3]
        if not status.isdigit():
            return
        message, field = self.ERRORS.get(int(status), (reason.lower(), None))
        body = json.dumps({"error": message, "field": field}).encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        try:
            util.write_nonblock(client, head.encode("latin-1") + body)
        except OSError:
            self.log.debug("Failed to send error message.")


def start_worker(worker: Any) -> None:
    """gunicorn's ``post_worker_init``: render the metrics, freeze what start-up made, start the background work.

    The worker accepts no request before this returns, so its first scrape finds
    every connection's lines rendered (:meth:`.ScrapeRenderer.warm`: seconds for
    10,000 connections × 20 streams, which a scrape would otherwise wait for). A
    store error here is left to ``/readyz``, which renders them before it answers ready.
    The app, its modules, the configuration and those lines live as long as the worker; frozen
    (``gc.freeze()``), a collection triggered by a large scrape or batch no longer
    walks them all. The app's background workers start here, in the process that
    serves, and stop in :func:`stop_worker`.
    """
    try:
        services(worker.wsgi).scrapes.warm()
    except StoreError as error:
        worker.log.warning("metrics not rendered at start-up (readiness will retry): %s", error)
    gc.freeze()
    workers = background_workers(worker.wsgi)
    if workers is not None:
        workers.start()


def stop_worker(_server: Any, worker: Any) -> None:
    """gunicorn's ``worker_exit``: stop the background work, releasing its roles for another process."""
    app = getattr(worker, "wsgi", None)
    workers = background_workers(app) if isinstance(app, Flask) else None
    if workers is not None:
        workers.stop()


def gunicorn_options(config: Config) -> dict[str, Any]:
    """gunicorn settings from the exporter's configuration."""
    return {
        "bind": [config.listen],
        "workers": config.workers,
        "threads": config.threads,
        "worker_class": JsonErrorWorker,
        "limit_request_line": LIMIT_REQUEST_LINE,
        "timeout": 120,
        "graceful_timeout": 20,
        "keepalive": 5,
        "loglevel": config.log_level,
        "errorlog": "-",
        "accesslog": "-" if config.log_level == "debug" else None,
        "logger_class": type("ConfiguredAccessLogger", (AccessLogger,), {"SECRETS": tuple(secret_values(config))}),
        "post_worker_init": start_worker,
        "worker_exit": stop_worker,
        "proc_name": "calabi-exporter",
        # Large log batches arrive as long lines of text/plain bodies; header
        # limits stay at gunicorn's defaults.
        "preload_app": False,
        # gunicorn ≥ 25 opens a control socket at one path per user ($HOME/.gunicorn); several
        # exporters on one host (or a read-only home in a container) would trip over it.
        "control_socket_disable": True,
    }


def serve(config: Config, app_factory: Callable[[], Flask]) -> None:
    """Serve until SIGTERM or SIGINT (both stop gracefully)."""
    GunicornServer(app_factory, gunicorn_options(config)).run()
