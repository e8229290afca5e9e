"""How a new record for a job combines with what is already stored.

The rules, in order of precedence:

* A job never moves backwards: pending → running → succeeded | failed | cancelled.
  A late ``running`` (or ``pending``) for a job already further along is ignored.
* A finished job is final. A record with another finished status is ignored;
  one with the same status may only fill in what was not known yet (the product's
  webhook says "failed" first, the full record with its Summary comes later).
* A job still pending or running takes the newest values it is sent.
* The same record sent again changes nothing ("unchanged").
* A job keeps the connection it was first seen with, so that its counts never
  move between connections.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Final, Literal

from .model import PENDING, RUNNING, STATUS_RANK, Job, StreamResult

ACCEPTED: Final = "accepted"
UNCHANGED: Final = "unchanged"
IGNORED: Final = "ignored"
REJECTED: Final = "rejected"
OUTCOMES: Final = (ACCEPTED, UNCHANGED, IGNORED, REJECTED)

Outcome = Literal["accepted", "unchanged", "ignored"]

_SCALARS: Final = tuple(f.name for f in fields(Job) if f.name not in ("job_id", "connection_name", "status", "streams"))


def _fill_times(job: Job, now: float) -> Job:
    """Stamp the times a status implies but the record did not carry."""
    changes: dict[str, Any] = {}
    if job.status == PENDING and job.created_at is None:
        changes["created_at"] = now
    if job.status == RUNNING and job.started_at is None:
        changes["started_at"] = now
    if job.finished and job.finished_at is None:
        changes["finished_at"] = now
    return replace(job, **changes).with_derived_fields() if changes else job


def _merge_stream(old: StreamResult, new: StreamResult, *, overwrite: bool) -> StreamResult:
    changes = {}
    for f in fields(StreamResult):
        old_value, new_value = getattr(old, f.name), getattr(new, f.name)
        if new_value is not None and (old_value is None or overwrite):
            changes[f.name] = new_value
    return replace(old, **changes) if changes else old


def _merge_streams(
    old: tuple[StreamResult, ...], new: tuple[StreamResult, ...], *, overwrite: bool
) -> tuple[StreamResult, ...]:
    if not new:
        return old
    by_name = {s.name: s for s in old}
    for stream in new:
        known = by_name.get(stream.name)
        by_name[stream.name] = stream if known is None else _merge_stream(known, stream, overwrite=overwrite)
    return tuple(by_name.values())


def merge(existing: Job | None, incoming: Job, now: float) -> tuple[Outcome, Job]:
    """Combine ``incoming`` with the stored ``existing`` job.

    Returns the outcome and the job as it should now be stored (``existing``
    itself when nothing changes).
    """
    if existing is None:
        return ACCEPTED, _fill_times(incoming, now)

    if existing.finished:
        if incoming.status != existing.status:
            return IGNORED, existing
        overwrite = False
    elif STATUS_RANK[incoming.status] < STATUS_RANK[existing.status]:
        return IGNORED, existing
    else:
        overwrite = True

    changes: dict[str, object] = {"status": incoming.status}
    for name in _SCALARS:
        new_value = getattr(incoming, name)
        if new_value is not None and (overwrite or getattr(existing, name) is None):
            changes[name] = new_value
    changes["streams"] = _merge_streams(existing.streams, incoming.streams, overwrite=overwrite)
    merged = replace(existing, **changes)  # type: ignore[arg-type]
    if overwrite and incoming.streams:
        # Totals derived from the old stream list must be derived again.
        merged = replace(
            merged,
            **{
                name: getattr(incoming, name)
                for name in ("records_synced", "records_failed", "bytes_synced", "streams_succeeded", "streams_failed")
            },
        )
    merged = _fill_times(merged.with_derived_fields(), now)
    if merged == existing:
        return UNCHANGED, existing
    return ACCEPTED, merged
