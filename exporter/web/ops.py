"""``/metrics`` (open unless ``metrics_tokens`` are set), the health endpoints, and the dead letters."""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Response, jsonify, request

from ..store import StoreError, StoreFull
from ..timeutil import format_rfc3339
from .auth import require_ingest_token, require_metrics_token
from .errors import ClientError
from .services import services

log = logging.getLogger(__name__)
bp = Blueprint("ops", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format, or OpenMetrics when the scraper asks for it; streamed (see :mod:`..scrape`)."""
    require_metrics_token()
    chunks, content_type = services().scrapes.render(request.headers.get("Accept"))
    return Response(chunks, status=200, content_type=content_type)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """The process is up and serving."""
    return jsonify({"status": "ok"}), 200


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """The store can be read and written (checked at most every few seconds, see :mod:`.readiness`).

    Anyone may ask, so the answer says what is wrong without the store's path; the
    exporter's own log has the detail.
    """
    try:
        services().readiness.check()
    except StoreFull as error:
        log.error("not ready: %s", error)
        return jsonify({"status": "unavailable", "error": "the store's disk is full"}), 503
    except StoreError as error:
        log.error("not ready: %s", error)
        return jsonify({"status": "unavailable", "error": "the store cannot be written"}), 503
    return jsonify({"status": "ready"}), 200


@bp.get("/api/v1/logs/dead-letters")
def dead_letters() -> tuple[Response, int]:
    """Log records the receiver refused for good (or too old to send), newest 1,000; needs the ingest token."""
    require_ingest_token()
    rows = services().store.outbox.dead_letters(limit=1000)
    return jsonify({"dead_letters": [{"outbox_id": i, "job_id": j, "reason": r} for i, j, r in rows]}), 200


@bp.post("/api/v1/logs/dead-letters/redrive")
def redrive_dead_letters() -> tuple[Response, int]:
    """Queue the log dead letters again (``{"connection": ...}`` for one connection's); needs the ingest token.

    For after the cause is fixed (a proxy that refused, a limit raised); records whose
    job the retention purge removed stay dead-lettered.
    """
    require_ingest_token()
    connection = _redrive_connection(request.get_data(cache=False))
    requeued = services().store.outbox.redrive(connection)
    log.info("%d dead-lettered log records queued again%s", requeued, f" ({connection})" if connection else "")
    return jsonify({"requeued": requeued, "connection": connection}), 200


def _redrive_connection(raw: bytes) -> str | None:
    """The connection a re-drive is for, from an optional JSON body; None for every connection."""
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ClientError(400, f"request body is not valid JSON: {error}", "body") from None
    if not isinstance(body, dict) or set(body) - {"connection"}:
        raise ClientError(400, 'must be an object with at most "connection"', "body")
    if "connection" not in body:
        return None
    connection = body["connection"]
    if not isinstance(connection, str) or not connection or "\x00" in connection:
        raise ClientError(400, "must be a connection name (a non-empty string without NUL)", "connection")
    return connection


@bp.get("/api/v1/webhooks/dead-letters")
def webhook_dead_letters() -> tuple[Response, int]:
    """Status-change events an endpoint refused or that stayed undelivered for 24 hours, newest 1,000.

    Each keeps its body, so an operator can re-send it by hand; needs the ingest token.
    """
    require_ingest_token()
    rows = services().store.status_webhooks.dead_letters(limit=1000)
    return jsonify(
        {
            "dead_letters": [
                {
                    "endpoint": d.endpoint,
                    "job_id": d.job_id,
                    "event_id": d.event_id,
                    "attempts": d.attempts,
                    "reason": reason,
                    "queued_at": format_rfc3339(d.created_at),
                    "payload": json.loads(d.payload),
                }
                for d, reason in rows
            ]
        }
    ), 200
