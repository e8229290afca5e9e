"""Serving the app under gunicorn, a production WSGI server.

Each worker process builds its own app (and so its own SQLite connections)
after the fork; metrics stay exact across workers because every scrape reads
the shared store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from .config import Config
from .redact import redact


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

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for key in self.MASKED:
            value = atoms.get(key)
            if isinstance(value, str) and value not in ("", "-"):
                atoms[key] = "[REDACTED]" if key == "{authorization}i" else redact(value)
        return atoms


def gunicorn_options(config: Config) -> dict[str, Any]:
    """gunicorn settings from the exporter's configuration."""
    return {
        "bind": [config.listen],
        "workers": config.workers,
        "threads": config.threads,
        "worker_class": "gthread",
        "timeout": 120,
        "graceful_timeout": 20,
        "keepalive": 5,
        "loglevel": config.log_level,
        "errorlog": "-",
        "accesslog": "-" if config.log_level == "debug" else None,
        "logger_class": AccessLogger,
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
