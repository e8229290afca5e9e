"""Airbyte's notification webhook: a sync's end (or its queueing) as a job record.

Airbyte (1.x and later) posts ``{text, blocks, data}`` for a workspace's
notifications, unsigned, to the URL it is given (so the ingest token rides in
the URL, as for the Calabi webhook). ``data`` describes the job; what happened
is said only in the title of the first block, ``"<title>: <link|connection>"``:
``Sync completed``, ``Sync failure occurred``, ``Sync queued`` (which also says
``success: false``: it is not a failure), ``Connection disabled`` and
``Warning - repeated connection failures`` (these two carry no ``data``). The
"Test" button's notifications have a ``[THIS IS A TEST NOTIFICATION] `` tag,
or (before Airbyte 1.3) only a ``text``; they are counted, not stored.

Airbyte's ``startedAt`` is when the job was created, ``finishedAt`` its last
update and ``durationInSeconds`` the time between: a job's duration from an
Airbyte notification includes the time it waited in the queue. So ``startedAt``
is the record's ``created_at``; the notification does not tell when the job
started running.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..model import CANCELLED, FAILED, PENDING, SUCCEEDED, Job, ValidationError
from .payload import Path, pick, read_record

PLATFORM: Final = "airbyte"
#: The kinds of notification counted (``calabi_exporter_source_notices_total{platform="airbyte",kind}``).
SYNC_COMPLETED: Final = "sync_completed"
SYNC_FAILED: Final = "sync_failed"
SYNC_QUEUED: Final = "sync_queued"
CONNECTION_DISABLED: Final = "connection_disabled"
FAILURES_WARNING: Final = "repeated_failures_warning"
TEST: Final = "test"
OTHER: Final = "other"
KINDS: Final = (SYNC_COMPLETED, SYNC_FAILED, SYNC_QUEUED, CONNECTION_DISABLED, FAILURES_WARNING, TEST, OTHER)

#: The first block's title of each kind, as Airbyte's notification client writes it.
TITLES: Final = {
    "Sync completed": SYNC_COMPLETED,
    "Sync failure occurred": SYNC_FAILED,
    "Sync queued": SYNC_QUEUED,
    "Connection disabled": CONNECTION_DISABLED,
    "Warning - repeated connection failures": FAILURES_WARNING,
}
TEST_TAG: Final = "[THIS IS A TEST NOTIFICATION]"
_STATUSES: Final = {SYNC_COMPLETED: SUCCEEDED, SYNC_FAILED: FAILED, SYNC_QUEUED: PENDING}
#: Airbyte's errorType of a job someone cancelled: the job is cancelled, not failed.
MANUAL_CANCELLATION: Final = "manual_cancellation"

#: Where ``data`` holds each field of the job record.
PLACES: Final[Mapping[str, Path]] = {
    "connection_name": ("data", "connection", "name"),
    "connection_id": ("data", "connection", "id"),
    "source": ("data", "source", "name"),
    "destination": ("data", "destination", "name"),
    "job_url": ("data", "connection", "url"),
    "created_at": ("data", "startedAt"),
}
#: Fields a finished job adds (a queued one has no finish, duration or counts yet).
FINISHED_PLACES: Final[Mapping[str, Path]] = {
    **PLACES,
    "finished_at": ("data", "finishedAt"),
    "duration_seconds": ("data", "durationInSeconds"),
    "records_synced": ("data", "recordsCommitted"),
    "bytes_synced": ("data", "bytesCommitted"),
}
_WORKED_OUT: Final = {"job_id": "data.jobId", "status": "blocks", "error_summary": "data.errorMessage"}


@dataclass(frozen=True, slots=True)
class Notice:
    """What one notification is: its kind, and the job record it makes (None: counted, nothing stored)."""

    kind: str
    job: Job | None


def kind_of(payload: Mapping[str, Any]) -> str:
    """The notification's kind, from the title of its first block.

    >>> kind_of({"blocks": [{"type": "section", "text": {"text": "Sync queued: <https://x|A → B>"}}]})
    'sync_queued'
    >>> kind_of({"text": "Hello World! This is a test from Airbyte to try slack notification settings"})
    'test'
    """
    blocks = payload.get("blocks")
    first = blocks[0] if isinstance(blocks, list) and blocks else None
    text = pick(first, ("text", "text")) if isinstance(first, dict) else None
    if not isinstance(text, str):
        return _untitled(payload)
    title = text.partition(": ")[0].strip()
    if title.startswith(TEST_TAG):
        return TEST
    return TITLES.get(title, OTHER)


def _untitled(payload: Mapping[str, Any]) -> str:
    """The kind of a body without blocks: the "Test" button's before Airbyte 1.3 (``text`` only), or
    ``data`` alone as Airbyte's documentation shows it, told by ``data.success``."""
    if "data" not in payload:
        return TEST if str(payload.get("text", "")).startswith("Hello World!") else OTHER
    success = pick(payload, ("data", "success"))
    return SYNC_COMPLETED if success is True else SYNC_FAILED if success is False else OTHER


def read_notification(payload: Any, *, latest: float) -> Notice:
    """The notice a body holds, or a ValidationError naming the payload's field."""
    if not isinstance(payload, dict):
        raise ValidationError("body", "must be a JSON object")
    kind = kind_of(payload)
    status = _STATUSES.get(kind)
    if status is None or payload.get("data") is None:
        return Notice(kind, None)
    job_id = pick(payload, ("data", "jobId"))
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 0:
        raise ValidationError("data.jobId", "must be a whole number (Airbyte's job id)")
    given: dict[str, Any] = {
        "job_id": f"{PLATFORM}:{job_id}",
        "status": status,
        "platform": PLATFORM,
        "job_type": "sync",  # Airbyte notifies only of sync jobs
    }
    if status == FAILED:
        given.update(_failure(payload))
    places = PLACES if status == PENDING else FINISHED_PLACES
    return Notice(kind, read_record(payload, places, given, latest=latest, worked_out=_WORKED_OUT))


def _failure(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A failed job's status and summary: a job someone cancelled is cancelled, not failed."""
    error_type = pick(payload, ("data", "errorType"))
    origin = pick(payload, ("data", "errorOrigin"))
    message = pick(payload, ("data", "errorMessage"))
    status = CANCELLED if error_type == MANUAL_CANCELLATION else FAILED
    if not isinstance(message, str) or not message:
        # Not text: read as the summary, so that validation refuses it naming data.errorMessage.
        return {"status": status} if message in (None, "") else {"status": status, "error_summary": message}
    return {"status": status, "error_summary": summary(message, error_type, origin)}


def summary(message: str, error_type: Any, origin: Any) -> str:
    """Airbyte's failure as one line: its message, then its type and origin where Airbyte gives them.

    >>> summary("Connection refused", "config_error", "source")
    'Connection refused (type: config_error, origin: source)'
    """
    about = ", ".join(
        f"{label}: {value}" for label, value in (("type", error_type), ("origin", origin)) if isinstance(value, str)
    )
    return f"{message} ({about})" if about else message
