"""Errors as JSON: ``{"error": ..., "field": ...}`` with the right status.

Client mistakes are turned into 4xx inside the handlers; this module adds the
boundary: every HTTP error Flask raises (404, 405, 413, 415) becomes JSON, a
store outage becomes 503 (and makes ``/readyz`` check the store again), and
anything unexpected is logged with its traceback and answered with a JSON 500.
No route redirects (see :func:`.app.route_every_path_as_sent`), so no HTML
redirect page is ever sent either.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from ..store import StoreError, StoreFull
from .services import services

log = logging.getLogger(__name__)


def error_response(status: int, message: str, field: str | None = None, **extra: Any) -> tuple[Response, int]:
    body: dict[str, Any] = {"error": message, "field": field}
    body.update(extra)
    return jsonify(body), status


class ClientError(Exception):
    """A request the client must change; becomes ``status`` with the field it names."""

    def __init__(self, status: int, message: str, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.extra = extra


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ClientError)
    def client_error(error: ClientError) -> tuple[Response, int]:
        return error_response(error.status, error.message, error.field, **error.extra)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        messages = {
            404: "no such route",
            405: "method not allowed on this route",
            413: f"request body is larger than {app.config.get('MAX_CONTENT_LENGTH')} bytes",
        }
        response = error_response(
            status, messages.get(status, error.description or error.name), "body" if status == 413 else None
        )
        if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
            response[0].headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(StoreFull)
    def store_full(error: StoreFull) -> tuple[Response, int]:
        log.error("store's disk is full: %s", error)
        services().readiness.mark_stale()
        return error_response(507, "the store's disk is full; nothing was stored, retry once space is freed")

    @app.errorhandler(StoreError)
    def store_error(error: StoreError) -> tuple[Response, int]:
        log.error("store unavailable: %s", error)
        services().readiness.mark_stale()
        return error_response(503, "the store is unavailable; retry later")

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return error_response(500, "internal error")
