"""The webhook coming in: the product's "Webhook (custom)" status-change notifications.

Not to be confused with the status webhooks the exporter sends (:mod:`..status_webhooks`).
"""

from __future__ import annotations

from flask import Blueprint, Response

from ..model import parse_webhook
from .auth import require_ingest_token
from .ingest import JSON_TYPES, ingest, read_json, require_type

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


@bp.before_request
def _authenticate() -> None:
    # The product can only be given a URL, so ``?token=`` is accepted here.
    require_ingest_token(allow_query_token=True)


@bp.post("/calabi")
def calabi() -> tuple[Response, int]:
    """Create or update the job the notification names: enough on its own to monitor a connection."""
    require_type(*JSON_TYPES)
    return ingest([read_json()], endpoint="webhook", parse=parse_webhook, batch=False)
