"""Ingestion in the store: read the state a batch needs, plan it (:mod:`calabi_exporter.ingest_plan`), apply the plan.

The rules live in the planner, the same for every backend; here is only what
the database does: read the state ahead, store log lines (a line's identity is
the store's), and write everything the plan changes in the one transaction
that stores the jobs, so a crash never leaves a counter or a queue that
disagrees with the jobs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final, Unpack

from ..ingest_plan import JobsRequest, JobWrite, Plan, RequestOptions, plan_jobs, plan_logs, rejection_counts
from ..joblogs import LogLine
from ..model import Job
from ..timeutil import Clock
from .database import Database, Tx
from .errors import JobNotFound
from .ingest_state import StoredState
from .records import ERROR_FAMILY, LEVEL_FAMILY, EventRoute, IngestResult, LogIngestResult, SeriesLimits
from .rows import (
    CONNECTION_UPSERT,
    JOB_UPSERT,
    OVERFLOW_UPSERT,
    STREAM_AGG_UPSERT,
    STREAM_UPSERT,
    WINDOW_UPSERT,
    change_meta,
    connection_row,
    job_values,
    overflow_row,
    stream_agg_row,
    stream_rows,
    window_text,
)

_OUTBOX_INSERT: Final = "INSERT INTO outbox (job_id, line_id, queued_at) VALUES (?, ?, ?)"
_LINE_INSERT: Final = (
    "INSERT INTO log_lines (job_id, timestamp, received_at, level, message, stream, dedup_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id"
)
_REJECTION_ADD: Final = (
    "INSERT INTO rejections (endpoint, field, count) VALUES (?, ?, ?)"
    " ON CONFLICT (endpoint, field) DO UPDATE SET count = rejections.count + excluded.count"
)
_LOG_COUNT_ADD: Final = (
    "INSERT INTO log_counts (connection, family, key, count) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (connection, family, key) DO UPDATE SET count = log_counts.count + excluded.count"
)
_INGEST_COUNT_ADD: Final = (
    "INSERT INTO ingest_counts (endpoint, outcome, count) VALUES {values}"
    " ON CONFLICT (endpoint, outcome) DO UPDATE SET count = ingest_counts.count + excluded.count"
)
_NEW_CONNECTIONS_ADD: Final = (
    "INSERT INTO new_connections (token, hour, count) VALUES (?, ?, ?)"
    " ON CONFLICT (token, hour) DO UPDATE SET count = new_connections.count + excluded.count"
)
_NOTICE_ADD: Final = (
    "INSERT INTO source_notices (source, kind, count) VALUES (?, ?, ?)"
    " ON CONFLICT (source, kind) DO UPDATE SET count = source_notices.count + excluded.count"
)
_RATE_LIMIT_SET: Final = (
    "INSERT INTO rate_limits (connection, ratio, seen_at) VALUES (?, ?, ?)"
    " ON CONFLICT (connection) DO UPDATE SET ratio = excluded.ratio, seen_at = excluded.seen_at"
    " WHERE excluded.seen_at >= rate_limits.seen_at"
)


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

    def jobs(self, jobs: Sequence[Job], **request: Unpack[RequestOptions]) -> IngestResult:
        item = JobsRequest(jobs, **request)
        return self._db.submit(lambda tx: self._ingest(tx, [item])[0], merge=self._ingest, item=item)

    def _ingest(self, tx: Tx, requests: list[JobsRequest]) -> list[IngestResult]:
        """Store the requests' jobs in order, as one batch: one read-ahead, one plan, one write of the aggregates."""
        state = StoredState(tx)
        state.prefetch([job for request in requests for job in request.jobs])
        plan = plan_jobs(
            state, requests, now=self._clock(), limits=self._limits, outbox=self._outbox, routes=self._routes
        )
        self._apply(tx, plan)
        return [IngestResult(list(request.outcomes), dict(request.errors)) for request in plan.requests]

    def rejected(self, endpoint: str, count: int, fields: Sequence[str] = ()) -> None:
        def work(tx: Tx) -> None:
            _count_ingest(tx, [(endpoint, "rejected", count)])
            tx.executemany(_REJECTION_ADD, [(endpoint, field, n) for field, n in rejection_counts(fields).items()])

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
            state = StoredState(tx)
            if state.job(job_id) is None:
                raise JobNotFound(job_id)
            stored = []
            for line, row in zip(lines, rows, strict=True):
                inserted = tx.execute(_LINE_INSERT, row).fetchone()
                if inserted is not None:  # else a line stored before: counted (and queued) then
                    stored.append((int(inserted[0]), line))
            unchanged = len(rows) - len(stored)
            plan = plan_logs(
                state,
                job_id,
                stored,
                unchanged=unchanged,
                now=now,
                limits=self._limits,
                outbox=self._outbox,
                routes=self._routes,
            )
            self._apply(tx, plan)
            return LogIngestResult(accepted=len(stored), unchanged=unchanged)

        return self._db.submit(work)

    def _apply(self, tx: Tx, plan: Plan) -> None:
        """Write everything the plan changes; the caller's transaction makes it all or nothing."""
        _write_jobs(tx, plan.jobs, plan.now)
        if plan.events:
            # An endpoint in backoff gets its new events at its next retry, not one request each right away.
            due = self._db.dialect.greatest(
                "?", "coalesce((SELECT blocked_until FROM webhook_endpoints WHERE endpoint = ?), 0)"
            )
            tx.executemany(
                "INSERT INTO webhook_queue (endpoint, job_id, event_id, payload, created_at, next_attempt_at)"
                f" VALUES (?, ?, ?, ?, ?, {due})",
                [(e.endpoint, e.job_id, e.event_id, e.payload, plan.now, plan.now, e.endpoint) for e in plan.events],
            )
        for job_id in plan.exports:
            export_changed(tx, job_id)
        tx.executemany(_OUTBOX_INSERT, [(job_id, line_id, plan.now) for job_id, line_id in plan.outbox])
        change_meta(
            tx,
            add={
                "connections_version": 1 if plan.connections else 0,
                "stored_jobs": plan.new_jobs,
                "overflow_jobs_connection": plan.overflow_connection_jobs,
                "overflow_jobs_stream": plan.overflow_stream_jobs,
            },
            set_to={} if plan.admitted_connections is None else {"admitted_connections": plan.admitted_connections},
        )
        if plan.connections:  # stamped with the version just made (see CONNECTION_UPSERT)
            CONNECTION_UPSERT.write(tx, [connection_row(agg) for agg in plan.connections])
        if plan.overflow is not None:
            OVERFLOW_UPSERT.write(tx, [overflow_row(plan.overflow)])
        if plan.streams:
            STREAM_AGG_UPSERT.write(tx, [stream_agg_row(agg) for agg in plan.streams])
        if plan.windows:
            WINDOW_UPSERT.write(tx, [(name, window_text(window)) for name, window in plan.windows.items()])
        tx.executemany(
            _LOG_COUNT_ADD,
            [
                (series, family, key, n)
                for family, counts in ((LEVEL_FAMILY, plan.levels), (ERROR_FAMILY, plan.errors))
                for series, by_key in counts.items()
                for key, n in by_key.items()
            ],
        )
        if plan.rate_limit is not None:
            limit = plan.rate_limit
            tx.execute(_RATE_LIMIT_SET, (limit.connection, limit.ratio, limit.seen_at))
        tx.executemany(_NEW_CONNECTIONS_ADD, [(token, hour, n) for (token, hour), n in plan.connections_made.items()])
        _count_ingest(
            tx,
            [
                (endpoint, outcome, n)
                for endpoint, counts in plan.ingest_counts.items()
                for outcome, n in counts.items()
            ],
        )
        tx.executemany(
            _REJECTION_ADD,
            [(endpoint, field, n) for endpoint, fields in plan.rejections.items() for field, n in fields.items()],
        )
        tx.executemany(_NOTICE_ADD, [(source, kind, n) for (source, kind), n in plan.notices.items()])


def _write_jobs(tx: Tx, writes: Sequence[JobWrite], now: float) -> None:
    """The job and stream rows, a statement per run of distinct jobs (one statement may not write a row twice)."""
    job_rows: list[tuple[object, ...]] = []
    streams: list[tuple[object, ...]] = []
    ids: set[str] = set()
    for write in writes:
        if write.job.job_id in ids:
            JOB_UPSERT.write(tx, job_rows)
            STREAM_UPSERT.write(tx, streams)
            job_rows, streams, ids = [], [], set()
        ids.add(write.job.job_id)
        # first_seen and job_time are set once: the upsert leaves both alone on a stored job.
        job_rows.append((*job_values(write.job), write.active_since, now, now, write.job_time))
        streams += stream_rows(write.job)
    JOB_UPSERT.write(tx, job_rows)
    STREAM_UPSERT.write(tx, streams)


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


def _count_ingest(tx: Tx, counts: Sequence[tuple[str, str, int]]) -> None:
    """Add (endpoint, outcome, records) to the ingest counters, in one statement."""
    rows = [row for row in counts if row[2]]
    if rows:
        tx.execute(_INGEST_COUNT_ADD.format(values=", ".join(["(?, ?, ?)"] * len(rows))), [v for r in rows for v in r])


def _dedup_key(job_id: str, line: LogLine, occurrence: int) -> str | None:
    """Identity of a timestamped line, so a re-sent batch is stored once.

    Lines without a timestamp cannot be told apart from a real repeat, so they
    are always appended.
    """
    if line.timestamp is None:
        return None
    text = "\x1f".join((job_id, repr(line.timestamp), line.level, line.stream or "", line.message, str(occurrence)))
    return hashlib.sha256(text.encode()).hexdigest()
