"""The storage interface and the plain data it hands back."""

from __future__ import annotations

import errno
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from ..aggregates import ConnectionAgg, StreamAgg
from ..joblogs import LogLine
from ..model import Job

#: SQLite's result code for "database or disk is full".
SQLITE_FULL: Final = 13


class StoreError(RuntimeError):
    """The store cannot be read or written (disk full, locked, corrupt)."""


class JobNotFound(LookupError):
    """A request names a job the store does not hold (post the job record first)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


class StoreFull(StoreError):
    """The store's disk is full: writes fail until space is freed; what is stored stays readable."""


def store_error(error: Exception, context: str = "") -> StoreError:
    """The StoreError for a database or file error: :class:`StoreFull` when the disk is full."""
    message = f"{context}: {error}" if context else str(error)
    full = getattr(error, "sqlite_errorcode", None) == SQLITE_FULL or getattr(error, "errno", None) == errno.ENOSPC
    return StoreFull(message) if full else StoreError(message)


@dataclass(slots=True)
class IngestResult:
    """What happened to each record of one request, in order."""

    outcomes: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return self.outcomes.count(outcome)


@dataclass(frozen=True, slots=True)
class LogIngestResult:
    accepted: int
    unchanged: int


@dataclass(frozen=True, slots=True)
class ActiveJobs:
    """Jobs of one connection that are pending or running now."""

    connection: str
    status: str
    count: int
    oldest_since: float


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One record waiting to be shipped: a stored log line, or a finished job's summary (``line`` is None)."""

    id: int
    job: Job
    line: LogLine | None
    received_at: float


@dataclass(frozen=True, slots=True)
class ShippingStats:
    """The shipper's counters, shared by every worker through the store."""

    waiting: int = 0
    exported: int = 0
    failed: int = 0
    dead_lettered: int = 0
    last_success: float | None = None


@dataclass(frozen=True, slots=True)
class EventRoute:
    """A webhook endpoint's filters: which status changes are queued for it (empty: all)."""

    endpoint: str
    statuses: frozenset[str] = frozenset()
    connections: frozenset[str] = frozenset()

    def wants(self, job: Job) -> bool:
        return (not self.statuses or job.status in self.statuses) and (
            not self.connections or job.connection_name in self.connections
        )


@dataclass(frozen=True, slots=True)
class ExportBatch:
    """Finished jobs sealed together into one pair of S3 objects (jobs and logs).

    ``version`` grows when a job of the batch changes or gains log lines after
    sealing, so an upload of an older version does not count as the export.
    """

    id: int
    day: str  # YYYY-MM-DD (UTC) the jobs finished on
    name: str  # object name, stable once sealed
    version: int
    jobs: list[Job] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ExportStats:
    exported_objects: int = 0
    failed_objects: int = 0
    last_success: float | None = None
    oldest_waiting: float | None = None  # finish time of the oldest finished job not exported yet


@dataclass(frozen=True, slots=True)
class Delivery:
    """One status-change event waiting for one webhook endpoint."""

    id: int
    endpoint: str
    job_id: str
    event_id: str
    payload: str  # the JSON body, fixed when the change was recorded
    created_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a listing wants; empty tuples and None mean "any"."""

    connections: tuple[str, ...] = ()  # connection names
    statuses: tuple[str, ...] = ()
    since: float | None = None  # job_time >= since
    until: float | None = None  # job_time < until
    job_type: str | None = None


@dataclass(frozen=True, slots=True)
class StoredLine:
    """A stored log line with its id (the cursor of a log page) and receipt time."""

    id: int
    line: LogLine
    received_at: float


@dataclass(slots=True)
class WindowStats:
    """One connection's jobs finished in a time window."""

    jobs: dict[str, int] = field(default_factory=dict)  # final status -> jobs
    duration_sum: float = 0.0
    duration_count: int = 0


@dataclass(frozen=True, slots=True)
class SeriesLimits:
    """The series budget: connections and streams per connection with series of their own.

    Jobs beyond it are stored and counted as usual, and their counters also add
    up under ``connection="__overflow__"`` / ``stream="__overflow__"``, so a sum
    over any counter stays exact while the number of series stays bounded.
    """

    max_connections: int = 10_000
    max_streams_per_connection: int = 100


OVERFLOW_KINDS: Final = ("connection", "stream")
LEVEL_FAMILY: Final = "level"  # log counts: lines by level
ERROR_FAMILY: Final = "error"  # log counts: errors by kind


@dataclass(slots=True)
class MetricsSnapshot:
    """All a scrape needs, read in one consistent transaction."""

    connections: list[ConnectionAgg]
    streams: list[StreamAgg]
    active: list[ActiveJobs]
    ingest_counts: dict[tuple[str, str], int]
    stored_jobs: int
    # (connection, family, key) -> count; family "level" (key: info/warn/error/debug) or "error" (key: kind)
    log_counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    rate_limits: dict[str, float] = field(default_factory=dict)  # connection -> latest usage ratio
    shipping: ShippingStats = field(default_factory=ShippingStats)
    rejections: dict[tuple[str, str], int] = field(default_factory=dict)  # (endpoint, field) -> records
    store_bytes: int | None = None  # on-disk size, when the store has one
    purged_jobs: int = 0
    oldest_finished_at: float | None = None
    export: ExportStats = field(default_factory=ExportStats)
    webhook_counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (endpoint, outcome) -> deliveries
    webhook_depth: dict[str, int] = field(default_factory=dict)  # endpoint -> events waiting
    # Counters of every connection beyond the series budget, added up (None: none so far).
    overflow: ConnectionAgg | None = None
    overflow_jobs: dict[str, int] = field(default_factory=dict)  # kind -> jobs counted into an overflow series


class Store(Protocol):
    """What the exporter needs from its storage."""

    def ingest_jobs(
        self, jobs: Sequence[Job], *, endpoint: str, rejected: int = 0, rejected_fields: Sequence[str] = ()
    ) -> IngestResult:
        """Upsert jobs in one transaction, updating every aggregate they touch.

        ``rejected`` records (already refused by validation) are counted in the
        same transaction, so the ingest counters match what was stored.
        """
        ...

    def count_rejected(self, endpoint: str, count: int, fields: Sequence[str] = ()) -> None:
        """Count records refused before they reached :meth:`ingest_jobs`."""
        ...

    def get_job(self, job_id: str) -> Job | None:
        """The stored job, with its streams."""
        ...

    def append_logs(self, job_id: str, lines: Sequence[LogLine]) -> LogIngestResult:
        """Append log lines to a known job, in order; timestamped lines sent again are kept once.

        Raises :class:`JobNotFound` for a job the store does not hold.
        """
        ...

    def log_lines(self, job_id: str) -> list[LogLine]:
        """A job's log lines in the order they were received."""
        ...

    def list_jobs(
        self, where: JobFilter, limit: int, after: tuple[float, str] | None = None
    ) -> list[tuple[float, Job]]:
        """Jobs newest first by ``job_time`` (queued, else started, else finished; fixed when first seen).

        Returns (job_time, job) pairs without streams; ``after`` is the (job_time, job_id) of the
        last job of the previous page. Served from indexes, never a scan of the job history.
        """
        ...

    def log_page(
        self, job_id: str, *, levels: Sequence[str] = (), search: str = "", after_id: int = 0, limit: int = 100
    ) -> list[StoredLine]:
        """A job's log lines in order after ``after_id``; ``search`` is a case-insensitive substring of the line."""
        ...

    def connection_names(self) -> list[tuple[str, str | None]]:
        """Every known connection's name and id, by name."""
        ...

    def connection_aggregates(self) -> list[ConnectionAgg]:
        """Every known connection's aggregates (latest job, last success and failure, counters)."""
        ...

    def window_stats(self, finished_since: float) -> dict[str, WindowStats]:
        """Per connection, the jobs finished since then, by status, with their duration total."""
        ...

    def metrics_snapshot(self, only: Collection[str] | None = None) -> MetricsSnapshot:
        """The aggregates a scrape renders; never scans job history.

        ``only``: the connections (with series of their own) to read, besides everything
        not per connection; None reads them all.
        """
        ...

    def connection_versions(self) -> dict[str, int]:
        """Each connection with series of its own, and the version of what its series show."""
        ...

    def forget_connection(self, name: str) -> int | None:
        """Drop a connection's aggregates (its series); returns its jobs still stored, None if unknown."""
        ...

    def purge(self, finished_before: float, limit: int = 1000, *, exported_only: bool = False) -> int:
        """Delete up to ``limit`` jobs finished before ``finished_before``; returns how many.

        ``exported_only``: only jobs whose S3 export is complete.
        """
        ...

    def purge_dead_letters(self, before: float) -> int:
        """Delete log and webhook dead letters recorded before ``before``; returns how many."""
        ...

    def export_seal(self, finished_before: float, window_seconds: float, *, finished_since: float = 0.0) -> int:
        """Seal finished jobs not in a batch yet into batches of one ``window_seconds`` each; returns the jobs."""
        ...

    def export_waiting(self, limit: int = 100) -> list[ExportBatch]:
        """Batches not exported (or changed since), oldest first, without their jobs."""
        ...

    def export_batches_between(self, since: float, until: float) -> list[ExportBatch]:
        """Batches holding a job finished in ``[since, until)``, without their jobs."""
        ...

    def export_jobs(self, batch: ExportBatch) -> ExportBatch:
        """The batch with its jobs (and their streams), in finish order."""
        ...

    def export_lines(self, batch_id: int) -> Iterator[tuple[str, LogLine, float]]:
        """The batch's log lines as (job id, line, received at), job by job in finish order."""
        ...

    def export_done(self, batch: ExportBatch, objects: int) -> bool:
        """Record the batch exported; False when it changed meanwhile (it stays waiting)."""
        ...

    def export_failed(self, objects: int) -> None:
        """Count objects whose upload failed."""
        ...

    def webhook_due(self, endpoint: str, now: float, limit: int = 100) -> list[Delivery]:
        """The endpoint's events whose next attempt is due and that are the oldest waiting for their job."""
        ...

    def webhook_orphans(self, endpoints: Sequence[str]) -> int:
        """Dead-letter the events of endpoints not among ``endpoints`` (removed from the configuration)."""
        ...

    def webhook_delivered(self, delivery: Delivery) -> None: ...

    def webhook_retry(self, delivery: Delivery, next_attempt_at: float, error: str) -> None:
        """Count a failed attempt; the delivery, and every other one of its endpoint, waits until then."""
        ...

    def webhook_dead(self, delivery: Delivery, reason: str) -> None: ...

    def webhook_dead_letters(self, limit: int = 1000) -> list[tuple[Delivery, str]]:
        """The newest dead-lettered deliveries, oldest first, with the reason."""
        ...

    def outbox_read(self, limit: int) -> list[OutboxEntry]:
        """The oldest records waiting to be shipped, in order, at most ``limit``."""
        ...

    def outbox_done(self, last_id: int, *, exported: int, dead: Sequence[tuple[OutboxEntry, str]] = ()) -> None:
        """Move the cursor past ``last_id``: ``exported`` records went out, ``dead`` go to the dead letters."""
        ...

    def outbox_failed(self, records: int) -> None:
        """Count ``records`` whose export attempt failed (they stay waiting)."""
        ...

    def dead_letters(self, limit: int = 1000) -> list[tuple[int, str, str]]:
        """The newest dead-lettered records, oldest first: (outbox id, job id, reason)."""
        ...

    def check_ready(self) -> None:
        """Raise :class:`StoreError` unless the store can be read and written."""
        ...

    def close(self) -> None: ...
