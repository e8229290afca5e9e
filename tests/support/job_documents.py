"""A job's summary as it leaves the exporter (S3 export lines, status webhooks): every field, None where unset.

The tests assert whole documents; these say once which fields a document has, so
each test names only the values its job set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

#: The fields of a job's summary: which job, when, how much, what went wrong.
SUMMARY_FIELDS: Final = (
    *("job_id", "connection_name", "connection_id", "source", "destination", "platform", "job_type", "attempt"),
    "status",
    *("created_at", "started_at", "finished_at", "duration_seconds"),
    *("records_synced", "records_failed", "bytes_synced", "streams_succeeded", "streams_failed"),
    *("error_summary", "job_url"),
)
#: The fields of one stream in an exported summary.
STREAM_FIELDS: Final = (
    *("name", "status", "error"),
    *("records_synced", "records_failed", "bytes_synced", "duration_seconds"),
)


def job_summary(record: Mapping[str, object], **derived: object) -> dict[str, object]:
    """The summary of a posted ``record``: its fields, what the exporter ``derived`` over them (the product's
    own platform when it names none), the rest None."""
    return {**dict.fromkeys(SUMMARY_FIELDS), "platform": "calabi", **record, **derived}


def stream_summary(**fields: object) -> dict[str, object]:
    """A stream of an exported summary with ``fields``, the rest None."""
    return {**dict.fromkeys(STREAM_FIELDS), **fields}
