"""Write API: job records and job log lines."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..joblogs import LogLine, parse_json, parse_text
from ..lifecycle import OUTCOMES
from ..model import JOB_ID_PATTERN, Job, ValidationError, parse_job
from ..store import JobNotFound, NewConnectionRefused
from .auth import ingest_token_key, require_ingest_token
from .errors import ClientError
from .services import services

bp = Blueprint("ingest", __name__, url_prefix="/api/v1")

JSON_TYPES: Final = ("application/json",)
NDJSON_TYPES: Final = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")
TEXT_TYPES: Final = ("text/plain",)
MAX_RECORDS: Final = 10_000


@bp.before_request
def _authenticate() -> None:
    require_ingest_token()


def mimetype() -> str:
    return request.mimetype or ""


def require_type(*allowed: str) -> str:
    kind = mimetype()
    if kind not in allowed:
        raise ClientError(
            415, f"Content-Type must be one of {', '.join(allowed)} (got {kind or 'none'})", "Content-Type"
        )
    return kind


def read_body() -> bytes:
    """The whole request body, or a 413 when it is larger than ``max_body_bytes``.

    Flask refuses a Content-Length over the limit, but a chunked body (no
    Content-Length) is read through a stream that stops at the limit without a
    word: the rest would be dropped and the truncated body taken. One byte more
    from the server's own stream tells whether anything was left.
    """
    raw = request.get_data(cache=False)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    truncated = request.content_length is None and limit is not None and len(raw) >= limit
    if truncated and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
    return raw


def read_json(field: str = "body") -> Any:
    """The request body as JSON, or a 400 naming ``field``."""
    raw = read_body()
    if not raw.strip():
        raise ClientError(400, "request body is empty", field)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ClientError(400, f"request body is not valid JSON: {error}", field) from None


def _records_from_body(kind: str) -> tuple[list[Any], bool]:
    """The raw records of a request and whether it was a batch."""
    if kind in NDJSON_TYPES:
        raw = read_body()
        records: list[Any] = []
        for number, line in enumerate(raw.split(b"\n"), start=1):  # a line ends at LF (CRLF: CR is JSON space)
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except (ValueError, RecursionError):
                records.append(_BadLine(number))
        if not records:
            raise ClientError(400, "request body is empty", "body")
        return records, True
    data = read_json()
    if isinstance(data, dict) and "jobs" in data and "job_id" not in data:
        if not isinstance(data["jobs"], list):
            raise ClientError(400, "must be a list of job records", "jobs")
        unknown = sorted(key for key in data if key != "jobs")
        if unknown:  # a misspelt option beside the batch would otherwise be ignored without a word
            raise ClientError(400, 'is not a batch field (a batch is {"jobs": [...]})', unknown[0])
        return data["jobs"], True
    if isinstance(data, list):
        return data, True
    return [data], False


class _BadLine:
    """An NDJSON line that is not JSON; reported with the records."""

    def __init__(self, number: int) -> None:
        self.number = number


def ingest(records: list[Any], *, endpoint: str, parse: Any = parse_job, batch: bool) -> tuple[Response, int]:
    """Validate every record, store the good ones in one transaction, report the bad."""
    if len(records) > MAX_RECORDS:
        raise ClientError(400, f"at most {MAX_RECORDS} records per request", "jobs")
    if not records:
        raise ClientError(400, "must hold at least one job record", "jobs")
    latest = services().latest_time()
    good: list[Job] = []
    positions: list[int] = []
    errors: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        try:
            if isinstance(record, _BadLine):
                raise ValidationError("record", f"is not valid JSON (line {record.number})")
            good.append(parse(record, latest=latest))
            positions.append(index)
        except ValidationError as error:
            errors.append(_error_entry(index, record, error))

    ingest = services().store.ingest
    result = ingest.jobs(
        good,
        endpoint=endpoint,
        rejected=len(errors),
        rejected_fields=[e["field"] for e in errors],
        token=ingest_token_key(),
    )
    # The store refuses a record that the job stored before would take past a bound; the others stay stored.
    errors += [_error_entry(positions[at], records[positions[at]], error) for at, error in result.errors.items()]
    errors.sort(key=lambda entry: int(entry["index"]))
    counts = {outcome: result.count(outcome) for outcome in OUTCOMES}
    counts["rejected"] = len(errors)
    body: dict[str, Any] = dict(counts)
    body["errors"] = errors
    if not batch:
        body["outcome"] = result.outcomes[0] if result.outcomes else "rejected"
    if len(errors) == len(records):
        first = errors[0]
        body.update(error=first["error"], field=first["field"])
        return _refused(body, result.errors.values())
    return jsonify(body), 200


def _refused(body: dict[str, Any], store_errors: Iterable[ValidationError]) -> tuple[Response, int]:
    """A request of which nothing was stored: 400, or 429 with ``Retry-After`` when its token made
    all the connections it may this hour (``limits.new_connections_per_hour``): sent again later, it is taken."""
    waits = [error.retry_after for error in store_errors if isinstance(error, NewConnectionRefused)]
    if not waits:
        return jsonify(body), 400
    response = jsonify(body)
    response.headers["Retry-After"] = str(max(waits))
    return response, 429


def _error_entry(index: int, record: Any, error: ValidationError) -> dict[str, Any]:
    """One refused record in a response's ``errors``: its place, the field, why, and its job id if it has one."""
    entry: dict[str, Any] = {"index": index, "field": error.field, "error": str(error)}
    if isinstance(record, dict) and isinstance(record.get("job_id"), str):
        entry["job_id"] = record["job_id"]
    return entry


@bp.post("/jobs")
def post_jobs() -> tuple[Response, int]:
    """One record, ``{"jobs": [...]}``, a JSON list, or NDJSON; upserted by ``job_id``."""
    kind = require_type(*JSON_TYPES, *NDJSON_TYPES)
    records, batch = _records_from_body(kind)
    return ingest(records, endpoint="jobs", batch=batch)


def _job_id(job_id: str) -> str:
    if not JOB_ID_PATTERN.match(job_id):
        raise ClientError(400, "must be 1-128 characters of letters, digits, _ - . :", "job_id")
    return job_id


def _read_text() -> str:
    """The body decoded with the Content-Type's ``charset`` (UTF-8 when not given).

    A charset that names no text encoding (``undefined``, ``rot13``, ``hex``)
    is the sender's mistake: a 400 naming it, not a 500.
    """
    charset = request.mimetype_params.get("charset", "utf-8")
    try:
        "".encode(charset).decode(charset)  # raises for names that are no codec or no text codec
    except (LookupError, ValueError):
        raise ClientError(400, f"must name a text encoding such as utf-8 (got {charset[:64]!r})", "charset") from None
    try:
        return read_body().decode(charset)
    except UnicodeDecodeError:
        raise ClientError(400, f"request body is not valid {charset[:64]} text", "body") from None


@bp.post("/jobs/<path:job_id>/logs")
def post_logs(job_id: str) -> tuple[Response, int]:
    """Log lines of one job: product-format text, or a JSON list of line objects."""
    _job_id(job_id)
    kind = require_type(*TEXT_TYPES, *JSON_TYPES)
    lines: list[LogLine]
    ingest = services().store.ingest
    try:
        if kind in TEXT_TYPES:
            lines = parse_text(_read_text(), latest=services().latest_time())
        else:
            lines = parse_json(read_json("lines"), latest=services().latest_time())
    except ValidationError as error:
        ingest.rejected("logs", 1, [error.field])
        raise ClientError(400, str(error), error.field) from None
    if not lines:
        raise ClientError(400, "no log lines in the request", "lines")
    try:
        result = ingest.logs(job_id, lines)
    except JobNotFound:
        raise ClientError(404, f"no job {job_id!r}; post the job record first", "job_id") from None
    return jsonify({"accepted": result.accepted, "unchanged": result.unchanged}), 200


@bp.delete("/connections/<path:name>")
def forget_connection(name: str) -> tuple[Response, int]:
    """Forget a connection: its series and aggregates go, its jobs stay until retention.

    For a connection that was renamed or removed in the product: it frees its place in
    the series budget and Prometheus sees its series end. A later job starts it afresh.
    """
    jobs = services().store.retention.forget_connection(name)
    if jobs is None:
        raise ClientError(404, f"no connection {name!r}", "name")
    return jsonify({"connection_name": name, "forgotten": True, "jobs_kept": jobs}), 200
