"""The sources' webhooks: Airbyte's notifications and Fivetran's sync events, each as a job of the one path.

``/webhooks/airbyte`` takes the ingest token as the Calabi webhook does
(``?token=``: Airbyte is only given a URL). ``/webhooks/fivetran`` is
authenticated by its signature instead: a body not signed with
``sources.fivetran.webhook_secret`` gets 401 and is stored nowhere, and
without that secret every delivery does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..model import Job, ValidationError
from ..sources import airbyte, fivetran
from ..store import NewConnectionRefused
from .auth import ingest_token_key, require_ingest_token
from .errors import ClientError
from .ingest import JSON_TYPES, read_body, read_json, require_type
from .services import services

airbyte_bp = Blueprint("airbyte_webhook", __name__, url_prefix="/webhooks")
fivetran_bp = Blueprint("fivetran_webhook", __name__, url_prefix="/webhooks")


@airbyte_bp.before_request
def _authenticate() -> None:
    require_ingest_token(allow_query_token=True)


@airbyte_bp.post("/airbyte")
def airbyte_notification() -> tuple[Response, int]:
    """One notification of an Airbyte workspace: a finished or queued sync becomes its job; any other is counted."""
    require_type(*JSON_TYPES)
    payload = read_json()
    return _store(airbyte.PLATFORM, lambda latest: _as_pair(airbyte.read_notification(payload, latest=latest)))


@fivetran_bp.post("/fivetran")
def fivetran_event() -> tuple[Response, int]:
    """One signed event of a Fivetran webhook: a sync's start or end becomes (part of) its job; any other is counted."""
    secret = services().config.sources_fivetran_webhook_secret
    body = read_body()
    if not secret:
        raise ClientError(401, "no Fivetran webhook is configured (sources.fivetran.webhook_secret)", "secret")
    if not fivetran.signature_valid(secret, body, request.headers.get(fivetran.SIGNATURE_HEADER)):
        raise ClientError(401, "the body is not signed with this webhook's secret", fivetran.SIGNATURE_HEADER)
    require_type(*JSON_TYPES)
    payload = _json(body)
    return _store(fivetran.PLATFORM, lambda latest: _as_pair(fivetran.read_event(payload, latest=latest)))


def _json(body: bytes) -> Any:
    if not body.strip():
        raise ClientError(400, "request body is empty", "body")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as error:
        raise ClientError(400, f"request body is not valid JSON: {error}", "body") from None


def _as_pair(read: airbyte.Notice | fivetran.Event) -> tuple[str, Job | None]:
    return read.kind, read.job


def _store(source: str, read: Callable[[float], tuple[str, Job | None]]) -> tuple[Response, int]:
    """Count the delivery by its kind and store its job in one transaction; a refused payload stores nothing."""
    store = services().store
    try:
        kind, job = read(services().latest_time())
    except ValidationError as error:
        store.ingest.jobs([], endpoint=source, rejected=1, rejected_fields=[error.field])
        raise ClientError(400, str(error), error.field) from None
    result = store.ingest.jobs(
        [] if job is None else [job], endpoint=source, notice=(source, kind), token=ingest_token_key()
    )
    body: dict[str, Any] = {"kind": kind, "job_id": None if job is None else job.job_id}
    if job is None:
        return jsonify(body | {"outcome": "counted"}), 200
    refused = result.errors.get(0)
    if isinstance(refused, NewConnectionRefused):
        response = jsonify(body | {"error": str(refused), "field": refused.field})
        response.headers["Retry-After"] = str(refused.retry_after)
        return response, 429
    if refused is not None:
        raise ClientError(400, str(refused), refused.field)
    return jsonify(body | {"outcome": result.outcomes[0]}), 200
