"""The aggregates one write request touches: read once, changed in memory, written back once.

A batch of 10,000 jobs touches a few hundred connections and streams; reading
each aggregate per job would cost a query per job. The cache reads what a
batch needs in a few queries, the ingest rules (:mod:`.ingest`) change the
records in memory, and :meth:`AggregateCache.flush` writes each one once, in
the same transaction as the job rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Final

from ..aggregates import ConnectionAgg, StreamAgg
from ..model import ACTIVE_STATUSES, FAILED, OVERFLOW, PENDING, Job
from .database import MAX_PARAMS, Tx, chunks, marks
from .errors import NewConnectionRefused
from .records import ERROR_FAMILY, OVERFLOW_KINDS, SeriesLimits
from .rows import (
    CONNECTION_SELECT,
    CONNECTION_UPSERT,
    JOB_UPSERT,
    OVERFLOW_SELECT,
    OVERFLOW_UPSERT,
    STREAM_AGG_SELECT,
    STREAM_AGG_UPSERT,
    STREAM_UPSERT,
    change_meta,
    connection_from_row,
    connection_row,
    job_values,
    overflow_row,
    read_job,
    read_jobs,
    read_meta,
    stream_agg_from_row,
    stream_agg_row,
    stream_rows,
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
_FORGOTTEN_SELECT: Final = "SELECT connection, forgotten_at FROM forgotten_connections"


def active_since(job: Job, now: float) -> float | None:
    """When a pending job was queued, or a running job started."""
    if job.status == PENDING:
        return job.created_at if job.created_at is not None else now
    if job.status in ACTIVE_STATUSES:
        return job.started_at if job.started_at is not None else now
    return None


def add_log_counts(tx: Tx, connection: str, counts: dict[tuple[str, str], int]) -> None:
    tx.executemany(_LOG_COUNT_ADD, [(connection, family, key, n) for (family, key), n in counts.items()])


def count_ingest(tx: Tx, counts: Sequence[tuple[str, str, int]]) -> None:
    """Add (endpoint, outcome, records) to the ingest counters, in one statement."""
    rows = [row for row in counts if row[2]]
    if rows:
        tx.execute(_INGEST_COUNT_ADD.format(values=", ".join(["(?, ?, ?)"] * len(rows))), [v for r in rows for v in r])


def _statements(
    lookups: Iterable[tuple[str, Sequence[str]]],
) -> Iterator[list[tuple[str, Sequence[str]]]]:
    """(connection, stream names) lookups grouped so that no statement binds more than MAX_PARAMS values."""
    part: list[tuple[str, Sequence[str]]] = []
    size = 0
    for connection, names in lookups:
        if part and size + 1 + len(names) > MAX_PARAMS:
            yield part
            part, size = [], 0
        part.append((connection, names))
        size += 1 + len(names)
    if part:
        yield part


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
        self.jobs: dict[str, Job] = {}  # stored jobs read ahead, until one of them is saved again
        self.jobs_read: set[str] = set()  # ids read ahead, found or not
        # Job and stream rows saved but not written yet (see write_jobs).
        self.job_rows: list[tuple[object, ...]] = []
        self.job_ids_to_write: set[str] = set()  # the ids in job_rows: a batch of 10,000 checks each in O(1)
        self.stream_rows: list[tuple[object, ...]] = []
        self.admitted: int | None = None  # connections with series of their own, once read
        # Who sent the job records being applied (a digest of the ingest token, "" on an exporter without
        # tokens): the connections they make known count against it. None: not a job request (log lines).
        self.token: str | None = None
        self.forgotten: dict[str, float | None] = {}  # connection -> when last forgotten (None: never), once read
        self.made_before: dict[tuple[str, int], int] = {}  # (token, hour) -> connections made known, as stored
        self.made: dict[tuple[str, int], int] = {}  # (token, hour) -> connections made known by this transaction
        self.overflow: ConnectionAgg | None = None  # the overflow aggregate, once read or made
        self.overflow_jobs: dict[str, int] = dict.fromkeys(OVERFLOW_KINDS, 0)

    def prefetch(self, jobs: Sequence[Job]) -> None:
        """Read what a request touches (its stored jobs and aggregates) with a few queries, not a few per job.

        Every query goes out before any result is read: on PostgreSQL (pipeline
        mode) the reads of a request cost one round trip between them.
        """
        names = list(dict.fromkeys(job.connection_name for job in jobs if job.connection_name not in self.connections))
        connection_reads = [
            (chunk, self.tx.execute(CONNECTION_SELECT + f" WHERE connection IN ({marks(len(chunk))})", chunk))
            for chunk in chunks(names)
        ]
        # Each connection's streams by its primary-key prefix, which serves it on either engine.
        wanted: dict[str, list[str]] = {}
        for job in jobs:
            if job.finished:
                for stream in job.streams:
                    if (job.connection_name, stream.name) not in self.streams_looked_up:
                        self.streams_looked_up.add((job.connection_name, stream.name))
                        wanted.setdefault(job.connection_name, []).append(stream.name)
        stream_reads = []
        for part in _statements((connection, chunk) for connection, names in wanted.items() for chunk in chunks(names)):
            where = " OR ".join(f"(connection = ? AND stream IN ({marks(len(names))}))" for _, names in part)
            stream_reads.append(
                self.tx.execute(STREAM_AGG_SELECT + f" WHERE {where}", [v for c, n in part for v in (c, *n)])
            )
        forget_reads = [
            (chunk, self.tx.execute(_FORGOTTEN_SELECT + f" WHERE connection IN ({marks(len(chunk))})", chunk))
            for chunk in chunks([name for name in names if name not in self.forgotten])
        ]
        ids = [job.job_id for job in jobs if job.job_id not in self.jobs_read]
        self.jobs.update(read_jobs(self.tx, ids))
        self.jobs_read.update(ids)
        for chunk, rows in connection_reads:
            for row in rows.fetchall():
                agg = connection_from_row(row)
                self.connections[agg.connection] = agg
            self.known_missing.update(name for name in chunk if name not in self.connections)
        for rows in stream_reads:
            for row in rows.fetchall():
                self.streams[(row[0], row[1])] = stream_agg_from_row(row)
        for chunk, rows in forget_reads:
            self.forgotten.update(dict.fromkeys(chunk))
            self.forgotten.update((name, float(at)) for name, at in rows.fetchall())

    def load_job(self, job_id: str) -> Job | None:
        """The stored job: read ahead, or read now."""
        if job_id in self.jobs_read:
            return self.jobs.get(job_id)
        return read_job(self.tx, job_id)

    def save_job(self, job: Job, *, is_new: bool) -> None:
        """Keep the job as stored from now on; its rows are written with the others (:meth:`write_jobs`)."""
        if job.job_id in self.job_ids_to_write:
            self.write_jobs()  # one statement may not write a row twice
        self.jobs[job.job_id] = job  # a request naming it again merges into this
        self.jobs_read.add(job.job_id)
        self.new_jobs += is_new
        # job_time, the job's place in listings, is set once (queued, else started, else finished), as is
        # first_seen: the upsert leaves both alone on a stored job.
        job_time = next((t for t in (job.created_at, job.started_at, job.finished_at) if t is not None), self.now)
        self.job_ids_to_write.add(job.job_id)
        self.job_rows.append((*job_values(job), active_since(job, self.now), self.now, self.now, job_time))
        self.stream_rows += stream_rows(job)

    def write_jobs(self) -> None:
        """Write the jobs saved so far, all at once; before anything reads the ``jobs`` table again."""
        JOB_UPSERT.write(self.tx, self.job_rows)
        STREAM_UPSERT.write(self.tx, self.stream_rows)
        self.job_rows, self.stream_rows = [], []
        self.job_ids_to_write = set()

    def connection(self, name: str) -> ConnectionAgg:
        """The connection's aggregate; a new connection gets series of its own while the budget lasts."""
        agg = self.connections.get(name)
        if agg is None:
            row = None
            if name not in self.known_missing:
                row = self.tx.execute(CONNECTION_SELECT + " WHERE connection = ?", (name,)).fetchone()
            if row is None:
                self._count_new_connection()
                if self.admitted is None:
                    self.admitted = read_meta(self.tx, "admitted_connections")
                admitted = self.admitted < self.limits.max_connections
                self.admitted += admitted
                agg = ConnectionAgg(connection=name, first_seen=self.now, admitted=admitted)
            else:
                agg = connection_from_row(row)
            self.connections[name] = agg
        return agg

    def _count_new_connection(self) -> None:
        """Count a connection made known by :attr:`token`; refuse it past ``new_connections_per_hour``.

        Raises :class:`~.errors.NewConnectionRefused` before anything changes.
        """
        limit = self.limits.new_connections_per_hour
        if not limit or self.token is None:
            return
        key = (self.token, int(self.now // 3600))
        if key not in self.made_before:
            row = self.tx.execute("SELECT count FROM new_connections WHERE token = ? AND hour = ?", key).fetchone()
            self.made_before[key] = 0 if row is None else int(row[0])
        made = self.made.get(key, 0)
        if self.made_before[key] + made >= limit:
            raise NewConnectionRefused(limit, retry_after=3600 * (key[1] + 1) - int(self.now))
        self.made[key] = made + 1

    def from_before_forget(self, job: Job) -> bool:
        """Whether ``job`` began before its connection was last forgotten.

        Such a job (a late record, or one still running at the forget) belongs to
        what was forgotten: it is stored and listed, but not counted into the
        aggregates the connection has made since.
        """
        name = job.connection_name
        if name not in self.forgotten:
            row = self.tx.execute(_FORGOTTEN_SELECT + " WHERE connection = ?", (name,)).fetchone()
            self.forgotten[name] = None if row is None else float(row[1])
        forgotten_at = self.forgotten[name]
        times = [t for t in (job.created_at, job.started_at, job.finished_at) if t is not None]
        return forgotten_at is not None and bool(times) and min(times) < forgotten_at

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
        self.write_jobs()
        row = self.tx.execute(
            # status as a literal, so that the partial index of failed jobs applies
            f"SELECT count(*) FROM jobs WHERE connection_name = ? AND status = '{FAILED}' AND finished_at > ?",
            (connection, moment),
        ).fetchone()
        return int(row[0])

    def flush(self, counts: dict[str, dict[str, int]]) -> None:
        """Write the jobs and every aggregate changed, and count the outcomes of each endpoint's records."""
        self.write_jobs()
        change_meta(
            self.tx,
            add={
                "connections_version": 1 if self.connections else 0,
                "stored_jobs": self.new_jobs,
                **{f"overflow_jobs_{kind}": jobs for kind, jobs in self.overflow_jobs.items()},
            },
            set_to={} if self.admitted is None else {"admitted_connections": self.admitted},
        )
        if self.connections:  # stamped with the version just made (see CONNECTION_UPSERT)
            CONNECTION_UPSERT.write(self.tx, [connection_row(agg) for agg in self.connections.values()])
        if self.overflow is not None:
            OVERFLOW_UPSERT.write(self.tx, [overflow_row(self.overflow)])
        if self.streams:
            STREAM_AGG_UPSERT.write(self.tx, [stream_agg_row(a) for a in self.streams.values()])
        for connection, errors in self.errors.items():
            add_log_counts(self.tx, connection, errors)
        if self.made:
            self.tx.executemany(_NEW_CONNECTIONS_ADD, [(token, hour, n) for (token, hour), n in self.made.items()])
        count_ingest(self.tx, [(e, outcome, n) for e, outcomes in counts.items() for outcome, n in outcomes.items()])
