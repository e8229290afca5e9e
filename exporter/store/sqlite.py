"""The embedded default store: one SQLite file in WAL mode.

Every write request is one ``BEGIN IMMEDIATE`` transaction holding the job rows
and every aggregate they change, so a crash never leaves a counter that
disagrees with the jobs, and several worker processes can share one file (the
write lock serialises them; readers never wait in WAL mode).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import fields, replace
from functools import partial
from operator import attrgetter
from pathlib import Path
from typing import Final, TypeVar

from ..aggregates import (
    DURATION_BUCKETS,
    ConnectionAgg,
    Histogram,
    StreamAgg,
    apply_finished,
    apply_finished_streams,
    update_connection_metadata,
)
from ..documents import export_object_name, status_event, status_event_id
from ..joblogs import LogLine
from ..lifecycle import ACCEPTED, OUTCOMES, merge
from ..logsignals import classify_error, rate_limit_ratio, stream_result
from ..model import ACTIVE_STATUSES, FAILED, FINISHED_STATUSES, OVERFLOW, PENDING, SUCCEEDED, Job, StreamResult
from ..timeutil import Clock, system_clock
from .base import (
    ERROR_FAMILY,
    LEVEL_FAMILY,
    OVERFLOW_KINDS,
    ActiveJobs,
    Delivery,
    EventRoute,
    ExportBatch,
    ExportStats,
    IngestResult,
    JobFilter,
    JobNotFound,
    LogIngestResult,
    MetricsSnapshot,
    OutboxEntry,
    SeriesLimits,
    ShippingStats,
    StoredLine,
    StoreError,
    WindowStats,
    store_error,
)
from .groupcommit import GroupCommitter

#: Finished jobs not sealed into an S3 export batch yet; created once export is turned on, so that
#: stores without export do not pay for it on every insert.
_EXPORT_INDEX: Final = (
    "CREATE INDEX IF NOT EXISTS jobs_to_export ON jobs (finished_at)"
    " WHERE finished_at IS NOT NULL AND export_batch IS NULL"
)
SCHEMA_VERSION: Final = 4


def _migrate_from_1(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE jobs ADD COLUMN export_batch INTEGER")


def _migrate_from_2(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE jobs ADD COLUMN job_time REAL")
    db.execute("UPDATE jobs SET job_time = coalesce(created_at, started_at, finished_at, first_seen)")
    db.execute("DROP INDEX IF EXISTS jobs_to_export")  # made again at open when export is on
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'export_batches'").fetchone():
        db.execute("ALTER TABLE export_batches ADD COLUMN newest_finished REAL")
        db.execute("ALTER TABLE export_batches ADD COLUMN frozen INTEGER NOT NULL DEFAULT 0")
        db.execute(
            "UPDATE export_batches SET newest_finished = coalesce("
            "(SELECT max(finished_at) FROM jobs WHERE export_batch = export_batches.id), oldest_finished)"
        )


def _migrate_from_3(db: sqlite3.Connection) -> None:
    # Every connection known before the series budget keeps its series, however many there are.
    db.execute("ALTER TABLE connections ADD COLUMN admitted INTEGER NOT NULL DEFAULT 1")
    db.execute("ALTER TABLE connections ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
    db.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('admitted_connections', (SELECT count(*) FROM connections))"
    )


#: What brings a store of version N to N + 1 (a new store gets the whole schema at once).
_MIGRATIONS: Final[dict[int, Callable[[sqlite3.Connection], None]]] = {
    1: _migrate_from_1,
    2: _migrate_from_2,
    3: _migrate_from_3,
}
DB_FILENAME: Final = "calabi-exporter.sqlite3"
LOCK_FILENAME: Final = "calabi-exporter.lock"
_MAX_PARAMS: Final = 500  # bound parameters per statement, well below SQLite's limit
_SEAL_LIMIT: Final = 50_000  # jobs sealed into export batches per call

T = TypeVar("T")

_JOB_COLUMNS: Final = tuple(f.name for f in fields(Job) if f.name != "streams")
_STREAM_COLUMNS: Final = tuple(f.name for f in fields(StreamResult))
_CONNECTION_SCALARS: Final = tuple(f.name for f in fields(ConnectionAgg) if f.name not in ("jobs", "durations"))
_CONNECTION_COLUMNS: Final = (
    _CONNECTION_SCALARS
    + tuple(f"jobs_{s}" for s in FINISHED_STATUSES)
    + tuple(column for s in FINISHED_STATUSES for column in (f"duration_counts_{s}", f"duration_sum_{s}"))
)
_CONNECTION_SELECT: Final = f"SELECT {', '.join(_CONNECTION_COLUMNS)} FROM connections"
_CONNECTION_UPSERT: Final = (
    f"INSERT OR REPLACE INTO connections ({', '.join(_CONNECTION_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(_CONNECTION_COLUMNS))})"
)
_STREAM_SELECT: Final = "SELECT connection, stream, records_synced, last_status, last_finished_at FROM stream_aggs"
_OVERFLOW_SELECT: Final = f"SELECT {', '.join(_CONNECTION_COLUMNS)} FROM connection_overflow"
_OVERFLOW_UPSERT: Final = _CONNECTION_UPSERT.replace("INTO connections", "INTO connection_overflow")

_job_values: Final = attrgetter(*_JOB_COLUMNS)
_stream_values: Final = attrgetter(*_STREAM_COLUMNS)
_connection_values: Final = attrgetter(*_CONNECTION_SCALARS)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


_CONNECTION_DDL: Final = f"""
    connection TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    connection_id TEXT, source TEXT, destination TEXT,
    records_synced INTEGER NOT NULL, records_failed INTEGER NOT NULL, bytes_synced INTEGER NOT NULL,
    streams_succeeded INTEGER NOT NULL, streams_failed INTEGER NOT NULL,
    consecutive_failures INTEGER NOT NULL,
    last_success_at REAL, last_failure_at REAL,
    last_job_id TEXT, last_job_finished_at REAL, last_job_status TEXT,
    last_job_records_synced INTEGER, last_job_records_failed INTEGER, last_job_bytes_synced INTEGER,
    last_job_duration_seconds REAL, last_job_streams_succeeded INTEGER, last_job_streams_failed INTEGER,
    last_job_error_summary TEXT, last_job_url TEXT,
    admitted INTEGER NOT NULL DEFAULT 1,
    version INTEGER NOT NULL DEFAULT 0,
    {", ".join(f"jobs_{s} INTEGER NOT NULL" for s in FINISHED_STATUSES)},
    {", ".join(f"duration_counts_{s} TEXT, duration_sum_{s} REAL" for s in FINISHED_STATUSES)}

"""

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    connection_name TEXT NOT NULL,
    status TEXT NOT NULL,
    connection_id TEXT, source TEXT, destination TEXT, job_type TEXT, attempt INTEGER,
    created_at REAL, started_at REAL, finished_at REAL,
    records_synced INTEGER, records_failed INTEGER, bytes_synced INTEGER, duration_seconds REAL,
    streams_succeeded INTEGER, streams_failed INTEGER,
    error_summary TEXT, job_url TEXT,
    active_since REAL,
    first_seen REAL NOT NULL,
    updated_at REAL NOT NULL,
    export_batch INTEGER,
    job_time REAL
);
CREATE INDEX IF NOT EXISTS jobs_failed_by_connection
    ON jobs (connection_name, finished_at) WHERE status = 'failed';
CREATE INDEX IF NOT EXISTS jobs_by_finish ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_active
    ON jobs (status, connection_name, active_since) WHERE status IN ('pending', 'running');
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (job_time, job_id);
CREATE INDEX IF NOT EXISTS jobs_by_status_time ON jobs (status, job_time, job_id);
CREATE INDEX IF NOT EXISTS jobs_by_connection_time ON jobs (connection_name, job_time, job_id);
CREATE INDEX IF NOT EXISTS jobs_by_export_batch ON jobs (export_batch) WHERE export_batch IS NOT NULL;

CREATE TABLE IF NOT EXISTS streams (
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    status TEXT, records_synced INTEGER, records_failed INTEGER, bytes_synced INTEGER,
    duration_seconds REAL, error TEXT,
    PRIMARY KEY (job_id, name)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS log_lines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    timestamp REAL,
    received_at REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    stream TEXT,
    dedup_key TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS log_lines_by_job ON log_lines (job_id, id);

CREATE TABLE IF NOT EXISTS connections ({_CONNECTION_DDL});

-- The counters of every connection beyond the series budget, added up: one row, connection "__overflow__".
CREATE TABLE IF NOT EXISTS connection_overflow ({_CONNECTION_DDL});

CREATE TABLE IF NOT EXISTS stream_aggs (
    connection TEXT NOT NULL,
    stream TEXT NOT NULL,
    records_synced INTEGER NOT NULL,
    last_status TEXT,
    last_finished_at REAL,
    PRIMARY KEY (connection, stream)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS ingest_counts (
    endpoint TEXT NOT NULL,
    outcome TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (endpoint, outcome)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS log_counts (
    connection TEXT NOT NULL,
    family TEXT NOT NULL,
    key TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (connection, family, key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS rejections (
    endpoint TEXT NOT NULL,
    field TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (endpoint, field)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS rate_limits (
    connection TEXT PRIMARY KEY,
    ratio REAL NOT NULL,
    seen_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('stored_jobs', 0);

CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    line_id INTEGER,
    queued_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    outbox_id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    line_id INTEGER,
    reason TEXT NOT NULL,
    dead_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_time ON dead_letters (dead_at);

CREATE TABLE IF NOT EXISTS export_batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    day TEXT NOT NULL,
    name TEXT NOT NULL,
    oldest_finished REAL NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    exported_at REAL,
    newest_finished REAL,
    frozen INTEGER NOT NULL DEFAULT 0  -- the purge took some of its jobs: never uploaded again
);
CREATE INDEX IF NOT EXISTS export_batches_waiting ON export_batches (id) WHERE exported_at IS NULL;

CREATE TABLE IF NOT EXISTS webhook_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    job_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS webhook_queue_by_job ON webhook_queue (endpoint, job_id, id);
CREATE TABLE IF NOT EXISTS webhook_dead_letters (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    job_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    dead_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_dead_letters_by_time ON webhook_dead_letters (dead_at);
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    endpoint TEXT PRIMARY KEY,
    blocked_until REAL NOT NULL  -- in backoff: new events wait until then
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webhook_counts (
    endpoint TEXT NOT NULL,
    outcome TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (endpoint, outcome)
) WITHOUT ROWID;

INSERT OR IGNORE INTO meta (key, value) VALUES ('outbox_cursor', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('s3_exported_objects', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('s3_failed_objects', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('purged_jobs', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('log_exported', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('log_failed', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('log_dead_lettered', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('admitted_connections', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('overflow_jobs_connection', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('overflow_jobs_stream', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('connections_version', 0);
"""


def _job_from_row(row: sqlite3.Row, streams: Sequence[sqlite3.Row]) -> Job:
    return Job(
        **{name: row[name] for name in _JOB_COLUMNS},
        streams=tuple(StreamResult(**{name: s[name] for name in _STREAM_COLUMNS}) for s in streams),
    )


def _active_since(job: Job, now: float) -> float | None:
    """When a pending job was queued, or a running job started."""
    if job.status == PENDING:
        return job.created_at if job.created_at is not None else now
    if job.status in ACTIVE_STATUSES:
        return job.started_at if job.started_at is not None else now
    return None


class _Transaction:
    """Loads the aggregates a request touches once, and writes them back once."""

    def __init__(self, db: sqlite3.Connection, now: float, limits: SeriesLimits) -> None:
        self.db = db
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
        for chunk in _chunks(names, _MAX_PARAMS):
            for row in self.db.execute(
                _CONNECTION_SELECT + f" WHERE connection IN ({', '.join('?' * len(chunk))})", chunk
            ):
                agg = _connection_from_row(row)
                self.connections[agg.connection] = agg
            self.known_missing.update(name for name in chunk if name not in self.connections)
        pairs = list(dict.fromkeys((job.connection_name, s.name) for job in jobs if job.finished for s in job.streams))
        for pairs_chunk in _chunks([p for p in pairs if p not in self.streams_looked_up], _MAX_PARAMS // 2):
            self.streams_looked_up.update(pairs_chunk)
            for row in self.db.execute(
                "SELECT connection, stream, records_synced, last_status, last_finished_at FROM stream_aggs"
                f" WHERE (connection, stream) IN (VALUES {', '.join(['(?, ?)'] * len(pairs_chunk))})",
                [value for pair in pairs_chunk for value in pair],
            ):
                self.streams[(row[0], row[1])] = StreamAgg(*row)

    def load_job(self, job_id: str) -> Job | None:
        row = self.db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        streams = self.db.execute("SELECT * FROM streams WHERE job_id = ? ORDER BY position", (job_id,)).fetchall()
        return _job_from_row(row, streams)

    def save_job(self, job: Job, *, is_new: bool) -> None:
        values = [*_job_values(job), _active_since(job, self.now)]
        if is_new:
            self.new_jobs += 1
            # job_time, the job's place in listings, is set once: queued, else started, else finished.
            job_time = next((t for t in (job.created_at, job.started_at, job.finished_at) if t is not None), self.now)
            self.db.execute(
                f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}, active_since, first_seen, updated_at, job_time)"
                f" VALUES ({', '.join('?' * (len(_JOB_COLUMNS) + 4))})",
                (*values, self.now, self.now, job_time),
            )
        else:
            self.db.execute(
                f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in _JOB_COLUMNS[1:])}, active_since = ?,"
                " updated_at = ? WHERE job_id = ?",
                (*values[1:], self.now, job.job_id),
            )
        if job.streams:
            self.db.executemany(
                f"INSERT OR REPLACE INTO streams (job_id, position, {', '.join(_STREAM_COLUMNS)})"
                f" VALUES (?, ?, {', '.join('?' * len(_STREAM_COLUMNS))})",
                [(job.job_id, position, *_stream_values(s)) for position, s in enumerate(job.streams)],
            )

    def connection(self, name: str) -> ConnectionAgg:
        """The connection's aggregate; a new connection gets series of its own while the budget lasts."""
        agg = self.connections.get(name)
        if agg is None:
            row = None if name in self.known_missing else self._connection_row(name)
            if row is None:
                if self.admitted is None:
                    self.admitted = _meta(self.db, "admitted_connections")
                admitted = self.admitted < self.limits.max_connections
                self.admitted += admitted
                agg = ConnectionAgg(connection=name, first_seen=self.now, admitted=admitted)
            else:
                agg = _connection_from_row(row)
            self.connections[name] = agg
        return agg

    def overflow_agg(self) -> ConnectionAgg:
        """The added-up counters of the connections beyond the budget."""
        if self.overflow is None:
            row = self.db.execute(_OVERFLOW_SELECT).fetchone()
            self.overflow = ConnectionAgg(OVERFLOW, self.now) if row is None else _connection_from_row(row)
        return self.overflow

    def _connection_row(self, name: str) -> Sequence[object] | None:
        row: Sequence[object] | None = self.db.execute(_CONNECTION_SELECT + " WHERE connection = ?", (name,)).fetchone()
        return row

    def stream_aggs(self, connection: str, names: Sequence[str]) -> tuple[dict[str, StreamAgg], bool]:
        """Each stream's aggregate, and whether any of them is folded into ``stream="__overflow__"``.

        A stream gets a series of its own while its connection has fewer than
        ``max_streams_per_connection``; a later one counts into the connection's overflow stream.
        """
        missing = [name for name in names if (connection, name) not in self.streams_looked_up]
        for start in range(0, len(missing), _MAX_PARAMS):
            chunk = missing[start : start + _MAX_PARAMS]
            self.streams_looked_up.update((connection, name) for name in chunk)
            for row in self.db.execute(
                "SELECT stream, records_synced, last_status, last_finished_at FROM stream_aggs"
                f" WHERE connection = ? AND stream IN ({', '.join('?' * len(chunk))})",
                (connection, *chunk),
            ):
                self.streams[(connection, row[0])] = StreamAgg(connection, *row)
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
            row = self.db.execute(
                "SELECT stream, records_synced, last_status, last_finished_at FROM stream_aggs"
                " WHERE connection = ? AND stream = ?",
                pair,
            ).fetchone()
            self.streams[pair] = StreamAgg(connection, OVERFLOW) if row is None else StreamAgg(connection, *row)
        return self.streams[pair]

    def _own_streams(self, connection: str) -> int:
        if connection not in self.own_streams:
            self.own_streams[connection] = self.db.execute(
                "SELECT count(*) FROM stream_aggs WHERE connection = ? AND stream != ?", (connection, OVERFLOW)
            ).fetchone()[0]
        return self.own_streams[connection]

    def count_error(self, connection: str, kind: str) -> None:
        counts = self.errors.setdefault(connection, {})
        counts[(ERROR_FAMILY, kind)] = counts.get((ERROR_FAMILY, kind), 0) + 1

    def failures_after(self, connection: str, moment: float) -> int:
        row = self.db.execute(
            # status as a literal, so that the partial index of failed jobs applies
            f"SELECT count(*) FROM jobs WHERE connection_name = ? AND status = '{FAILED}' AND finished_at > ?",
            (connection, moment),
        ).fetchone()
        return int(row[0])

    def flush(self, endpoint: str, counts: dict[str, int]) -> None:
        if self.connections:
            version = self.db.execute(
                "UPDATE meta SET value = value + 1 WHERE key = 'connections_version' RETURNING value"
            ).fetchone()[0]
            for agg in self.connections.values():
                agg.version = version
            self.db.executemany(_CONNECTION_UPSERT, [_connection_row(agg) for agg in self.connections.values()])
        if self.admitted is not None:
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'admitted_connections'", (self.admitted,))
        if self.overflow is not None:
            self.db.execute(_OVERFLOW_UPSERT, _connection_row(self.overflow))
        for kind, jobs in self.overflow_jobs.items():
            if jobs:
                self.db.execute("UPDATE meta SET value = value + ? WHERE key = ?", (jobs, f"overflow_jobs_{kind}"))
        if self.streams:
            self.db.executemany(
                "INSERT OR REPLACE INTO stream_aggs (connection, stream, records_synced, last_status,"
                " last_finished_at) VALUES (?, ?, ?, ?, ?)",
                [
                    (a.connection, a.stream, a.records_synced, a.last_status, a.last_finished_at)
                    for a in self.streams.values()
                ],
            )
        for connection, errors in self.errors.items():
            _add_log_counts(self.db, connection, errors)
        if self.new_jobs:
            self.db.execute("UPDATE meta SET value = value + ? WHERE key = 'stored_jobs'", (self.new_jobs,))
        _count_ingest(self.db, endpoint, counts)


def _forget(db: sqlite3.Connection, names: Sequence[str]) -> None:
    """Delete the aggregates of ``names``; a place in the series budget they held is free again."""
    for chunk in _chunks(names, _MAX_PARAMS):
        marks = ", ".join("?" * len(chunk))
        admitted = db.execute(f"SELECT count(*) FROM connections WHERE admitted AND connection IN ({marks})", chunk)
        db.execute("UPDATE meta SET value = value - ? WHERE key = 'admitted_connections'", admitted.fetchone())
        for table in ("connections", "stream_aggs", "log_counts", "rate_limits"):
            db.execute(f"DELETE FROM {table} WHERE connection IN ({marks})", chunk)


def _meta(db: sqlite3.Connection, key: str) -> int:
    return int(db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])


def _shipping_stats(db: sqlite3.Connection) -> ShippingStats:
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    queued = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    waiting = (int(queued[0]) if queued else 0) - int(meta["outbox_cursor"])
    return ShippingStats(
        waiting=max(waiting, 0),
        exported=int(meta["log_exported"]),
        failed=int(meta["log_failed"]),
        dead_lettered=int(meta["log_dead_lettered"]),
        last_success=meta.get("log_export_last_success"),
    )


def _with_streams_from_lines(db: sqlite3.Connection, job: Job) -> Job:
    """A finished job without streams, given the stream results its log lines report.

    ``Stream X: N records synced in Ts`` makes X succeeded with N rows; an
    ERROR line about stream X makes it failed; the later line wins.
    """
    results: dict[str, StreamResult] = {}
    for level, message, stream in db.execute(
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
    return replace(job, streams=tuple(results.values())).with_derived_fields()


def _new_failure_summary(old: Job | None, new: Job) -> bool:
    """Whether ``new`` makes a failed job's error summary known for the first time."""
    if new.status != FAILED or not new.error_summary:
        return False
    return old is None or old.status != FAILED or not old.error_summary


def _add_log_counts(db: sqlite3.Connection, connection: str, counts: dict[tuple[str, str], int]) -> None:
    db.executemany(
        "INSERT INTO log_counts (connection, family, key, count) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (connection, family, key) DO UPDATE SET count = count + excluded.count",
        [(connection, family, key, n) for (family, key), n in counts.items()],
    )


def _count_rejections(db: sqlite3.Connection, endpoint: str, fields: Sequence[str]) -> None:
    """Rejected records by the field their error names, positions removed (``streams[3].name``: ``streams[].name``)."""
    counts: dict[str, int] = {}
    for field in fields:
        key = _POSITION.sub("[]", _LINE.sub("", field)) or "record"
        counts[key] = counts.get(key, 0) + 1
    db.executemany(
        "INSERT INTO rejections (endpoint, field, count) VALUES (?, ?, ?)"
        " ON CONFLICT (endpoint, field) DO UPDATE SET count = count + excluded.count",
        [(endpoint, field, n) for field, n in counts.items()],
    )


_POSITION: Final = re.compile(r"\[\d+\]")
_LINE: Final = re.compile(r"^line \d+\.?")


def _count_ingest(db: sqlite3.Connection, endpoint: str, counts: dict[str, int]) -> None:
    db.executemany(
        "INSERT INTO ingest_counts (endpoint, outcome, count) VALUES (?, ?, ?)"
        " ON CONFLICT (endpoint, outcome) DO UPDATE SET count = count + excluded.count",
        [(endpoint, outcome, n) for outcome, n in counts.items() if n],
    )


def _list_jobs_sql(where: JobFilter, limit: int, after: tuple[float, str] | None) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    # With both filters the connection's index is the narrower one (a connection has a few thousand jobs, a
    # status hundreds of thousands); "+status" keeps SQLite, which has no statistics, from taking the other.
    status_column = "+status" if where.connections else "status"
    for column, values in (("connection_name", where.connections), (status_column, where.statuses)):
        if values:
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
            params += values
    for clause, value in (
        ("job_time >= ?", where.since),
        ("job_time < ?", where.until),
        ("job_type = ?", where.job_type),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    if after is not None:
        clauses.append("(job_time, job_id) < (?, ?)")
        params += after
    sql = (
        "SELECT * FROM jobs"
        + (" WHERE " + " AND ".join(clauses) if clauses else "")
        + " ORDER BY job_time DESC, job_id DESC LIMIT ?"
    )
    return sql, [*params, limit]


def _casefold(text: str | None) -> str | None:
    return None if text is None else text.casefold()


def _export_changed(db: sqlite3.Connection, job_id: str) -> None:
    """A sealed job changed: its batch is exported again, to the same keys.

    Not once the purge has taken some of the batch's jobs: the upload would
    replace the objects with fewer jobs than they hold.
    """
    db.execute(
        "UPDATE export_batches SET version = version + 1, exported_at = NULL"
        " WHERE id = (SELECT export_batch FROM jobs WHERE job_id = ?) AND NOT frozen",
        (job_id,),
    )


def _export_stats(db: sqlite3.Connection) -> ExportStats:
    meta = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 's3_%'").fetchall())
    unsealed = db.execute(
        "SELECT min(finished_at) FROM jobs WHERE finished_at IS NOT NULL AND export_batch IS NULL"
    ).fetchone()[0]
    unexported = db.execute("SELECT min(oldest_finished) FROM export_batches WHERE exported_at IS NULL").fetchone()[0]
    waiting = [t for t in (unsealed, unexported) if t is not None]
    return ExportStats(
        exported_objects=int(meta["s3_exported_objects"]),
        failed_objects=int(meta["s3_failed_objects"]),
        last_success=meta.get("s3_export_last_success"),
        oldest_waiting=min(waiting) if waiting else None,
    )


def _count_webhook(db: sqlite3.Connection, endpoint: str, outcome: str) -> None:
    db.execute(
        "INSERT INTO webhook_counts (endpoint, outcome, count) VALUES (?, ?, 1)"
        " ON CONFLICT (endpoint, outcome) DO UPDATE SET count = count + 1",
        (endpoint, outcome),
    )


def _dead_letter_webhooks(
    db: sqlite3.Connection, where: str, params: tuple[object, ...], reason: str, now: float
) -> int:
    rows = db.execute(f"SELECT id, endpoint FROM webhook_queue WHERE {where}", params).fetchall()
    db.execute(
        "INSERT OR REPLACE INTO webhook_dead_letters (id, endpoint, job_id, event_id, payload, created_at, attempts,"
        " reason, dead_at) SELECT id, endpoint, job_id, event_id, payload, created_at, attempts, ?, ?"
        f" FROM webhook_queue WHERE {where}",
        (reason, now, *params),
    )
    db.execute(f"DELETE FROM webhook_queue WHERE {where}", params)
    for _id, endpoint in rows:
        _count_webhook(db, endpoint, "dead_lettered")
    return len(rows)


@contextmanager
def _savepoint(db: sqlite3.Connection) -> Iterator[None]:
    """One request inside a shared transaction: undone alone when it fails."""
    db.execute("SAVEPOINT request")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK TO request")
        db.execute("RELEASE request")
        raise
    db.execute("RELEASE request")


def _histogram(counts: str, total: float) -> Histogram:
    values = [int(c) for c in counts.split(",")]
    if len(values) != len(DURATION_BUCKETS) + 1:
        raise StoreError("stored duration histogram has other buckets than this version")
    return Histogram(values, total)


_SCALARS_END: Final = len(_CONNECTION_SCALARS)
_JOBS_END: Final = _SCALARS_END + len(FINISHED_STATUSES)


def _connection_from_row(row: Sequence[object]) -> ConnectionAgg:
    """A ``connections`` row, columns in ``_CONNECTION_COLUMNS`` order."""
    row = tuple(row)
    agg = ConnectionAgg(**dict(zip(_CONNECTION_SCALARS, row[:_SCALARS_END], strict=True)))  # type: ignore[arg-type]
    agg.jobs = dict(zip(FINISHED_STATUSES, row[_SCALARS_END:_JOBS_END], strict=True))  # type: ignore[arg-type]
    for index, status in enumerate(FINISHED_STATUSES):
        counts, total = row[_JOBS_END + 2 * index], row[_JOBS_END + 2 * index + 1]
        if counts is not None:
            agg.durations[status] = _histogram(str(counts), float(total))  # type: ignore[arg-type]
    return agg


def _connection_row(agg: ConnectionAgg) -> tuple[object, ...]:
    durations: list[object] = []
    for status in FINISHED_STATUSES:
        histogram = agg.durations.get(status)
        if histogram is None:
            durations += (None, None)
        else:
            durations += (",".join(map(str, histogram.counts)), histogram.total)
    return (*_connection_values(agg), *(agg.jobs[s] for s in FINISHED_STATUSES), *durations)


def _dedup_key(job_id: str, line: LogLine, occurrence: int) -> str | None:
    """Identity of a timestamped line, so a re-sent batch is stored once.

    Lines without a timestamp cannot be told apart from a real repeat, so they
    are always appended.
    """
    if line.timestamp is None:
        return None
    text = "\x1f".join((job_id, repr(line.timestamp), line.level, line.stream or "", line.message, str(occurrence)))
    return hashlib.sha256(text.encode()).hexdigest()


class SQLiteStore:
    """:class:`~calabi_exporter.store.Store` on one SQLite file.

    One connection per thread (SQLite connections must not be shared across
    threads); ``synchronous`` trades the last transactions before a power loss
    (``normal``) against an fsync per request (``full``).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        clock: Clock = system_clock,
        synchronous: str = "full",
        outbox: bool = False,
        webhook_routes: Sequence[EventRoute] = (),
        s3_export: bool = False,
        limits: SeriesLimits | None = None,
    ) -> None:
        """``outbox``: keep every new log line and finished job in the outbox for the log shipper.

        ``webhook_routes``: queue every job status change for each endpoint whose filters it passes,
        in the transaction that records the change.

        ``s3_export``: jobs are exported to S3 (adds the index of jobs waiting for export, once, and
        reports the export's progress in the metrics snapshot).
        """
        if synchronous not in ("full", "normal"):
            raise ValueError("synchronous must be 'full' or 'normal'")
        self.path = Path(data_dir) / DB_FILENAME
        self._clock = clock
        self._synchronous = synchronous
        self._outbox = outbox
        self._s3_export = s3_export
        self._routes = tuple(webhook_routes)
        self._limits = limits or SeriesLimits()
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock_fds: list[int] = []
        self._group = GroupCommitter(self._write, _savepoint)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._write() as tx:
                version = tx.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: schema version {version} is newer than this exporter")
                if version:  # an existing store: bring it up to date first
                    for step in range(version, SCHEMA_VERSION):
                        _MIGRATIONS[step](tx)
                for statement in _SCHEMA.split(";\n"):
                    if statement.strip():
                        tx.execute(statement)
                if s3_export:
                    tx.execute(_EXPORT_INDEX)
                tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as error:
            raise store_error(error, f"cannot open the store at {self.path}") from error

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # check_same_thread off only so that close() may close every thread's connection;
            # each connection is still used by the one thread that opened it.
            db = sqlite3.connect(self.path, isolation_level=None, timeout=60.0, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
            db.execute("PRAGMA busy_timeout = 60000")
            db.create_function("casefold", 1, _casefold, deterministic=True)
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def _lock_fd(self) -> int:
        fd: int | None = getattr(self._local, "lock_fd", None)
        if fd is None:
            fd = os.open(self.path.with_name(LOCK_FILENAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._local.lock_fd = fd
            with self._lock:
                self._lock_fds.append(fd)
        return fd

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, writers queued on an ``flock`` first.

        SQLite's own busy handler polls with sleeps of up to 100 ms, so under
        many concurrent writers most of the time goes to sleeping on a lock
        that is already free. A blocking ``flock`` on a file next to the
        database (one open file per thread, so it excludes threads as well as
        worker processes) wakes the next writer as soon as the last commits;
        ``BEGIN IMMEDIATE`` then finds the database free.
        """
        db = self._db()
        fd = self._lock_fd()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def ingest_jobs(
        self, jobs: Sequence[Job], *, endpoint: str, rejected: int = 0, rejected_fields: Sequence[str] = ()
    ) -> IngestResult:
        def work(db: sqlite3.Connection) -> IngestResult:
            result = IngestResult()
            tx = _Transaction(db, self._clock(), self._limits)
            if len(jobs) > 1:
                tx.prefetch(jobs)
            for job in jobs:
                result.outcomes.append(self._apply(tx, job))
            counts = {outcome: result.count(outcome) for outcome in OUTCOMES}
            counts["rejected"] += rejected
            tx.flush(endpoint, counts)
            _count_rejections(db, endpoint, rejected_fields)
            return result

        return self._submit(work)

    def _apply(self, tx: _Transaction, job: Job) -> str:
        """Merge one record into the store and its aggregates; returns the outcome."""
        existing = tx.load_job(job.job_id)
        if job.finished and not job.streams and (existing is None or not existing.streams):
            job = _with_streams_from_lines(tx.db, job)
        outcome, merged = merge(existing, job, tx.now)
        if outcome != ACCEPTED:
            return outcome
        tx.save_job(merged, is_new=existing is None)
        if existing is None or existing.status != merged.status:
            self._queue_events(tx, merged, None if existing is None else existing.status)
        elif existing.finished:
            _export_changed(tx.db, merged.job_id)
        name = merged.connection_name
        agg = tx.connection(name)
        if job.connection_name == name:
            update_connection_metadata(agg, job)
        if existing is None and not agg.admitted:
            tx.overflow_jobs["connection"] += 1
        if merged.finished:
            newly_finished = existing is None or not existing.finished
            if self._outbox and newly_finished:
                tx.db.execute(
                    "INSERT INTO outbox (job_id, line_id, queued_at) VALUES (?, NULL, ?)", (merged.job_id, tx.now)
                )
            apply_finished(agg, existing, merged, failures_after=partial(tx.failures_after, name))
            if not agg.admitted:  # the same change to the added-up counters; its gauges are not shown
                apply_finished(tx.overflow_agg(), existing, merged, failures_after=lambda _moment: 0)
            series = name if agg.admitted else OVERFLOW
            if _new_failure_summary(existing, merged):
                tx.count_error(series, classify_error(merged.error_summary or ""))
            if merged.streams:
                if agg.admitted:
                    streams, folded = tx.stream_aggs(name, [s.name for s in merged.streams])
                    if folded and newly_finished:
                        tx.overflow_jobs["stream"] += 1
                else:
                    overflow = tx.stream_overflow(OVERFLOW)
                    streams = {s.name: overflow for s in merged.streams}
                apply_finished_streams(streams, existing, merged)
        return outcome

    def _queue_events(self, tx: _Transaction, job: Job, previous: str | None) -> None:
        routes = [route for route in self._routes if route.wants(job)]
        if not routes:
            return
        event_id = status_event_id(job.job_id, job.status)
        payload = json.dumps(status_event(job, previous, event_id, tx.now), ensure_ascii=False)
        # An endpoint in backoff gets its new events at its next retry, not one request each right away.
        tx.db.executemany(
            "INSERT INTO webhook_queue (endpoint, job_id, event_id, payload, created_at, next_attempt_at)"
            " VALUES (?1, ?2, ?3, ?4, ?5, max(?5, coalesce("
            "(SELECT blocked_until FROM webhook_endpoints WHERE endpoint = ?1), 0)))",
            [(route.endpoint, job.job_id, event_id, payload, tx.now) for route in routes],
        )

    def _submit(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run one request's writes atomically and durably (see :mod:`.groupcommit`)."""
        try:
            return self._group.submit(work)
        except sqlite3.Error as error:
            raise store_error(error) from error

    def count_rejected(self, endpoint: str, count: int, fields: Sequence[str] = ()) -> None:
        def work(db: sqlite3.Connection) -> None:
            _count_ingest(db, endpoint, {"rejected": count})
            _count_rejections(db, endpoint, fields)

        self._submit(work)

    def get_job(self, job_id: str) -> Job | None:
        with self._read() as db:
            return _Transaction(db, 0.0, self._limits).load_job(job_id)

    def append_logs(self, job_id: str, lines: Sequence[LogLine]) -> LogIngestResult:
        now = self._clock()
        seen: dict[tuple[float | None, str, str | None, str], int] = {}
        rows = []
        for line in lines:
            identity = (line.timestamp, line.level, line.stream, line.message)
            seen[identity] = seen.get(identity, -1) + 1
            key = _dedup_key(job_id, line, seen[identity])
            rows.append((job_id, line.timestamp, now, line.level, line.message, line.stream, key))

        def work(db: sqlite3.Connection) -> LogIngestResult:
            tx = _Transaction(db, now, self._limits)
            job = tx.load_job(job_id)
            if job is None:
                raise JobNotFound(job_id)
            connection = job.connection_name
            counts: dict[tuple[str, str], int] = {}
            rate_limit: tuple[float, float] | None = None
            accepted = 0
            for line, row in zip(lines, rows, strict=True):
                cursor = db.execute(
                    "INSERT OR IGNORE INTO log_lines (job_id, timestamp, received_at, level, message, stream,"
                    " dedup_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                if cursor.rowcount == 0:
                    continue  # a line stored before: counted (and queued) then
                accepted += 1
                if self._outbox:
                    db.execute(
                        "INSERT INTO outbox (job_id, line_id, queued_at) VALUES (?, ?, ?)",
                        (job_id, cursor.lastrowid, now),
                    )
                level = line.level.lower()
                counts[(LEVEL_FAMILY, level)] = counts.get((LEVEL_FAMILY, level), 0) + 1
                if level == "error":
                    kind = classify_error(line.message)
                    counts[(ERROR_FAMILY, kind)] = counts.get((ERROR_FAMILY, kind), 0) + 1
                ratio = rate_limit_ratio(line.message) if level in ("warn", "info", "error") else None
                if ratio is not None:
                    seen_at = line.timestamp if line.timestamp is not None else now
                    if rate_limit is None or seen_at >= rate_limit[1]:
                        rate_limit = (ratio, seen_at)
            admitted = tx.connection(connection).admitted
            _add_log_counts(db, connection if admitted else OVERFLOW, counts)
            if rate_limit is not None and admitted:
                db.execute(
                    "INSERT INTO rate_limits (connection, ratio, seen_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (connection) DO UPDATE SET ratio = excluded.ratio, seen_at = excluded.seen_at"
                    " WHERE excluded.seen_at >= rate_limits.seen_at",
                    (connection, *rate_limit),
                )
            if accepted and job.finished:
                _export_changed(db, job_id)  # an exported batch holding the job is uploaded again
                if not job.streams:
                    # Lines that arrive after a job finished without streams may still report them.
                    self._apply(tx, Job(job_id=job_id, connection_name=connection, status=job.status))
            tx.flush("logs", {"accepted": accepted, "unchanged": len(rows) - accepted})
            return LogIngestResult(accepted=accepted, unchanged=len(rows) - accepted)

        return self._submit(work)

    def log_lines(self, job_id: str) -> list[LogLine]:
        with self._read() as db:
            return [
                LogLine(level=r["level"], message=r["message"], timestamp=r["timestamp"], stream=r["stream"])
                for r in db.execute(
                    "SELECT level, message, timestamp, stream FROM log_lines WHERE job_id = ? ORDER BY id", (job_id,)
                )
            ]

    def list_jobs(
        self, where: JobFilter, limit: int, after: tuple[float, str] | None = None
    ) -> list[tuple[float, Job]]:
        sql, params = _list_jobs_sql(where, limit, after)
        with self._read() as db:
            rows = db.execute(sql, params).fetchall()
        return [(row["job_time"], _job_from_row(row, ())) for row in rows]

    def list_jobs_plan(self, where: JobFilter, limit: int, after: tuple[float, str] | None = None) -> list[str]:
        """SQLite's plan for :meth:`list_jobs` (``EXPLAIN QUERY PLAN``), to check that an index serves it."""
        sql, params = _list_jobs_sql(where, limit, after)
        with self._read() as db:
            return [str(row[3]) for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]

    def log_page(
        self, job_id: str, *, levels: Sequence[str] = (), search: str = "", after_id: int = 0, limit: int = 100
    ) -> list[StoredLine]:
        clauses = ["job_id = ?", "id > ?"]
        params: list[object] = [job_id, after_id]
        if levels:
            clauses.append(f"level IN ({', '.join('?' * len(levels))})")
            params += levels
        if search:
            clauses.append("instr(casefold(level || ' ' || coalesce(stream, '') || ' ' || message), ?) > 0")
            params.append(search.casefold())
        with self._read() as db:
            rows = db.execute(
                "SELECT id, level, message, timestamp, stream, received_at FROM log_lines"
                f" WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [StoredLine(r[0], LogLine(r[1], r[2], r[3], r[4]), r[5]) for r in rows]

    def connection_names(self) -> list[tuple[str, str | None]]:
        with self._read() as db:
            return [(row[0], row[1]) for row in db.execute("SELECT connection, connection_id FROM connections")]

    def connection_aggregates(self) -> list[ConnectionAgg]:
        with self._read() as db:
            return [_connection_from_row(row) for row in db.execute(_CONNECTION_SELECT)]

    def window_stats(self, finished_since: float) -> dict[str, WindowStats]:
        stats: dict[str, WindowStats] = {}
        with self._read() as db:
            for name, status, jobs, duration_sum, duration_count in db.execute(
                "SELECT connection_name, status, count(*), total(duration_seconds), count(duration_seconds)"
                " FROM jobs WHERE finished_at >= ? GROUP BY connection_name, status",
                (finished_since,),
            ):
                entry = stats.setdefault(name, WindowStats())
                entry.jobs[status] = jobs
                entry.duration_sum += duration_sum
                entry.duration_count += duration_count
        return stats

    def connection_versions(self) -> dict[str, int]:
        with self._read() as db:
            return dict(db.execute("SELECT connection, version FROM connections WHERE admitted"))

    def metrics_snapshot(self, only: Collection[str] | None = None) -> MetricsSnapshot:
        try:
            with self._read() as db:
                # Only connections within the budget have series; the others are in the overflow row.
                if only is None:
                    connections = [_connection_from_row(r) for r in db.execute(_CONNECTION_SELECT + " WHERE admitted")]
                    streams = [StreamAgg(*row) for row in db.execute(_STREAM_SELECT)]
                    log_counts = {(c, f, k): n for c, f, k, n in db.execute("SELECT * FROM log_counts")}
                    rate_limits = {c: r for c, r in db.execute("SELECT connection, ratio FROM rate_limits")}
                else:  # these connections (and the overflow) only: a scrape re-rendering what changed
                    names = [*only, OVERFLOW]
                    connections, streams, log_counts, rate_limits = [], [], {}, {}
                    for chunk in _chunks(names, _MAX_PARAMS):
                        marks = ", ".join("?" * len(chunk))
                        where = f" WHERE connection IN ({marks})"
                        rows = db.execute(_CONNECTION_SELECT + where + " AND admitted", chunk)
                        connections += [_connection_from_row(row) for row in rows]
                        streams += [StreamAgg(*row) for row in db.execute(_STREAM_SELECT + where, chunk)]
                        log_counts.update(
                            ((c, f, k), n) for c, f, k, n in db.execute("SELECT * FROM log_counts" + where, chunk)
                        )
                        rate_limits.update(db.execute("SELECT connection, ratio FROM rate_limits" + where, chunk))
                overflow_row = db.execute(_OVERFLOW_SELECT).fetchone()
                overflow_jobs = {kind: _meta(db, f"overflow_jobs_{kind}") for kind in OVERFLOW_KINDS}
                active = [
                    ActiveJobs(*row)
                    for row in db.execute(
                        "SELECT connection_name, status, count(*), min(active_since) FROM jobs"
                        " WHERE status IN ('pending', 'running') GROUP BY status, connection_name"
                    )
                ]
                ingest = {(e, o): n for e, o, n in db.execute("SELECT endpoint, outcome, count FROM ingest_counts")}
                stored = db.execute("SELECT value FROM meta WHERE key = 'stored_jobs'").fetchone()[0]
                shipping = _shipping_stats(db)
                rejections = {(e, f): n for e, f, n in db.execute("SELECT endpoint, field, count FROM rejections")}
                purged = db.execute("SELECT value FROM meta WHERE key = 'purged_jobs'").fetchone()[0]
                oldest = db.execute("SELECT min(finished_at) FROM jobs WHERE finished_at IS NOT NULL").fetchone()[0]
                export = _export_stats(db) if self._s3_export else ExportStats()
                webhook_counts = {
                    (e, o): n for e, o, n in db.execute("SELECT endpoint, outcome, count FROM webhook_counts")
                }
                webhook_depth = dict(db.execute("SELECT endpoint, count(*) FROM webhook_queue GROUP BY endpoint"))
        except sqlite3.Error as error:
            raise store_error(error) from error
        return MetricsSnapshot(
            connections,
            streams,
            active,
            ingest,
            int(stored),
            log_counts,
            rate_limits,
            shipping,
            rejections,
            self._size_bytes(),
            int(purged),
            oldest,
            export,
            webhook_counts,
            webhook_depth,
            None if overflow_row is None else _connection_from_row(overflow_row),
            overflow_jobs,
        )

    def outbox_read(self, limit: int) -> list[OutboxEntry]:
        try:
            with self._read() as db:
                cursor = db.execute("SELECT value FROM meta WHERE key = 'outbox_cursor'").fetchone()[0]
                rows = db.execute(
                    "SELECT o.id, o.job_id, l.level, l.message, l.timestamp, l.stream, o.queued_at"
                    " FROM outbox o LEFT JOIN log_lines l ON l.id = o.line_id"
                    " WHERE o.id > ? ORDER BY o.id LIMIT ?",
                    (cursor, limit),
                ).fetchall()
                tx = _Transaction(db, 0.0, self._limits)
                jobs: dict[str, Job | None] = {}
                out: list[OutboxEntry] = []
                for outbox_id, job_id, level, message, timestamp, stream, queued_at in rows:
                    if job_id not in jobs:
                        jobs[job_id] = tx.load_job(job_id)
                    job = jobs[job_id]
                    if job is None:  # purged since it was queued: nothing left to ship
                        continue
                    line = None if level is None else LogLine(level, message, timestamp, stream)
                    out.append(OutboxEntry(outbox_id, job, line, queued_at))
                return out
        except sqlite3.Error as error:
            raise store_error(error) from error

    def outbox_done(self, last_id: int, *, exported: int, dead: Sequence[tuple[OutboxEntry, str]] = ()) -> None:
        now = self._clock()

        def work(db: sqlite3.Connection) -> None:
            db.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'outbox_cursor'", (last_id,))
            db.execute("UPDATE meta SET value = value + ? WHERE key = 'log_exported'", (exported,))
            db.executemany(
                "INSERT OR REPLACE INTO dead_letters (outbox_id, job_id, line_id, reason, dead_at)"
                " SELECT id, job_id, line_id, ?, ? FROM outbox WHERE id = ?",
                [(reason, now, entry.id) for entry, reason in dead],
            )
            db.execute("UPDATE meta SET value = value + ? WHERE key = 'log_dead_lettered'", (len(dead),))
            if exported:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('log_export_last_success', ?)", (now,))
            db.execute("DELETE FROM outbox WHERE id <= ?", (last_id,))

        self._submit(work)

    def outbox_failed(self, records: int) -> None:
        self._submit(lambda db: db.execute("UPDATE meta SET value = value + ? WHERE key = 'log_failed'", (records,)))

    def dead_letters(self, limit: int = 1000) -> list[tuple[int, str, str]]:
        with self._read() as db:
            rows = db.execute(
                "SELECT outbox_id, job_id, reason FROM dead_letters ORDER BY outbox_id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [(int(i), str(j), str(r)) for i, j, r in reversed(rows)]

    def purge(self, finished_before: float, limit: int = 1000, *, exported_only: bool = False) -> int:
        """Delete up to ``limit`` jobs finished before ``finished_before``, with their streams and lines.

        The aggregates are left alone, so no counter moves; one small transaction
        per call keeps the write lock short for ingestion running alongside.
        With ``exported_only`` a job goes only once the S3 batch holding it is
        exported in its latest version and every job of the batch is past the
        cutoff. A batch the purge takes jobs from is frozen (never uploaded
        again, which would shrink its objects); batches left without jobs go.
        """
        if exported_only:
            select = (
                "SELECT j.job_id, j.export_batch FROM jobs j JOIN export_batches b ON b.id = j.export_batch"
                " WHERE j.finished_at < ?1 AND b.exported_at IS NOT NULL AND b.newest_finished < ?1"
                " ORDER BY j.finished_at LIMIT ?2"
            )
        else:
            select = "SELECT job_id, export_batch FROM jobs WHERE finished_at < ?1 ORDER BY finished_at LIMIT ?2"

        def work(db: sqlite3.Connection) -> int:
            rows = db.execute(select, (finished_before, limit)).fetchall()
            if not rows:
                return 0
            ids = [row[0] for row in rows]
            for chunk in _chunks(ids, _MAX_PARAMS):
                marks = ", ".join("?" * len(chunk))
                for table in ("streams", "log_lines", "outbox", "jobs"):
                    db.execute(f"DELETE FROM {table} WHERE job_id IN ({marks})", chunk)
            batches = sorted({row[1] for row in rows if row[1] is not None})
            for batch_chunk in _chunks(batches, _MAX_PARAMS):
                marks = ", ".join("?" * len(batch_chunk))
                db.execute(f"UPDATE export_batches SET frozen = 1 WHERE id IN ({marks})", batch_chunk)
                db.execute(
                    f"DELETE FROM export_batches WHERE id IN ({marks})"
                    " AND NOT EXISTS (SELECT 1 FROM jobs WHERE export_batch = export_batches.id)",
                    batch_chunk,
                )
            db.execute("UPDATE meta SET value = value - ? WHERE key = 'stored_jobs'", (len(ids),))
            db.execute("UPDATE meta SET value = value + ? WHERE key = 'purged_jobs'", (len(ids),))
            # A connection without a job left in the retention window is forgotten: its series go.
            idle = db.execute(
                "SELECT connection FROM connections c"
                " WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE connection_name = c.connection)"
            ).fetchall()
            _forget(db, [row[0] for row in idle])
            return len(ids)

        return self._submit(work)

    def forget_connection(self, name: str) -> int | None:
        """Drop a connection's aggregates (and so its series); its jobs stay until retention.

        Returns how many of its jobs are still stored, or None for an unknown connection.
        Counters of other connections do not move; a job posted later starts it afresh.
        """

        def work(db: sqlite3.Connection) -> int | None:
            if db.execute("SELECT 1 FROM connections WHERE connection = ?", (name,)).fetchone() is None:
                return None
            _forget(db, [name])
            return int(db.execute("SELECT count(*) FROM jobs WHERE connection_name = ?", (name,)).fetchone()[0])

        return self._submit(work)

    def purge_dead_letters(self, before: float) -> int:
        def work(db: sqlite3.Connection) -> int:
            logs = db.execute("DELETE FROM dead_letters WHERE dead_at < ?", (before,)).rowcount
            hooks = db.execute("DELETE FROM webhook_dead_letters WHERE dead_at < ?", (before,)).rowcount
            return int(logs + hooks)

        return self._submit(work)

    # S3 export -----------------------------------------------------------------------------------

    def export_seal(self, finished_before: float, window_seconds: float, *, finished_since: float = 0.0) -> int:
        def work(db: sqlite3.Connection) -> int:
            rows = db.execute(
                "SELECT job_id, finished_at FROM jobs WHERE finished_at IS NOT NULL AND export_batch IS NULL"
                " AND finished_at >= ? AND finished_at < ? ORDER BY finished_at LIMIT ?",
                (finished_since, finished_before, _SEAL_LIMIT),
            ).fetchall()
            windows: dict[float, list[str]] = {}
            oldest: dict[float, float] = {}
            newest: dict[float, float] = {}
            for job_id, finished_at in rows:
                start = finished_at // window_seconds * window_seconds
                windows.setdefault(start, []).append(job_id)
                oldest.setdefault(start, finished_at)
                newest[start] = finished_at
            for start, ids in windows.items():
                day, name = export_object_name(start, ids)
                batch = db.execute(
                    "INSERT INTO export_batches (day, name, oldest_finished, newest_finished) VALUES (?, ?, ?, ?)",
                    (day, name, oldest[start], newest[start]),
                ).lastrowid
                for chunk in _chunks(ids, _MAX_PARAMS):
                    db.execute(
                        f"UPDATE jobs SET export_batch = ? WHERE job_id IN ({', '.join('?' * len(chunk))})",
                        (batch, *chunk),
                    )
            return len(rows)

        return self._submit(work)

    def export_waiting(self, limit: int = 100) -> list[ExportBatch]:
        with self._read() as db:
            rows = db.execute(
                "SELECT id, day, name, version FROM export_batches WHERE exported_at IS NULL AND NOT frozen"
                " ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [ExportBatch(*row) for row in rows]

    def export_batches_between(self, since: float, until: float) -> list[ExportBatch]:
        with self._read() as db:
            rows = db.execute(
                "SELECT id, day, name, version FROM export_batches WHERE NOT frozen AND id IN (SELECT DISTINCT"
                " export_batch FROM jobs WHERE finished_at >= ? AND finished_at < ? AND export_batch IS NOT NULL)"
                " ORDER BY id",
                (since, until),
            ).fetchall()
        return [ExportBatch(*row) for row in rows]

    def export_jobs(self, batch: ExportBatch) -> ExportBatch:
        with self._read() as db:
            tx = _Transaction(db, 0.0, self._limits)
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT job_id FROM jobs WHERE export_batch = ? ORDER BY finished_at, job_id", (batch.id,)
                )
            ]
            jobs = [job for job in map(tx.load_job, ids) if job is not None]
        return replace(batch, jobs=jobs)

    def export_lines(self, batch_id: int) -> Iterator[tuple[str, LogLine, float]]:
        with self._read() as db:
            for job_id, level, message, timestamp, stream, received_at in db.execute(
                "SELECT l.job_id, l.level, l.message, l.timestamp, l.stream, l.received_at"
                " FROM jobs j JOIN log_lines l ON l.job_id = j.job_id"
                " WHERE j.export_batch = ? ORDER BY j.finished_at, j.job_id, l.id",
                (batch_id,),
            ):
                yield job_id, LogLine(level, message, timestamp, stream), received_at

    def export_done(self, batch: ExportBatch, objects: int) -> bool:
        now = self._clock()

        def work(db: sqlite3.Connection) -> bool:
            done = db.execute(
                "UPDATE export_batches SET exported_at = ? WHERE id = ? AND version = ?", (now, batch.id, batch.version)
            ).rowcount
            db.execute("UPDATE meta SET value = value + ? WHERE key = 's3_exported_objects'", (objects,))
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('s3_export_last_success', ?)", (now,))
            return bool(done)

        return self._submit(work)

    def export_failed(self, objects: int) -> None:
        self._submit(
            lambda db: db.execute("UPDATE meta SET value = value + ? WHERE key = 's3_failed_objects'", (objects,))
        )

    # Webhook deliveries ----------------------------------------------------------------------------

    def webhook_due(self, endpoint: str, now: float, limit: int = 100) -> list[Delivery]:
        with self._read() as db:
            rows = db.execute(
                "SELECT q.id, q.endpoint, q.job_id, q.event_id, q.payload, q.created_at, q.attempts"
                " FROM webhook_queue q WHERE q.endpoint = ? AND q.next_attempt_at <= ? AND NOT EXISTS"
                " (SELECT 1 FROM webhook_queue p WHERE p.endpoint = q.endpoint AND p.job_id = q.job_id AND p.id < q.id)"
                " ORDER BY q.id LIMIT ?",
                (endpoint, now, limit),
            ).fetchall()
        return [Delivery(*row) for row in rows]

    def webhook_orphans(self, endpoints: Sequence[str]) -> int:
        now = self._clock()
        marks = ", ".join("?" * len(endpoints)) or "NULL"

        def work(db: sqlite3.Connection) -> int:
            where = f"endpoint NOT IN ({marks})"
            return _dead_letter_webhooks(db, where, tuple(endpoints), "endpoint no longer configured", now)

        return self._submit(work)

    def webhook_delivered(self, delivery: Delivery) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM webhook_queue WHERE id = ?", (delivery.id,))
            db.execute("DELETE FROM webhook_endpoints WHERE endpoint = ?", (delivery.endpoint,))
            _count_webhook(db, delivery.endpoint, "delivered")

        self._submit(work)

    def webhook_retry(self, delivery: Delivery, next_attempt_at: float, error: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE webhook_queue SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?",
                (next_attempt_at, error, delivery.id),
            )
            db.execute(
                "UPDATE webhook_queue SET next_attempt_at = ? WHERE endpoint = ? AND next_attempt_at < ?",
                (next_attempt_at, delivery.endpoint, next_attempt_at),
            )
            db.execute(
                "INSERT INTO webhook_endpoints (endpoint, blocked_until) VALUES (?, ?) ON CONFLICT (endpoint)"
                " DO UPDATE SET blocked_until = excluded.blocked_until",
                (delivery.endpoint, next_attempt_at),
            )
            _count_webhook(db, delivery.endpoint, "failed")

        self._submit(work)

    def webhook_dead(self, delivery: Delivery, reason: str) -> None:
        now = self._clock()

        def work(db: sqlite3.Connection) -> None:
            _dead_letter_webhooks(db, "id = ?", (delivery.id,), reason, now)

        self._submit(work)

    def webhook_dead_letters(self, limit: int = 1000) -> list[tuple[Delivery, str]]:
        with self._read() as db:
            rows = db.execute(
                "SELECT id, endpoint, job_id, event_id, payload, created_at, attempts, reason FROM webhook_dead_letters"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [(Delivery(*row[:7]), str(row[7])) for row in reversed(rows)]

    def _size_bytes(self) -> int:
        """The database, its WAL and shared-memory file, on disk."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with suppress(OSError):  # the WAL and shm files come and go
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def check_ready(self) -> None:
        try:
            with self._write() as db:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('ready_check', ?)", (int(self._clock()),))
        except sqlite3.Error as error:
            raise store_error(error, f"store at {self.path} is not writable") from error

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
            for fd in self._lock_fds:
                os.close(fd)
            self._lock_fds.clear()
        self._local = threading.local()
