"""What each user of the store needs from it, one narrow protocol each.

The HTTP ingest routes write (:class:`Ingest`); the read API and the MCP tools
read jobs (:class:`JobReads`); a scrape reads aggregates (:class:`MetricsReads`);
each background worker works one queue (:class:`Outbox`, :class:`ExportQueue`,
:class:`WebhookQueue`, :class:`Retention`). Every backend serves all of them
through the same shared code (see :mod:`.sqlstore`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import Protocol, TypeAlias, Unpack

from ..aggregates import ConnectionAgg
from ..ingest_plan import RequestOptions
from ..joblogs import LogLine
from ..model import Job
from .records import (
    Delivery,
    ExportBatch,
    IngestResult,
    JobFilter,
    LogIngestResult,
    MetricsSnapshot,
    OutboxEntry,
    ReplicaView,
    StoredLine,
    WindowStats,
)


class Ingest(Protocol):
    """Writes job records and their log lines, with every aggregate they change, atomically."""

    def jobs(self, jobs: Sequence[Job], **request: Unpack[RequestOptions]) -> IngestResult:
        """Upsert jobs in one transaction, updating every aggregate they touch.

        ``rejected`` records (already refused by validation) are counted in the
        same transaction, so the ingest counters match what was stored.
        ``token``: who sent them; the connections they make known count against
        it (``SeriesLimits.new_connections_per_hour``).
        """
        ...

    def rejected(self, endpoint: str, count: int, fields: Sequence[str] = ()) -> None:
        """Count records refused before they reached :meth:`jobs`."""
        ...

    def logs(self, job_id: str, lines: Sequence[LogLine]) -> LogIngestResult:
        """Append log lines to a known job, in order; timestamped lines sent again are kept once.

        Raises :class:`~.errors.JobNotFound` for a job the store does not hold.
        """
        ...


class JobReads(Protocol):
    """Jobs, their log lines and the connections, for the read API and the MCP tools."""

    def job(self, job_id: str) -> Job | None:
        """The stored job, with its streams."""
        ...

    def log_lines(self, job_id: str) -> list[LogLine]:
        """A job's log lines in the order they were received."""
        ...

    def jobs(self, where: JobFilter, limit: int, after: tuple[float, str] | None = None) -> list[tuple[float, Job]]:
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
        """Every known connection's name and id."""
        ...

    def connection_aggregates(self) -> list[ConnectionAgg]:
        """Every known connection's aggregates (latest job, last success and failure, counters)."""
        ...

    def window_stats(self, finished_since: float) -> dict[str, WindowStats]:
        """Per connection, the jobs finished since then, by status, with their duration total."""
        ...


class MetricsReads(Protocol):
    """The aggregates a scrape renders."""

    def snapshot(self, only: Collection[str] | None = None) -> MetricsSnapshot:
        """The aggregates a scrape renders, in one consistent read; never scans job history.

        ``only``: the connections (with series of their own) to read, besides everything
        not per connection; None reads them all.
        """
        ...

    def versions(self) -> dict[str, int]:
        """Each connection with series of its own, and the version of what its series show."""
        ...

    def replica_view(self) -> ReplicaView:
        """Whether this replica exposes the store's metrics, and which background roles it holds."""
        ...


#: A record the shipper gives up on, and why (the dead letter's reason).
DeadLetter: TypeAlias = tuple[OutboxEntry, str]


class Outbox(Protocol):
    """Log lines and finished jobs' summaries waiting for the log shipper, in order."""

    def read(self, limit: int, *, after: int = 0, skip_jobs: Sequence[str] = ()) -> list[OutboxEntry]:
        """The oldest waiting records, in order, at most ``limit``; past ``after``, none of ``skip_jobs``."""
        ...

    def done(self, last_id: int, *, exported: int, dead: Sequence[DeadLetter] = (), also: Sequence[int] = ()) -> None:
        """Move past ``last_id`` and ``also``: ``exported`` records went out, ``dead`` go to the dead letters."""
        ...

    def redrive(self, connection: str | None = None) -> int:
        """Queue the dead letters (of ``connection``, or all) again; returns how many."""
        ...

    def failed(self, records: int) -> None:
        """Count ``records`` whose export attempt failed (they stay waiting)."""
        ...

    def dead_letters(self, limit: int = 1000) -> list[tuple[int, str, str]]:
        """The newest dead-lettered records, oldest first: (outbox id, job id, reason)."""
        ...


class ExportQueue(Protocol):
    """Finished jobs sealed into batches for S3, and which batches are uploaded."""

    def seal(self, finished_before: float, window_seconds: float, *, finished_since: float = 0.0) -> int:
        """Seal finished jobs not in a batch yet into batches of one ``window_seconds`` each; returns the jobs."""
        ...

    def waiting(self, limit: int = 100) -> list[ExportBatch]:
        """Batches not exported (or changed since), oldest first, without their jobs."""
        ...

    def batches_between(self, since: float, until: float) -> list[ExportBatch]:
        """Batches holding a job finished in ``[since, until)``, without their jobs."""
        ...

    def jobs(self, batch: ExportBatch) -> ExportBatch:
        """The batch with its jobs (and their streams), in finish order."""
        ...

    def lines(self, batch_id: int) -> Iterator[tuple[str, LogLine, float]]:
        """The batch's log lines as (job id, line, received at), job by job in finish order."""
        ...

    def done(self, batch: ExportBatch, objects: int) -> bool:
        """Record the batch exported; False when it changed meanwhile (it stays waiting)."""
        ...

    def failed(self, objects: int) -> None:
        """Count objects whose upload failed."""
        ...


class WebhookQueue(Protocol):
    """Status-change events waiting for each webhook endpoint."""

    def due(self, endpoint: str, now: float, limit: int = 100) -> list[Delivery]:
        """The endpoint's events whose next attempt is due and that are the oldest waiting for their job."""
        ...

    def orphans(self, endpoints: Sequence[str]) -> int:
        """Dead-letter the events of endpoints not among ``endpoints`` (removed from the configuration)."""
        ...

    def delivered(self, delivery: Delivery) -> None: ...

    def retry(self, delivery: Delivery, next_attempt_at: float, error: str) -> None:
        """Count a failed attempt; the delivery, and every other one of its endpoint, waits until then."""
        ...

    def dead(self, delivery: Delivery, reason: str) -> None: ...

    def dead_letters(self, limit: int = 1000) -> list[tuple[Delivery, str]]:
        """The newest dead-lettered deliveries, oldest first, with the reason."""
        ...


class Retention(Protocol):
    """What leaves the store: old jobs, old dead letters, forgotten connections."""

    def purge(self, finished_before: float, limit: int = 1000, *, exported_only: bool = False) -> int:
        """Delete up to ``limit`` jobs finished before ``finished_before``; returns how many.

        ``exported_only``: only jobs whose S3 export is complete.
        """
        ...

    def purge_dead_letters(self, before: float) -> int:
        """Delete log and webhook dead letters recorded before ``before``; returns how many."""
        ...

    def forget_connection(self, name: str) -> int | None:
        """Drop a connection's aggregates (its series); returns its jobs still stored, None if unknown."""
        ...

    def purge_unfinished(self, changed_before: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` pending or running jobs no record changed since ``changed_before``; how many."""
        ...

    def readmit(self) -> int:
        """Give free places of the series budget to connections waiting beyond it; returns how many."""
        ...

    def purge_bookkeeping(self, before: float) -> None:
        """Delete forget times older than ``before`` and past hours' new-connection counts."""
        ...
