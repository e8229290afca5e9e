"""The aggregates one write request touches: read once, changed in memory, written back once.

A batch of 10,000 jobs touches a few hundred connections and streams; reading
each aggregate per job would cost a query per job. The cache reads what a
batch needs in a few queries, the ingest rules (:mod:`.ingest`) change the
records in memory, and :meth:`AggregateCache.flush` writes each one once, in
the same transaction as the job rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ..aggregates import ConnectionAgg, StreamAgg
from ..model import ACTIVE_STATUSES, FAILED, OVERFLOW, PENDING, Job
from .database import MAX_PARAMS, Tx, chunks, marks
from .records import ERROR_FAMILY, OVERFLOW_KINDS, SeriesLimits
from .rows import (
    CONNECTION_SELECT,
    CONNECTION_UPSERT,
    JOB_COLUMNS,
    OVERFLOW_SELECT,
    OVERFLOW_UPSERT,
    STREAM_AGG_SELECT,
    STREAM_AGG_UPSERT,
    STREAM_UPSERT,
    add_meta,
    connection_from_row,
    connection_row,
    job_values,
    read_meta,
    set_meta,
    stream_agg_from_row,
    stream_agg_row,
    stream_rows,
)

_JOB_INSERT: Final = (
    f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}, active_since, first_seen, updated_at, job_time)"
    f" VALUES ({marks(len(JOB_COLUMNS) + 4)})"
)
_JOB_UPDATE: Final = (
    f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in JOB_COLUMNS[1:])}, active_since = ?, updated_at = ?"
    " WHERE job_id = ?"
)
_LOG_COUNT_ADD: Final = (
    "INSERT INTO log_counts (connection, family, key, count) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (connection, family, key) DO UPDATE SET count = log_counts.count + excluded.count"
)
_INGEST_COUNT_ADD: Final = (
    "INSERT INTO ingest_counts (endpoint, outcome, count) VALUES (?, ?, ?)"
    " ON CONFLICT (endpoint, outcome) DO UPDATE SET count = ingest_counts.count + excluded.count"
)


def active_since(job: Job, now: float) -> float | None:
    """When a pending job was queued, or a running job started."""
    if job.status == PENDING:
        return job.created_at if job.created_at is not None else now
    if job.status in ACTIVE_STATUSES:
        return job.started_at if job.started_at is not None else now
    return None


def add_log_counts(tx: Tx, connection: str, counts: dict[tuple[str, str], int]) -> None:
    tx.executemany(_LOG_COUNT_ADD, [(connection, family, key, n) for (family, key), n in counts.items()])


def count_ingest(tx: Tx, endpoint: str, counts: dict[str, int]) -> None:
    tx.executemany(_INGEST_COUNT_ADD, [(endpoint, outcome, n) for outcome, n in counts.items() if n])


class AggregateCache:
    """The aggregates of one write transaction, and the job rows it saves."""

    def __init__(self, tx: Tx, now: float, limits: SeriesLimits) -> None:
        self.tx = tx
        self.now = now
        self.limits = limits
        self.connections: dict[str, ConnectionAgg] = {}
        self.streams: dict[tuple[str, str], StreamAgg] = {}
        self.streams_looked_up: set[tuple[str, str]] = set()  # pairs read from the store, found or not
        self.own_streams: dict[str, int] = {}  # connection -> streams with a series of their own
        self.known_missing: set[str] = set()  # connections a prefetch found absent
        self.errors: dict[str, dict[tuple[str, str], int]] = {}
        self.new_jobs = 0
        self.admitted: int | None = None  # connections with series of their own, once read
        self.overflow: ConnectionAgg | None = None  # the overflow aggregate, once read or made
        self.overflow_jobs: dict[str, int] = dict.fromkeys(OVERFLOW_KINDS, 0)

    def prefetch(self, jobs: Sequence[Job]) -> None:
        """Read the aggregates a batch touches with a few queries instead of a few per job."""
        names = list(dict.fromkeys(job.connection_name for job in jobs if job.connection_name not in self.connections))
        for chunk in chunks(names):
            for row in self.tx.execute(CONNECTION_SELECT + f" WHERE connection IN ({marks(len(chunk))})", chunk):
                agg = connection_from_row(row)
                self.connections[agg.connection] = agg
            self.known_missing.update(name for name in chunk if name not in self.connections)
        pairs = list(dict.fromkeys((job.connection_name, s.name) for job in jobs if job.finished for s in job.streams))
        for pairs_chunk in chunks([p for p in pairs if p not in self.streams_looked_up], MAX_PARAMS // 2):
            self.streams_looked_up.update(pairs_chunk)
            for row in self.tx.execute(
                STREAM_AGG_SELECT
                + f" WHERE (connection, stream) IN (VALUES {', '.join(['(?, ?)'] * len(pairs_chunk))})",
                [value for pair in pairs_chunk for value in pair],
            ):
                self.streams[(row[0], row[1])] = stream_agg_from_row(row)

    def save_job(self, job: Job, *, is_new: bool) -> None:
        values = [*job_values(job), active_since(job, self.now)]
        if is_new:
            self.new_jobs += 1
            # job_time, the job's place in listings, is set once: queued, else started, else finished.
            job_time = next((t for t in (job.created_at, job.started_at, job.finished_at) if t is not None), self.now)
            self.tx.execute(_JOB_INSERT, (*values, self.now, self.now, job_time))
        else:
            self.tx.execute(_JOB_UPDATE, (*values[1:], self.now, job.job_id))
        if job.streams:
            self.tx.executemany(STREAM_UPSERT, stream_rows(job))

    def connection(self, name: str) -> ConnectionAgg:
        """The connection's aggregate; a new connection gets series of its own while the budget lasts."""
        agg = self.connections.get(name)
        if agg is None:
            row = None
            if name not in self.known_missing:
                row = self.tx.execute(CONNECTION_SELECT + " WHERE connection = ?", (name,)).fetchone()
            if row is None:
                if self.admitted is None:
                    self.admitted = read_meta(self.tx, "admitted_connections")
                admitted = self.admitted < self.limits.max_connections
                self.admitted += admitted
                agg = ConnectionAgg(connection=name, first_seen=self.now, admitted=admitted)
            else:
                agg = connection_from_row(row)
            self.connections[name] = agg
        return agg

    def overflow_agg(self) -> ConnectionAgg:
        """The added-up counters of the connections beyond the budget."""
        if self.overflow is None:
            row = self.tx.execute(OVERFLOW_SELECT).fetchone()
            self.overflow = ConnectionAgg(OVERFLOW, self.now) if row is None else connection_from_row(row)
        return self.overflow

    def stream_aggs(self, connection: str, names: Sequence[str]) -> tuple[dict[str, StreamAgg], bool]:
        """Each stream's aggregate, and whether any of them is folded into ``stream="__overflow__"``.

        A stream gets a series of its own while its connection has fewer than
        ``max_streams_per_connection``; a later one counts into the connection's overflow stream.
        """
        missing = [name for name in names if (connection, name) not in self.streams_looked_up]
        for chunk in chunks(missing):
            self.streams_looked_up.update((connection, name) for name in chunk)
            for row in self.tx.execute(
                STREAM_AGG_SELECT + f" WHERE connection = ? AND stream IN ({marks(len(chunk))})", (connection, *chunk)
            ):
                self.streams[(connection, row[1])] = stream_agg_from_row(row)
        out: dict[str, StreamAgg] = {}
        folded = False
        for name in names:
            agg = self.streams.get((connection, name))
            if agg is None:
                if self._own_streams(connection) < self.limits.max_streams_per_connection:
                    self.own_streams[connection] += 1
                    agg = self.streams[(connection, name)] = StreamAgg(connection, name)
                else:
                    agg, folded = self.stream_overflow(connection), True
            out[name] = agg
        return out, folded

    def stream_overflow(self, connection: str) -> StreamAgg:
        """The stream aggregate the streams beyond the budget count into."""
        pair = (connection, OVERFLOW)
        if pair not in self.streams:
            row = self.tx.execute(STREAM_AGG_SELECT + " WHERE connection = ? AND stream = ?", pair).fetchone()
            self.streams[pair] = StreamAgg(connection, OVERFLOW) if row is None else stream_agg_from_row(row)
        return self.streams[pair]

    def _own_streams(self, connection: str) -> int:
        if connection not in self.own_streams:
            self.own_streams[connection] = int(
                self.tx.execute(
                    "SELECT count(*) FROM stream_aggs WHERE connection = ? AND stream != ?", (connection, OVERFLOW)
                ).fetchone()[0]
            )
        return self.own_streams[connection]

    def count_error(self, connection: str, kind: str) -> None:
        counts = self.errors.setdefault(connection, {})
        counts[(ERROR_FAMILY, kind)] = counts.get((ERROR_FAMILY, kind), 0) + 1

    def failures_after(self, connection: str, moment: float) -> int:
        row = self.tx.execute(
            # status as a literal, so that the partial index of failed jobs applies
            f"SELECT count(*) FROM jobs WHERE connection_name = ? AND status = '{FAILED}' AND finished_at > ?",
            (connection, moment),
        ).fetchone()
        return int(row[0])

    def flush(self, endpoint: str, counts: dict[str, int]) -> None:
        """Write every aggregate changed, and count the request's outcomes under ``endpoint``."""
        if self.connections:
            version = int(
                self.tx.execute(
                    "UPDATE meta SET value = value + 1 WHERE key = 'connections_version' RETURNING value"
                ).fetchone()[0]
            )
            for agg in self.connections.values():
                agg.version = version
            self.tx.executemany(CONNECTION_UPSERT, [connection_row(agg) for agg in self.connections.values()])
        if self.admitted is not None:
            set_meta(self.tx, "admitted_connections", self.admitted)
        if self.overflow is not None:
            self.tx.execute(OVERFLOW_UPSERT, connection_row(self.overflow))
        for kind, jobs in self.overflow_jobs.items():
            if jobs:
                add_meta(self.tx, f"overflow_jobs_{kind}", jobs)
        if self.streams:
            self.tx.executemany(STREAM_AGG_UPSERT, [stream_agg_row(a) for a in self.streams.values()])
        for connection, errors in self.errors.items():
            add_log_counts(self.tx, connection, errors)
        if self.new_jobs:
            add_meta(self.tx, "stored_jobs", self.new_jobs)
        count_ingest(self.tx, endpoint, counts)
