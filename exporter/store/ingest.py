"""The ingest rules: how a record changes the store, the same on every backend.

A record is merged into the stored job (:func:`~calabi_exporter.lifecycle.merge`),
the connection and stream aggregates take the change
(:mod:`calabi_exporter.aggregates`), and the change is queued for whoever
follows it: the log shipper's outbox, the webhook endpoints whose filters it
passes, an S3 batch to upload again. All of it happens in the transaction that
stores the job, so a crash never leaves a counter or a queue that disagrees
with the jobs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from functools import partial
from typing import Final

from ..aggregates import apply_finished, apply_finished_streams, update_connection_metadata
from ..documents import status_event, status_event_id
from ..joblogs import LogLine
from ..lifecycle import ACCEPTED, OUTCOMES, REJECTED, merge
from ..logsignals import classify_error, rate_limit_ratio, stream_result
from ..model import FAILED, MAX_STREAMS, OVERFLOW, SUCCEEDED, Job, StreamResult, ValidationError, check_stream_count
from ..timeutil import Clock
from .aggregate_cache import AggregateCache, add_log_counts, count_ingest
from .database import Database, Tx
from .errors import JobNotFound
from .records import ERROR_FAMILY, LEVEL_FAMILY, EventRoute, IngestResult, LogIngestResult, SeriesLimits
from .rows import read_job

_OUTBOX_INSERT: Final = "INSERT INTO outbox (job_id, line_id, queued_at) VALUES (?, ?, ?)"
_LINE_INSERT: Final = (
    "INSERT INTO log_lines (job_id, timestamp, received_at, level, message, stream, dedup_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id"
)
_REJECTION_ADD: Final = (
    "INSERT INTO rejections (endpoint, field, count) VALUES (?, ?, ?)"
    " ON CONFLICT (endpoint, field) DO UPDATE SET count = rejections.count + excluded.count"
)
_POSITION: Final = re.compile(r"\[\d+\]")
_LINE: Final = re.compile(r"^line \d+\.?")


@dataclass(frozen=True, slots=True)
class _JobsRequest:
    """One request's job records, and the records validation refused before them."""

    jobs: Sequence[Job]
    endpoint: str
    rejected: int
    rejected_fields: Sequence[str]
    token: str = ""  # who sent them (see AggregateCache.token)


class IngestRules:
    """Writes records and log lines through a :class:`~.database.Database` (protocol :class:`~.protocols.Ingest`)."""

    def __init__(
        self,
        database: Database,
        *,
        clock: Clock,
        limits: SeriesLimits,
        outbox: bool,
        webhook_routes: Sequence[EventRoute],
    ) -> None:
        self._db = database
        self._clock = clock
        self._limits = limits
        self._outbox = outbox
        self._routes = tuple(webhook_routes)

    def jobs(
        self,
        jobs: Sequence[Job],
        *,
        endpoint: str,
        rejected: int = 0,
        rejected_fields: Sequence[str] = (),
        token: str = "",
    ) -> IngestResult:
        request = _JobsRequest(jobs, endpoint, rejected, rejected_fields, token)
        return self._db.submit(lambda tx: self._ingest(tx, [request])[0], merge=self._ingest, item=request)

    def _ingest(self, tx: Tx, requests: list[_JobsRequest]) -> list[IngestResult]:
        """Store the requests' jobs in order, as one batch: one read-ahead, one write of the aggregates."""
        cache = AggregateCache(tx, self._clock(), self._limits)
        cache.prefetch([job for request in requests for job in request.jobs])
        results = []
        counts: dict[str, dict[str, int]] = {}
        for request in requests:
            cache.token = request.token
            result = IngestResult()
            for index, job in enumerate(request.jobs):
                try:
                    result.outcomes.append(self._apply(cache, job))
                except ValidationError as error:  # raised before the record wrote anything
                    result.outcomes.append(REJECTED)
                    result.errors[index] = error
            results.append(result)
            endpoint = counts.setdefault(request.endpoint, dict.fromkeys(OUTCOMES, 0))
            for outcome in OUTCOMES:
                endpoint[outcome] += result.count(outcome)
            endpoint["rejected"] += request.rejected
        cache.flush(counts)
        for request, result in zip(requests, results, strict=True):
            refused = [error.field for error in result.errors.values()]
            _count_rejections(tx, request.endpoint, [*request.rejected_fields, *refused])
        return results

    def rejected(self, endpoint: str, count: int, fields: Sequence[str] = ()) -> None:
        def work(tx: Tx) -> None:
            count_ingest(tx, [(endpoint, "rejected", count)])
            _count_rejections(tx, endpoint, fields)

        self._db.submit(work)

    def logs(self, job_id: str, lines: Sequence[LogLine]) -> LogIngestResult:
        now = self._clock()
        seen: dict[tuple[float | None, str, str | None, str], int] = {}
        rows = []
        for line in lines:
            identity = (line.timestamp, line.level, line.stream, line.message)
            seen[identity] = seen.get(identity, -1) + 1
            key = _dedup_key(job_id, line, seen[identity])
            rows.append((job_id, line.timestamp, now, line.level, line.message, line.stream, key))

        def work(tx: Tx) -> LogIngestResult:
            cache = AggregateCache(tx, now, self._limits)
            job = read_job(tx, job_id)
            if job is None:
                raise JobNotFound(job_id)
            connection = job.connection_name
            counts: dict[tuple[str, str], int] = {}
            rate_limit: tuple[float, float] | None = None
            accepted = 0
            for line, row in zip(lines, rows, strict=True):
                stored = tx.execute(_LINE_INSERT, row).fetchone()
                if stored is None:
                    continue  # a line stored before: counted (and queued) then
                accepted += 1
                if self._outbox:
                    tx.execute(_OUTBOX_INSERT, (job_id, stored[0], now))
                level = line.level.lower()
                counts[(LEVEL_FAMILY, level)] = counts.get((LEVEL_FAMILY, level), 0) + 1
                if level == "error":
                    kind = classify_error(line.message)
                    counts[(ERROR_FAMILY, kind)] = counts.get((ERROR_FAMILY, kind), 0) + 1
                ratio = rate_limit_ratio(line.message) if level != "debug" else None
                if ratio is not None:
                    seen_at = line.timestamp if line.timestamp is not None else now
                    if rate_limit is None or seen_at >= rate_limit[1]:
                        rate_limit = (ratio, seen_at)
            counted = not cache.from_before_forget(job)  # lines of a job from before a forget: stored, not counted
            admitted = counted and cache.connection(connection).admitted
            if counted:
                add_log_counts(tx, connection if admitted else OVERFLOW, counts)
            if rate_limit is not None and admitted:
                tx.execute(
                    "INSERT INTO rate_limits (connection, ratio, seen_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (connection) DO UPDATE SET ratio = excluded.ratio, seen_at = excluded.seen_at"
                    " WHERE excluded.seen_at >= rate_limits.seen_at",
                    (connection, *rate_limit),
                )
            if accepted and job.finished:
                export_changed(tx, job_id)  # an exported batch holding the job is uploaded again
                if not job.streams:
                    # Lines that arrive after a job finished without streams may still report them.
                    with suppress(ValidationError):  # the lines' stream results would break a bound: left out
                        self._apply(cache, Job(job_id=job_id, connection_name=connection, status=job.status))
            cache.flush({"logs": {"accepted": accepted, "unchanged": len(rows) - accepted}})
            return LogIngestResult(accepted=accepted, unchanged=len(rows) - accepted)

        return self._db.submit(work)

    def _apply(self, cache: AggregateCache, job: Job) -> str:
        """Merge one record into the store and its aggregates; returns the outcome.

        Raises ValidationError, having written nothing, when the merged job
        would break a bound a record alone cannot (streams, totals).
        """
        tx = cache.tx
        existing = cache.load_job(job.job_id)
        if job.finished and not job.streams and (existing is None or not existing.streams):
            job = _with_streams_from_lines(tx, job)
        outcome, merged = merge(existing, job, cache.now)
        if outcome != ACCEPTED:
            return outcome
        if existing is None or len(merged.streams) > len(existing.streams):
            check_stream_count(merged)
        name = merged.connection_name
        # A job from before its connection was forgotten is stored, not counted (NewConnectionRefused: nothing written).
        agg = None if cache.from_before_forget(merged) else cache.connection(name)
        cache.save_job(merged, is_new=existing is None)
        if existing is None or existing.status != merged.status:
            self._queue_events(tx, merged, None if existing is None else existing.status, cache.now)
        elif existing.finished:
            export_changed(tx, merged.job_id)
        newly_finished = merged.finished and (existing is None or not existing.finished)
        if self._outbox and newly_finished:
            tx.execute(_OUTBOX_INSERT, (merged.job_id, None, cache.now))
        if agg is None:
            return outcome
        if job.connection_name == name:
            update_connection_metadata(agg, job)
        if existing is None and not agg.admitted:
            cache.overflow_jobs["connection"] += 1
        if merged.finished:
            apply_finished(agg, existing, merged, failures_after=partial(cache.failures_after, name))
            if not agg.admitted:  # the same change to the added-up counters; its gauges are not shown
                apply_finished(cache.overflow_agg(), existing, merged, failures_after=lambda _moment: 0)
            series = name if agg.admitted else OVERFLOW
            if _new_failure_summary(existing, merged):
                cache.count_error(series, classify_error(merged.error_summary or ""))
            if merged.streams:
                if agg.admitted:
                    streams, folded = cache.stream_aggs(name, [s.name for s in merged.streams])
                    if folded and newly_finished:
                        cache.overflow_jobs["stream"] += 1
                else:
                    overflow = cache.stream_overflow(OVERFLOW)
                    streams = {s.name: overflow for s in merged.streams}
                apply_finished_streams(streams, existing, merged)
        return outcome

    def _queue_events(self, tx: Tx, job: Job, previous: str | None, now: float) -> None:
        """Queue the status change for every webhook endpoint whose filters it passes."""
        routes = [route for route in self._routes if route.wants(job)]
        if not routes:
            return
        event_id = status_event_id(job.job_id, job.status)
        payload = json.dumps(status_event(job, previous, event_id, now), ensure_ascii=False)
        # An endpoint in backoff gets its new events at its next retry, not one request each right away.
        due = self._db.dialect.greatest(
            "?", "coalesce((SELECT blocked_until FROM webhook_endpoints WHERE endpoint = ?), 0)"
        )
        tx.executemany(
            "INSERT INTO webhook_queue (endpoint, job_id, event_id, payload, created_at, next_attempt_at)"
            f" VALUES (?, ?, ?, ?, ?, {due})",
            [(route.endpoint, job.job_id, event_id, payload, now, now, route.endpoint) for route in routes],
        )


def export_changed(tx: Tx, job_id: str) -> None:
    """A sealed job changed: its batch is exported again, to the same keys.

    Not once the purge has taken some of the batch's jobs: the upload would
    replace the objects with fewer jobs than they hold.
    """
    tx.execute(
        "UPDATE export_batches SET version = version + 1, exported_at = NULL"
        " WHERE id = (SELECT export_batch FROM jobs WHERE job_id = ?) AND NOT frozen",
        (job_id,),
    )


def _with_streams_from_lines(tx: Tx, job: Job) -> Job:
    """A finished job without streams, given the stream results its log lines report.

    ``Stream X: N records synced in Ts`` makes X succeeded with N rows; an
    ERROR line about stream X makes it failed; the later line wins.
    """
    results: dict[str, StreamResult] = {}
    for level, message, stream in tx.execute(
        "SELECT level, message, stream FROM log_lines WHERE job_id = ? ORDER BY id", (job.job_id,)
    ):
        line = stream_result(message)
        if line is not None:
            results[line.stream] = StreamResult(
                line.stream, SUCCEEDED, records_synced=line.records_synced, duration_seconds=line.duration_seconds
            )
        elif level.upper() == "ERROR" and stream:
            results[stream] = StreamResult(stream, FAILED, error=message)
    if not results:
        return job
    try:
        return replace(job, streams=tuple(results.values())[:MAX_STREAMS]).with_derived_fields()
    except ValidationError:  # the lines' counts add up past the bound: the record stands without them
        return job


def _new_failure_summary(old: Job | None, new: Job) -> bool:
    """Whether ``new`` makes a failed job's error summary known for the first time."""
    if new.status != FAILED or not new.error_summary:
        return False
    return old is None or old.status != FAILED or not old.error_summary


def _count_rejections(tx: Tx, endpoint: str, fields: Sequence[str]) -> None:
    """Rejected records by the field their error names, positions removed (``streams[3].name``: ``streams[].name``)."""
    counts: dict[str, int] = {}
    for field in fields:
        key = _POSITION.sub("[]", _LINE.sub("", field)) or "record"
        counts[key] = counts.get(key, 0) + 1
    tx.executemany(_REJECTION_ADD, [(endpoint, field, n) for field, n in counts.items()])


def _dedup_key(job_id: str, line: LogLine, occurrence: int) -> str | None:
    """Identity of a timestamped line, so a re-sent batch is stored once.

    Lines without a timestamp cannot be told apart from a real repeat, so they
    are always appended.
    """
    if line.timestamp is None:
        return None
    text = "\x1f".join((job_id, repr(line.timestamp), line.level, line.stream or "", line.message, str(occurrence)))
    return hashlib.sha256(text.encode()).hexdigest()
