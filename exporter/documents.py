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
from typing import Any

from .joblogs import LogLine
from .model import FAILED, Job, StreamResult
from .timeutil import format_rfc3339

_TIMES = ("created_at", "started_at", "finished_at")


def _time(value: float | None) -> str | None:
    return None if value is None else format_rfc3339(value)


def stream_document(stream: StreamResult) -> dict[str, Any]:
    return {
        "name": stream.name,
        "status": stream.status,
        "records_synced": stream.records_synced,
        "records_failed": stream.records_failed,
        "bytes_synced": stream.bytes_synced,
        "duration_seconds": stream.duration_seconds,
        "error": stream.error,
    }


def job_document(job: Job, *, streams: bool = True) -> dict[str, Any]:
    """A job as JSON; ``failed_at`` (the product's name for a failed job's finish time) only on failures."""
    document: dict[str, Any] = {
        "job_id": job.job_id,
        "connection_name": job.connection_name,
        "connection_id": job.connection_id,
        "source": job.source,
        "destination": job.destination,
        "job_type": job.job_type,
        "attempt": job.attempt,
        "status": job.status,
        **{name: _time(getattr(job, name)) for name in _TIMES},
        "records_synced": job.records_synced,
        "records_failed": job.records_failed,
        "bytes_synced": job.bytes_synced,
        "duration_seconds": job.duration_seconds,
        "streams_succeeded": job.streams_succeeded,
        "streams_failed": job.streams_failed,
        "error_summary": job.error_summary,
        "job_url": job.job_url,
    }
    if job.status == FAILED:
        document["failed_at"] = _time(job.finished_at)
    if streams:
        document["streams"] = [stream_document(s) for s in job.streams]
    return document


def line_document(job: Job, line: LogLine, received_at: float) -> dict[str, Any]:
    """A log line with the job and connection it belongs to, as the S3 export writes it."""
    return {
        "job_id": job.job_id,
        "connection_name": job.connection_name,
        "timestamp": _time(line.timestamp),
        "received_at": format_rfc3339(received_at),
        "level": line.level,
        "stream": line.stream,
        "message": line.message,
    }


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
