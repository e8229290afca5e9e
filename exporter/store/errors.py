"""What the store raises: read and write failures, a full disk, an unknown job.

Each backend turns its driver's errors into these, so nothing above the store
knows which database it runs on.
"""

from __future__ import annotations

from ..model import ValidationError


class StoreError(RuntimeError):
    """The store cannot be read or written (disk full, locked, corrupt, unreachable)."""


class StoreFull(StoreError):
    """The store's disk is full: writes fail until space is freed; what is stored stays readable."""


class StoreUnavailable(StoreError):
    """The database did not answer for as long as start-up waits: an outage, not a configuration mistake."""


class JobNotFound(LookupError):
    """A request names a job the store does not hold (post the job record first)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


class NewConnectionRefused(ValidationError):
    """A record would make one more connection known than its ingest token may this hour.

    ``limits.new_connections_per_hour``: one request (or one leaked token) cannot take
    every place of the series budget with made-up names. ``retry_after``: seconds
    until the next clock hour, when the token may make connections known again.
    """

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            "connection_name",
            f"is a new connection, and this ingest token already made {limit} known this hour "
            f"(limits.new_connections_per_hour); retry in {retry_after} s",
        )
        self.retry_after = retry_after
