"""Per-connection and per-stream aggregates, updated as jobs change.

A scrape reads these and never scans job history, so every counter and "latest
job" gauge is maintained here, at ingestion time, in the same transaction as the
job row. The functions are pure over small mutable records; the store loads and
saves the records.

Counting rules:

* A job is counted once, when it first becomes finished. Fields it did not carry
  then and learns later (the product's webhook comes before the full record) are
  added when they arrive; a finished job's known values never change, so the
  counters equal the sum over the finished jobs.
* "Latest job", "last success" and "consecutive failures" follow the jobs' finish
  times, not arrival order: a late record of an older job is counted but does
  not become the latest.
* A cancelled job neither adds to nor resets the consecutive failures: it was
  stopped by a person and says nothing about whether the pipeline works.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final

from .model import FAILED, FINISHED_STATUSES, SUCCEEDED, Job

#: Duration buckets for 1 s to 12 h: syncs range from a one-table incremental
#: run of seconds to a full historical reset of many hours. The edges follow the
#: units people think in (1, 5, 15, 30 min; 1, 2, 6, 12 h) so that alert and
#: dashboard thresholds fall on an edge.
DURATION_BUCKETS: Final = (
    1.0,
    5.0,
    15.0,
    30.0,
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    21600.0,
    43200.0,
)


@dataclass(slots=True)
class Histogram:
    """Non-cumulative bucket counts; the last slot is the +Inf bucket."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """Buckets as the Prometheus exposition wants them: cumulative, with ``+Inf``."""
        running = 0
        out: list[tuple[str, float]] = []
        for edge, count in zip((*(_edge(b) for b in DURATION_BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            out.append((edge, float(running)))
        return out


def admitted_afresh(agg: ConnectionAgg) -> ConnectionAgg:
    """A connection that waited beyond the series budget, given a place: its counters start from zero.

    What it counted while it waited stays in the overflow's counters, which never
    go down (Prometheus would read a drop as a reset), so a sum over the series
    stays exact. Its gauges (latest job, failures in a row, last success, first
    seen) carry on: its alerts see its state at once.
    """
    return replace(
        agg,
        admitted=True,
        jobs=dict.fromkeys(FINISHED_STATUSES, 0),
        records_synced=0,
        records_failed=0,
        bytes_synced=0,
        streams_succeeded=0,
        streams_failed=0,
        durations={},
    )


def _edge(bucket: float) -> str:
    return str(int(bucket)) if bucket == int(bucket) else str(bucket)


@dataclass(slots=True)
class ConnectionAgg:
    """Everything the metrics say about one connection."""

    connection: str
    first_seen: float
    connection_id: str | None = None
    source: str | None = None
    destination: str | None = None
    platform: str | None = None  # None: the product's own (calabi)
    records_synced: int = 0
    records_failed: int = 0
    bytes_synced: int = 0
    streams_succeeded: int = 0
    streams_failed: int = 0
    consecutive_failures: int = 0
    last_success_at: float | None = None
    last_failure_at: float | None = None
    last_job_id: str | None = None
    last_job_finished_at: float | None = None
    last_job_status: str | None = None
    last_job_records_synced: int | None = None
    last_job_records_failed: int | None = None
    last_job_bytes_synced: int | None = None
    last_job_duration_seconds: float | None = None
    last_job_streams_succeeded: int | None = None
    last_job_streams_failed: int | None = None
    last_job_error_summary: str | None = None
    last_job_url: str | None = None
    # What the connection usually does, learned from its newest successful jobs, resets left out
    # (:mod:`.detection`): the interval between successes and the records of one, each a median and
    # a spread; and the records of the newest success, judged against the earlier ones.
    interval_seconds: float | None = None
    interval_spread_seconds: float | None = None
    records_expected: float | None = None
    records_spread: float | None = None
    last_success_records: int | None = None
    # Within the series budget (limits.max_connections) when first seen: its own series. Otherwise
    # its jobs also count into the overflow aggregate, exposed as connection="__overflow__".
    admitted: bool = True
    # Changes whenever anything a scrape shows of the connection does (its aggregates, streams, log
    # counts): a scrape re-renders the connection's lines only then.
    version: int = 0
    # The two maps come last: a stored row gives every other field in this order (store/rows.py).
    jobs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISHED_STATUSES, 0))
    durations: dict[str, Histogram] = field(default_factory=dict)


@dataclass(slots=True)
class StreamAgg:
    """Everything the metrics say about one stream of one connection."""

    connection: str
    stream: str
    records_synced: int = 0
    last_status: str | None = None
    last_finished_at: float | None = None


#: A counter total stops here (the largest integer the store holds): 1,024 jobs at the largest
#: count a record may carry (2^53 - 1) already reach it, and no float tells the difference.
MAX_TOTAL: Final = 2**63 - 1


def _grown(total: int, old: int | None, new: int | None) -> int:
    """``total`` after a finished job's value goes from ``old`` to ``new``, saturating at :data:`MAX_TOTAL`."""
    return min(total + _gain(old, new), MAX_TOTAL)


def _gain(old: int | None, new: int | None) -> int:
    """What a counter gains when a finished job's value goes from ``old`` to ``new``."""
    if new is None:
        return 0
    return new - (old or 0) if old is None or new > old else 0


def _known(job: Job | None, name: str) -> int | None:
    value: int | None = None if job is None else getattr(job, name)
    return value


def update_connection_metadata(agg: ConnectionAgg, job: Job) -> None:
    """Keep the connection's id, source, destination and platform from the records that name them.

    ``first_seen`` moves back to the earliest time of any of its jobs: history posted
    today of a connection that never succeeded is stale from its first job, not from
    the day it was posted.
    """
    times = [t for t in (job.created_at, job.started_at, job.finished_at) if t is not None]
    if times:
        agg.first_seen = min(agg.first_seen, *times)
    if job.connection_id is not None:
        agg.connection_id = job.connection_id
    if job.source is not None:
        agg.source = job.source
    if job.destination is not None:
        agg.destination = job.destination
    if job.platform is not None:
        agg.platform = job.platform


def apply_finished(
    agg: ConnectionAgg,
    old: Job | None,
    new: Job,
    *,
    failures_after: Callable[[float], int],
) -> bool:
    """Count a job that is finished now; ``old`` is how it stood before (if stored).

    ``failures_after(t)`` counts the connection's failed jobs that finished
    after ``t``; it is needed only when a late success lands between failures.
    Returns whether the duration was observed in the histogram now.
    """
    assert new.finished and new.finished_at is not None
    newly_finished = old is None or not old.finished
    before = None if newly_finished else old

    agg.records_synced = _grown(agg.records_synced, _known(before, "records_synced"), new.records_synced)
    agg.records_failed = _grown(agg.records_failed, _known(before, "records_failed"), new.records_failed)
    agg.bytes_synced = _grown(agg.bytes_synced, _known(before, "bytes_synced"), new.bytes_synced)
    agg.streams_succeeded = _grown(agg.streams_succeeded, _known(before, "streams_succeeded"), new.streams_succeeded)
    agg.streams_failed = _grown(agg.streams_failed, _known(before, "streams_failed"), new.streams_failed)

    if newly_finished:
        agg.jobs[new.status] += 1
        finished_at = new.finished_at
        if new.status == FAILED:
            if agg.last_success_at is None or finished_at > agg.last_success_at:
                agg.consecutive_failures += 1
            if agg.last_failure_at is None or finished_at > agg.last_failure_at:
                agg.last_failure_at = finished_at
        elif new.status == SUCCEEDED and (agg.last_success_at is None or finished_at > agg.last_success_at):
            agg.last_success_at = finished_at
            if agg.last_failure_at is None or finished_at >= agg.last_failure_at:
                agg.consecutive_failures = 0  # no failure after it: no need to count
            else:
                agg.consecutive_failures = failures_after(finished_at)

    if _is_latest(agg, new):
        agg.last_job_id = new.job_id
        agg.last_job_finished_at = new.finished_at
        agg.last_job_status = new.status
        agg.last_job_records_synced = new.records_synced
        agg.last_job_records_failed = new.records_failed
        agg.last_job_bytes_synced = new.bytes_synced
        agg.last_job_duration_seconds = new.duration_seconds
        agg.last_job_streams_succeeded = new.streams_succeeded
        agg.last_job_streams_failed = new.streams_failed
        agg.last_job_error_summary = new.error_summary
        agg.last_job_url = new.job_url

    observe_now = new.duration_seconds is not None and (before is None or before.duration_seconds is None)
    if observe_now:
        assert new.duration_seconds is not None
        agg.durations.setdefault(new.status, Histogram()).observe(new.duration_seconds)
    return observe_now


def _is_latest(agg: ConnectionAgg, job: Job) -> bool:
    """Whether ``job`` is (or is still) the connection's latest finished job.

    Ties on the finish time go to the greater job id, so that the outcome does not
    depend on arrival order.
    """
    assert job.finished_at is not None
    if agg.last_job_id is None or agg.last_job_finished_at is None or agg.last_job_id == job.job_id:
        return True
    return (job.finished_at, job.job_id) > (agg.last_job_finished_at, agg.last_job_id)


def apply_finished_streams(streams: dict[str, StreamAgg], old: Job | None, new: Job) -> None:
    """Count the streams of a job that is finished now into their aggregates."""
    assert new.finished_at is not None
    known = {} if old is None or not old.finished else {s.name: s for s in old.streams}
    for stream in new.streams:
        agg = streams[stream.name]
        before = known.get(stream.name)
        agg.records_synced = _grown(
            agg.records_synced, None if before is None else before.records_synced, stream.records_synced
        )
        if stream.status in FINISHED_STATUSES and (
            agg.last_finished_at is None or new.finished_at >= agg.last_finished_at
        ):
            agg.last_status = stream.status
            agg.last_finished_at = new.finished_at
