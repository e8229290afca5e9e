"""Fivetran's REST API (``GET /v1/connections``) as job records: what the Fivetran poller reads, without the reading.

The API has no list of syncs: each connection tells when it last succeeded
(``succeeded_at``) and last failed (``failed_at``). A time the poller has not
seen before for a connection is a job that ended then, with the id
``fivetran:<connection id>:<time>``, so that reading the same connection again
(after a restart, or a page read twice) is the same record again, which the
store counts once. The webhook's jobs have Fivetran's ``sync_id`` instead, which
the API does not give: with the webhook configured, the poller leaves jobs to it
(:mod:`..fivetran_poller`).

A connection's name is its ``schema`` (the name Fivetran shows, and the
webhook's ``connector_name``); its type (``service``) is the source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..model import FAILED, SUCCEEDED, Job, ValidationError
from ..timeutil import format_rfc3339, parse_rfc3339
from . import ConnectionState
from .fivetran import PLATFORM
from .payload import Path, read_record

#: The media type the API is asked for: its version 2 (the OpenAPI document's default).
ACCEPT: Final = "application/json;version=2"

PLACES: Final[Mapping[str, Path]] = {
    "connection_id": ("id",),
    "source": ("service",),
}
_WORKED_OUT: Final = {
    "job_id": "id",
    "connection_name": "schema",
    "status": "succeeded_at",
    "finished_at": "succeeded_at",
    "error_summary": "status.tasks",
}


@dataclass(frozen=True, slots=True)
class Seen:
    """The newest success and failure times of a connection already made into jobs (epoch seconds)."""

    succeeded_at: float | None = None
    failed_at: float | None = None


def page(payload: Any) -> tuple[list[Any], str | None]:
    """The connections of one page and the cursor of the next (None: the last page)."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise ValidationError("data.items", "must be a list of connections")
    cursor = data.get("next_cursor")
    return list(data["items"]), cursor if isinstance(cursor, str) and cursor else None


def connection_id(item: Any) -> str:
    """The connection's id, or a ValidationError naming ``id``."""
    value = item.get("id") if isinstance(item, dict) else None
    if not isinstance(value, str) or not value:
        raise ValidationError("id", "must be the connection's id")
    return value


def _time(item: Mapping[str, Any], key: str) -> float | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(key, "must be an RFC 3339 timestamp")
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise ValidationError(key, f"must be an RFC 3339 timestamp (got {value[:40]!r})") from None


def seen_now(item: Any, before: Seen) -> Seen:
    """What is seen of the connection once ``item`` is read: the newer of each time."""
    succeeded, failed = _time(item, "succeeded_at"), _time(item, "failed_at")
    return Seen(_newer(before.succeeded_at, succeeded), _newer(before.failed_at, failed))


def _newer(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def jobs_of(item: Any, before: Seen, *, latest: float) -> list[Job]:
    """The jobs ``item`` shows that ended after what was ``before`` seen of its connection, oldest first."""
    if not isinstance(item, dict):
        raise ValidationError("data.items[]", "must be an object")
    ident = connection_id(item)
    name = item.get("schema")
    if not isinstance(name, str) or not name:
        raise ValidationError("schema", "must be the connection's name")
    ended = []
    for key, status, previous in (
        ("succeeded_at", SUCCEEDED, before.succeeded_at),
        ("failed_at", FAILED, before.failed_at),
    ):
        moment = _time(item, key)
        if moment is not None and (previous is None or moment > previous):
            ended.append((moment, key, status))
    jobs = []
    for moment, key, status in sorted(ended):
        given: dict[str, Any] = {
            "job_id": f"{PLATFORM}:{ident}:{format_rfc3339(moment)}",
            "connection_name": name,
            "platform": PLATFORM,
            "job_type": "sync",
            "status": status,
            "finished_at": item[key],
        }
        if status == FAILED:
            given["error_summary"] = _failure(item)
        worked_out = {**_WORKED_OUT, "status": key, "finished_at": key}
        jobs.append(read_record(item, PLACES, given, latest=latest, worked_out=worked_out))
    return jobs


#: The states Fivetran documents for each part of a connection's ``status`` (as text in its document:
#: they are not an enum there). Each is a series from 0; a state not listed shows as 1 when reported.
STATES: Final[Mapping[str, tuple[str, ...]]] = {
    "setup": ("incomplete", "connected", "broken"),
    "sync": ("scheduled", "syncing", "paused", "rescheduled"),
    "update": ("on_schedule", "delayed"),
}


def state_of(item: Any) -> ConnectionState:
    """The state ``item`` reports; a part of it that is missing or not as documented is left out."""
    if not isinstance(item, dict):
        raise ValidationError("data.items[]", "must be an object")
    name = item.get("schema")
    if not isinstance(name, str) or not name:
        raise ValidationError("schema", "must be the connection's name")
    reported = item.get("status")
    status: Mapping[str, Any] = reported if isinstance(reported, dict) else {}
    states = {
        part: value
        for part in STATES
        if isinstance(value := status.get(f"{part}_state"), str) and value and len(value) <= 64
    }
    paused = item.get("paused")
    return ConnectionState(name, states, paused if isinstance(paused, bool) else None, _minutes(item))


def _minutes(item: Mapping[str, Any]) -> float | None:
    """``sync_frequency`` in seconds: minutes as a number, or as the text its document's enum gives."""
    value = item.get("sync_frequency")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 6:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 525_600:
        return None
    return float(value) * 60


def _failure(item: Mapping[str, Any]) -> str:
    """The connection's tasks (what Fivetran asks someone to fix) as the failure's summary."""
    status = item.get("status")
    tasks = status.get("tasks") if isinstance(status, dict) else None
    said = [
        ": ".join(str(task[key]) for key in ("code", "message") if isinstance(task.get(key), str) and task[key])
        for task in (tasks if isinstance(tasks, list) else [])
        if isinstance(task, dict)
    ]
    said = [text for text in said if text]
    return "; ".join(said) if said else "Fivetran: the sync failed"
