"""The read API: ``/api/v1/jobs``, ``/api/v1/jobs/<job_id>``, ``/api/v1/connections``, and its OpenAPI document."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from flask import Blueprint, Response, jsonify, request

from .. import readmodel
from .auth import require_read_token
from .errors import ClientError
from .services import services

bp = Blueprint("read_api", __name__)


def _params() -> dict[str, list[str]]:
    return {name: request.args.getlist(name) for name in request.args}


def _answer(build: Any, *args: Any) -> Any:
    try:
        return build(*args)
    except readmodel.BadParameter as error:
        raise ClientError(400, error.message, error.name) from None


@bp.get("/api/v1/jobs")
def list_jobs() -> tuple[Response, int]:
    """Jobs newest first, filtered, one page at a time."""
    require_read_token()
    found = services()
    return jsonify(_answer(readmodel.list_jobs, found.store.reads, _params(), found.clock())), 200


@bp.get("/api/v1/jobs/<job_id>")
def get_job(job_id: str) -> tuple[Response, int]:
    """One job with its streams and a page of its log lines."""
    require_read_token()
    document = _answer(readmodel.get_job, services().store.reads, job_id, _params())
    if document is None:
        raise ClientError(404, f"no job {job_id!r}", "job_id")
    return jsonify(document), 200


@bp.get("/api/v1/connections")
def list_connections() -> tuple[Response, int]:
    """Every known connection with its health over a window."""
    require_read_token()
    found = services()
    return jsonify(_answer(readmodel.list_connections, found.store.reads, _params(), found.clock())), 200


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3 description shipped with the package (``exporter/openapi.json``)."""
    document: dict[str, Any] = json.loads(resources.files("calabi_exporter").joinpath("openapi.json").read_text())
    return document


@bp.get("/api/v1/openapi.json")
def openapi() -> tuple[Response, int]:
    """The API's OpenAPI 3 document (open, like ``/metrics``)."""
    return jsonify(openapi_document()), 200
