"""What the store raises: read and write failures, a full disk, an unknown job.

Each backend turns its driver's errors into these, so nothing above the store
knows which database it runs on.
"""

from __future__ import annotations

from ..ingest_plan import NewConnectionRefused

__all__ = ["JobNotFound", "NewConnectionRefused", "StoreError", "StoreFull", "StoreUnavailable"]


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
