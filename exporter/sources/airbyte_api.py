"""Airbyte's public API (``GET /v1/jobs``) as job records: what the Airbyte poller reads, without the reading.

A job of the public API is ``{jobId, status, jobType, startTime, connectionId,
lastUpdatedAt, duration, bytesSynced, rowsSynced}``; it names its connection
by id only, so the poller looks the name up (``GET /v1/connections/{id}``)
and passes it in. The job id is the webhook's (``airbyte:<jobId>``): a job
both the webhook and the poller see is one job, counted once.

Like the webhook's ``startedAt``, ``startTime`` is when the job was created
(``created_at``); ``lastUpdatedAt`` is set once the job ended and is its
finish. Airbyte writes its times with ``OffsetDateTime.toString()``, which
leaves out seconds that are zero (``2024-01-01T00:00Z``): they are put back
before validation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from ..model import CANCELLED, FAILED, PENDING, RUNNING, SUCCEEDED, Job, ValidationError
from ..timeutil import format_rfc3339
from .airbyte import PLATFORM, summary
from .payload import Path, read_record

#: Airbyte's job statuses (``JobStatusEnum``) as the project's; ``incomplete`` is an attempt that failed
#: while the job goes on with another.
STATUSES: Final = {
    "pending": PENDING,
    "queued": PENDING,
    "running": RUNNING,
    "incomplete": RUNNING,
    "succeeded": SUCCEEDED,
    "failed": FAILED,
    "cancelled": CANCELLED,
}
#: The job types the poller asks for: Airbyte's webhook, too, speaks only of syncs.
JOB_TYPE: Final = "sync"

PLACES: Final[Mapping[str, Path]] = {
    "connection_id": ("connectionId",),
    "created_at": ("startTime",),
    "records_synced": ("rowsSynced",),
    "bytes_synced": ("bytesSynced",),
}
_FINISHED_PLACES: Final[Mapping[str, Path]] = {**PLACES, "finished_at": ("lastUpdatedAt",)}
_WORKED_OUT: Final = {"job_id": "jobId", "status": "status", "duration_seconds": "duration", "connection_name": "name"}
_NO_SECONDS: Final = re.compile(r"(T\d{2}:\d{2})(?=Z|[+-]\d{2}:?\d{2}$)")
_PERIOD: Final = re.compile(
    r"P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?"
)


def with_seconds(moment: Any) -> Any:
    """An Airbyte time with its dropped seconds put back; anything else as it is (validation judges it).

    >>> with_seconds("2024-01-01T00:00Z")
    '2024-01-01T00:00:00Z'
    >>> with_seconds("2024-01-01T10:15:30+02:00")
    '2024-01-01T10:15:30+02:00'
    """
    return _NO_SECONDS.sub(r"\1:00", moment, count=1) if isinstance(moment, str) else moment


def period_seconds(period: str) -> float:
    """An ISO 8601 duration as Airbyte writes one (``PT8H6M12S``, ``P1DT2H``) in seconds.

    >>> period_seconds("PT8H6M12S")
    29172.0
    >>> period_seconds("PT0.5S")
    0.5
    """
    match = _PERIOD.fullmatch(period)
    if match is None or period in ("P", "PT") or period.endswith("T"):
        raise ValidationError("duration", f"must be an ISO 8601 duration such as PT1H2M3S (got {period[:40]!r})")
    parts = {name: float(value) for name, value in match.groupdict().items() if value is not None}
    return (
        parts.get("days", 0.0) * 86400
        + parts.get("hours", 0.0) * 3600
        + parts.get("minutes", 0.0) * 60
        + parts.get("seconds", 0.0)
    )


def job_id_of(item: Any) -> int:
    """The item's Airbyte job id, or a ValidationError naming ``jobId``."""
    job_id = item.get("jobId") if isinstance(item, dict) else None
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 0:
        raise ValidationError("jobId", "must be a whole number (Airbyte's job id)")
    return job_id


def job_of(item: Any, connection_name: str, *, latest: float, details: Mapping[str, Any] | None = None) -> Job:
    """The job record one item of ``GET /v1/jobs`` describes, under ``connection_name``; ``details`` adds
    what the configuration API tells of it (:func:`details_of`)."""
    if not isinstance(item, dict):
        raise ValidationError("data[]", "must be an object")
    job_id = job_id_of(item)
    given_status = item.get("status")
    status = STATUSES.get(given_status) if isinstance(given_status, str) else None
    if status is None:
        raise ValidationError("status", f"must be one of {', '.join(STATUSES)}")
    given: dict[str, Any] = {
        "job_id": f"{PLATFORM}:{job_id}",
        "status": status,
        "platform": PLATFORM,
        "job_type": JOB_TYPE,
        "connection_name": connection_name,
    }
    duration = item.get("duration")
    if isinstance(duration, str) and status not in (PENDING, RUNNING):
        given["duration_seconds"] = period_seconds(duration)
    finished = status not in (PENDING, RUNNING)
    given.update(details or {})
    times = {key: with_seconds(item.get(key)) for key in ("startTime", "lastUpdatedAt")}
    places = _FINISHED_PLACES if finished else PLACES
    return read_record({**item, **times}, places, given, latest=latest, worked_out=_WORKED_OUT)


def updated_at(item: Any) -> str | None:
    """The item's ``lastUpdatedAt`` with its seconds (set only once the job ended), the poller's cursor."""
    value = item.get("lastUpdatedAt") if isinstance(item, dict) else None
    return with_seconds(value) if isinstance(value, str) and value else None


def page_items(payload: Any) -> list[Any]:
    """The jobs of one page (``JobsResponse.data``); an empty list ends the listing.

    Airbyte's ``next`` is set whenever a page is not empty (and drops the
    ``updatedAtStart`` and ``orderBy`` of the request), so it is not followed:
    the poller asks for the next offset itself and stops at an empty page.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise ValidationError("data", "must be a list of jobs")
    return list(payload["data"])


def connection_name(payload: Any) -> str:
    """The name in a ``GET /v1/connections/{id}`` answer."""
    name = payload.get("name") if isinstance(payload, dict) else None
    if not isinstance(name, str) or not name:
        raise ValidationError("name", "must be the connection's name")
    return name


def details_of(info: Any, status: str) -> dict[str, Any]:
    """What the configuration API's ``POST /v1/jobs/get`` (``JobInfoRead``) adds to a job of ``status``.

    The job's ``startedAt`` (when it left the queue: the public API has only its
    creation), the streams of its last attempt with the rows and bytes each committed,
    and that attempt's first failure (``failureSummary.failures[0]``) as the summary,
    in the words of Airbyte's notifications. A stream a failure names failed; the
    others of a successful job succeeded, of another job their end is not known.
    Anything not as documented is left out rather than refused: these are details
    of a job the public API already described.
    """
    job = info.get("job") if isinstance(info, dict) else None
    attempts = info.get("attempts") if isinstance(info, dict) else None
    out: dict[str, Any] = {}
    started = job.get("startedAt") if isinstance(job, dict) else None
    if isinstance(started, int) and not isinstance(started, bool) and started > 0:
        out["started_at"] = format_rfc3339(float(started))  # epoch seconds in this API: a record's time is text
    last = (
        attempts[-1].get("attempt")
        if isinstance(attempts, list) and attempts and isinstance(attempts[-1], dict)
        else None
    )
    if not isinstance(last, dict):
        return out
    summary_of = last.get("failureSummary")
    listed = summary_of.get("failures") if isinstance(summary_of, dict) else None
    failures = [f for f in listed if isinstance(f, dict)] if isinstance(listed, list) else []
    failed_streams = {_stream_name(f.get("streamDescriptor")) for f in failures} - {None}
    if failures and status != SUCCEEDED:
        first = failures[0]
        message = first.get("externalMessage") or first.get("internalMessage")
        if isinstance(message, str) and message:
            out["error_summary"] = summary(message, first.get("failureType"), first.get("failureOrigin"))
    streams = []
    stream_stats = last.get("streamStats")
    for entry in stream_stats if isinstance(stream_stats, list) else []:
        if not isinstance(entry, dict):
            continue
        name = _stream_name({"name": entry.get("streamName"), "namespace": entry.get("streamNamespace")})
        given = entry.get("stats")
        stats: Mapping[str, Any] = given if isinstance(given, dict) else {}
        if name is None:
            continue
        stream: dict[str, Any] = {"name": name}
        stream_status = FAILED if name in failed_streams else SUCCEEDED if status == SUCCEEDED else None
        if stream_status is not None:
            stream["status"] = stream_status
        for field, key in (("records_synced", "recordsCommitted"), ("bytes_synced", "bytesCommitted")):
            value = stats.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                stream[field] = value
        streams.append(stream)
    if streams:
        out["streams"] = streams
    return out


def _stream_name(descriptor: Any) -> str | None:
    """``namespace.name`` (or the name alone), as the streams of the product's own records are named."""
    if not isinstance(descriptor, dict) or not isinstance(descriptor.get("name"), str) or not descriptor["name"]:
        return None
    namespace = descriptor.get("namespace")
    return f"{namespace}.{descriptor['name']}" if isinstance(namespace, str) and namespace else descriptor["name"]
