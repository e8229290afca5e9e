"""JSON documents of jobs and log lines, as exports and webhooks send them.

One shape everywhere a job leaves the exporter: the fields the ingest API
accepts, times as RFC 3339 UTC strings, absent values as ``null``, so that a
consumer (a webhook receiver, an Athena table over the S3 export) reads every
job the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from .joblogs import LogLine
from .model import FAILED, FAILED_AT, Job, StreamResult
from .records import Meaning, scalars, table
from .timeutil import format_rfc3339


def _time(value: float | None) -> str | None:
    return None if value is None else format_rfc3339(value)


def value_document(meaning: Meaning, value: Any) -> Any:
    """One field's value as JSON: a time as RFC 3339 UTC, anything else as it is (absent as ``null``)."""
    return _time(value) if meaning.kind == "time" else value


def _fields(record: object) -> dict[str, Any]:
    """A record's scalar fields as JSON, in declaration order."""
    return {name: value_document(m, getattr(record, name)) for name, m in scalars(type(record))}


def stream_document(stream: StreamResult) -> dict[str, Any]:
    return _fields(stream)


def job_document(job: Job, *, streams: bool = True) -> dict[str, Any]:
    """A job as JSON; ``failed_at`` (the product's name for a failed job's finish time) only on failures."""
    document = _fields(job)
    if job.status == FAILED:
        document[FAILED_AT] = _time(job.finished_at)
    if streams:
        document["streams"] = [stream_document(s) for s in job.streams]
    return document


#: The job's fields its ``job_summary`` log event carries (declared ``shipped``).
_SUMMARY_ATTRIBUTES: Final = tuple((name, m) for name, m in table(Job) if m.shipped)


def summary_attributes(job: Job) -> dict[str, Any]:
    """The attributes of a job's ``job_summary`` log event: its shipped fields that are known, as JSON values."""
    return {
        name: value_document(m, value) for name, m in _SUMMARY_ATTRIBUTES if (value := getattr(job, name)) is not None
    }


def line_document(job: Job, line: LogLine, received_at: float) -> dict[str, Any]:
    """A log line with the job and connection it belongs to, as the S3 export writes it."""
    return {
        "job_id": job.job_id,
        "connection_name": job.connection_name,
        "received_at": format_rfc3339(received_at),
        **_fields(line),
    }


def stored_line_document(line_id: int, line: LogLine, received_at: float) -> dict[str, Any]:
    """A stored log line as the read API returns it: its place among the job's lines, when it came, its fields."""
    return {"id": line_id, "received_at": format_rfc3339(received_at), **_fields(line)}


def status_event_id(job_id: str, status: str) -> str:
    """The id of a job's change to ``status``: the same in every delivery and on every endpoint.

    A job reaches each status once (statuses never move backwards), so the pair
    names the event; a receiver de-duplicates retried deliveries on it.
    """
    return hashlib.sha256(f"{job_id}\x1f{status}".encode()).hexdigest()[:32]


def status_event(job: Job, previous_status: str | None, event_id: str, at: float) -> dict[str, Any]:
    """The body of a status-change webhook: the event, then the job's fields and Summary."""
    return {
        "event_id": event_id,
        "event_type": "job.status_changed",
        "timestamp": format_rfc3339(at),
        "previous_status": previous_status,
        **job_document(job, streams=False),
    }


def export_object_name(window_start: float, job_ids: Sequence[str]) -> tuple[str, str]:
    """The day partition and object name of an export batch.

    The name holds the batch's time window and a digest of its job ids: an
    upload of the same batch writes the same key, and batches sealed later for
    the same window (jobs that arrived late) never overwrite an earlier one.
    """
    moment = datetime.fromtimestamp(window_start, tz=UTC)
    digest = hashlib.sha256("\n".join(sorted(job_ids)).encode()).hexdigest()[:16]
    return moment.strftime("%Y-%m-%d"), f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{digest}"
