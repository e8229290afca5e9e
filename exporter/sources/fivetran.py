"""Fivetran's webhook: signed ``sync_start`` and ``sync_end`` events, paired by ``sync_id`` into one job.

Fivetran posts an event for each sync as it starts and as it ends; both carry
the sync's id, so each becomes a record of the job ``fivetran:<sync_id>`` and
the store's merge pairs them (the end fills in the finish and the duration).
Fivetran retries a delivery for 24 hours: the same event again is the same
record again, which the store counts once ("unchanged").

The body is signed: ``X-Fivetran-Signature-256`` is the hex HMAC-SHA256 of the
raw body with the webhook's secret, compared here in constant time and without
regard to hex case (Fivetran's own examples compare upper-cased).

Fivetran checks a new webhook with a test event that has no ``sync_id``; it
must be answered 2xx or the webhook is not created. So is the ``/test`` call's
``sync_end``, which has none either.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..model import CANCELLED, FAILED, RUNNING, SUCCEEDED, Job, ValidationError
from .payload import Path, pick, read_record

PLATFORM: Final = "fivetran"
SIGNATURE_HEADER: Final = "X-Fivetran-Signature-256"
#: The kinds of event counted (``calabi_exporter_source_notices_total{platform="fivetran",kind}``).
SYNC_START: Final = "sync_start"
SYNC_END: Final = "sync_end"
TEST: Final = "test"
OTHER: Final = "other"
KINDS: Final = (SYNC_START, SYNC_END, TEST, OTHER)
#: The event Fivetran posts when a webhook is created or activated.
TEST_EVENT: Final = "test_event"

#: ``data.status`` of a ``sync_end``: how the sync ended. RESCHEDULED (Fivetran paused the sync to
#: resume it later, e.g. at a rate limit) is not a failure; a status not listed here is read as
#: neither success nor failure, so that a new status cannot page anyone or hide a failure streak.
END_STATUSES: Final = {
    "SUCCESSFUL": SUCCEEDED,
    "FAILURE_WITH_TASK": FAILED,
    "FAILURE": FAILED,
    "FAILED": FAILED,
    "RESCHEDULED": CANCELLED,
}

#: Where the event holds each field of the job record.
PLACES: Final[Mapping[str, Path]] = {
    "connection_id": ("connector_id",),
    "source": ("connector_type",),
}
#: The payload's place of the fields worked out here, for error messages.
_WORKED_OUT: Final = {
    "job_id": "sync_id",
    "connection_name": "connector_name",
    "status": "data.status",
    "started_at": "created",
    "finished_at": "created",
    "error_summary": "data.reason",
}


@dataclass(frozen=True, slots=True)
class Event:
    """What one delivery is: its kind, and the job record it makes (None: counted, nothing stored)."""

    kind: str
    job: Job | None


def signature_valid(secret: str, body: bytes, signature: str | None) -> bool:
    """Whether ``signature`` is the hex HMAC-SHA256 of ``body`` with ``secret``, in either hex case.

    >>> body = b'{"event":"sync_start"}'
    >>> signature_valid("s3cret", body, hmac.new(b"s3cret", body, hashlib.sha256).hexdigest().upper())
    True
    >>> signature_valid("s3cret", body, None), signature_valid("s3cret", body, "0" * 64)
    (False, False)
    """
    if not signature:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(expected, signature.strip().lower().encode("utf-8", "replace"))


def read_event(payload: Any, *, latest: float) -> Event:
    """The event a verified body holds, or a ValidationError naming the event's field."""
    if not isinstance(payload, dict):
        raise ValidationError("body", "must be a JSON object")
    event = payload.get("event")
    if not isinstance(event, str):
        raise ValidationError("event", "must be a string")
    if event not in (SYNC_START, SYNC_END):
        return Event(TEST if event == TEST_EVENT else OTHER, None)
    sync_id = payload.get("sync_id")
    if sync_id is None:
        # The check a new webhook gets and the /test call's event name Fivetran's placeholder
        # connector "_connector_1"; an event of a real connector without a sync id cannot be paired.
        connector = payload.get("connector_id")
        return Event(TEST if isinstance(connector, str) and connector.startswith("_") else OTHER, None)
    if not isinstance(sync_id, str):
        raise ValidationError("sync_id", "must be a string")
    name = payload.get("connector_name")
    given: dict[str, Any] = {
        "job_id": f"{PLATFORM}:{sync_id}",
        # Events before connector_name was sent carry only the id: it stands for the name.
        "connection_name": name if name is not None else payload.get("connector_id"),
        "platform": PLATFORM,
        "job_type": "sync",
    }
    created = payload.get("created")
    if event == SYNC_START:
        given.update(status=RUNNING, started_at=created)
    else:
        given.update(_end(payload), finished_at=created)
    return Event(event, read_record(payload, PLACES, given, latest=latest, worked_out=_WORKED_OUT))


def _end(payload: Mapping[str, Any]) -> dict[str, Any]:
    status = pick(payload, ("data", "status"))
    if status is None:
        raise ValidationError("data.status", "is required on a sync_end")
    if not isinstance(status, str):
        raise ValidationError("data.status", "must be a string")
    reason = pick(payload, ("data", "reason"))
    known = END_STATUSES.get(status.upper())
    if known is None:
        return {"status": CANCELLED, "error_summary": f"Fivetran ended the sync as {status}" + _because(reason)}
    if known == SUCCEEDED:
        return {"status": known}
    if known == CANCELLED:
        return {"status": known, "error_summary": f"Fivetran {status.lower()} the sync" + _because(reason)}
    return {"status": known, "error_summary": reason if reason is not None else f"Fivetran: {status}"}


def _because(reason: Any) -> str:
    return f": {reason}" if isinstance(reason, str) and reason else ""
