"""``/metrics`` (open unless ``metrics_tokens`` are set), the health endpoints, and the dead letters."""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Response, jsonify, request

from ..store import StoreError, StoreFull
from ..timeutil import format_rfc3339
from .auth import require_ingest_token, require_metrics_token
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
    """The store can be read and written.

    Anyone may ask, so the answer says what is wrong without the store's path; the
    exporter's own log has the detail.
    """
    try:
        services().store.check_ready()
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


@bp.get("/api/v1/webhooks/dead-letters")
def webhook_dead_letters() -> tuple[Response, int]:
    """Status-change events an endpoint refused or that stayed undelivered for 24 hours, newest 1,000.

    Each keeps its body, so an operator can re-send it by hand; needs the ingest token.
    """
    require_ingest_token()
    rows = services().store.webhooks.dead_letters(limit=1000)
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
