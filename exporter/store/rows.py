"""Rows ↔ records: the column lists of jobs, streams and connection aggregates, and the mapping.

Every query names its columns (never ``SELECT *``), so a row reads the same
whatever order a migration left the table's columns in.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Sequence
from dataclasses import fields
from operator import attrgetter
from typing import Final

from ..aggregates import DURATION_BUCKETS, ConnectionAgg, Histogram, StreamAgg
from ..ingest_plan import Success
from ..model import FINISHED_STATUSES, Job, StreamResult
from .database import Tx, Upsert, chunks, marks, upsert
from .errors import StoreError

JOB_COLUMNS: Final = tuple(f.name for f in fields(Job) if f.name != "streams")
STREAM_COLUMNS: Final = tuple(f.name for f in fields(StreamResult))
JOB_SELECT: Final = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"
STREAM_UPSERT: Final = Upsert("streams", ("job_id", "position", *STREAM_COLUMNS), ("job_id", "name"))
#: A job's row: a job stored before keeps the time it was first seen and its place in listings.
JOB_UPSERT: Final = Upsert(
    "jobs",
    (*JOB_COLUMNS, "active_since", "first_seen", "updated_at", "job_time"),
    ("job_id",),
    update=(*JOB_COLUMNS[1:], "active_since", "updated_at"),
)

#: The aggregate's fields but its two maps (``jobs``, ``durations``), which it declares last.
CONNECTION_SCALARS: Final = tuple(f.name for f in fields(ConnectionAgg))[:-2]
if tuple(f.name for f in fields(ConnectionAgg))[-2:] != ("jobs", "durations"):
    raise TypeError("ConnectionAgg declares jobs and durations last: a row gives the rest, in order")
CONNECTION_COLUMNS: Final = (
    CONNECTION_SCALARS
    + tuple(f"jobs_{s}" for s in FINISHED_STATUSES)
    + tuple(column for s in FINISHED_STATUSES for column in (f"duration_counts_{s}", f"duration_sum_{s}"))
)
CONNECTION_SELECT: Final = f"SELECT {', '.join(CONNECTION_COLUMNS)} FROM connections"
_VERSION: Final = CONNECTION_COLUMNS.index("version")
#: The aggregates of a write, stamped with the store's next connections version (read in SQL: no round trip).
CONNECTION_UPSERT: Final = Upsert(
    "connections",
    CONNECTION_COLUMNS,
    ("connection",),
    computed=(("version", "(SELECT value FROM meta WHERE key = 'connections_version')"),),
)
#: The counters of every connection beyond the series budget, added up: one row.
OVERFLOW_SELECT: Final = f"SELECT {', '.join(CONNECTION_COLUMNS)} FROM connection_overflow"
OVERFLOW_UPSERT: Final = Upsert("connection_overflow", CONNECTION_COLUMNS, ("connection",))

#: A connection's newest successes, as the learning reads them (``success_windows``).
WINDOW_UPSERT: Final = Upsert("success_windows", ("connection", "successes"), ("connection",))

STREAM_AGG_COLUMNS: Final = ("connection", "stream", "records_synced", "last_status", "last_finished_at")
STREAM_AGG_SELECT: Final = f"SELECT {', '.join(STREAM_AGG_COLUMNS)} FROM stream_aggs"
STREAM_AGG_UPSERT: Final = Upsert("stream_aggs", STREAM_AGG_COLUMNS, ("connection", "stream"))

_JOB_END: Final = len(JOB_COLUMNS)
_JOBS_WITH_STREAMS: Final = (
    f"SELECT {', '.join(f'j.{c}' for c in JOB_COLUMNS)}, {', '.join(f's.{c}' for c in STREAM_COLUMNS)}"
    " FROM jobs j LEFT JOIN streams s ON s.job_id = j.job_id"
)
_job_values: Final = attrgetter(*JOB_COLUMNS)
_stream_values: Final = attrgetter(*STREAM_COLUMNS)
_connection_values: Final = attrgetter(*CONNECTION_SCALARS)
_SCALARS_END: Final = len(CONNECTION_SCALARS)
_JOBS_END: Final = _SCALARS_END + len(FINISHED_STATUSES)


def job_values(job: Job) -> tuple[object, ...]:
    """The job's columns, in ``JOB_COLUMNS`` order."""
    return tuple(_job_values(job))


def stream_rows(job: Job) -> list[tuple[object, ...]]:
    """The job's ``streams`` rows, in ``STREAM_UPSERT`` order."""
    return [(job.job_id, position, *_stream_values(s)) for position, s in enumerate(job.streams)]


def job_from_row(row: Sequence[object], streams: Sequence[Sequence[object]] = ()) -> Job:
    """A job from a row in ``JOB_COLUMNS`` order and its stream rows in ``STREAM_COLUMNS`` order."""
    return Job(
        **dict(zip(JOB_COLUMNS, row, strict=True)),  # type: ignore[arg-type]
        streams=tuple(StreamResult(*s) for s in streams),  # type: ignore[arg-type]
    )


def read_job(tx: Tx, job_id: str) -> Job | None:
    """The stored job with its streams, or None."""
    return read_jobs(tx, [job_id]).get(job_id)


def read_jobs(tx: Tx, job_ids: Sequence[str]) -> dict[str, Job]:
    """The stored jobs among ``job_ids``, with their streams (one query: the jobs joined with their streams).

    Every query is sent before any result is read: on PostgreSQL (pipeline
    mode) they cost one round trip together.
    """
    sent = [
        tx.execute(
            _JOBS_WITH_STREAMS + f" WHERE j.job_id IN ({marks(len(chunk))}) ORDER BY j.job_id, s.position", chunk
        )
        for chunk in chunks(list(dict.fromkeys(job_ids)))
    ]
    jobs: dict[str, Job] = {}
    for rows in sent:
        streams: dict[str, list[Sequence[object]]] = {}
        heads: dict[str, Sequence[object]] = {}
        for row in rows.fetchall():
            job_id = str(row[0])
            heads.setdefault(job_id, row[:_JOB_END])
            if row[_JOB_END] is not None:  # the stream's name: None when the job has no streams
                streams.setdefault(job_id, []).append(row[_JOB_END:])
        for job_id, head in heads.items():
            jobs[job_id] = job_from_row(head, streams.get(job_id, ()))
    return jobs


def read_meta(tx: Tx, key: str) -> int:
    """One of the store's counters in ``meta``."""
    return int(tx.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])


def add_meta(tx: Tx, key: str, amount: float) -> None:
    tx.execute("UPDATE meta SET value = value + ? WHERE key = ?", (amount, key))


def set_meta(tx: Tx, key: str, value: float) -> None:
    tx.execute(upsert("meta", ("key", "value"), ("key",)), (key, value))


def change_meta(tx: Tx, *, add: dict[str, float], set_to: dict[str, float]) -> None:
    """Several of the store's counters changed in one statement: ``add`` to some, ``set_to`` others."""
    cases = [(key, "value + ?", amount) for key, amount in add.items() if amount] + [
        (key, "?", value) for key, value in set_to.items()
    ]
    if not cases:
        return
    whens = " ".join(f"WHEN ? THEN {expression}" for _, expression, _ in cases)
    tx.execute(
        f"UPDATE meta SET value = CASE key {whens} END WHERE key IN ({marks(len(cases))})",
        [value for key, _, amount in cases for value in (key, amount)] + [key for key, _, _ in cases],
    )


def _histogram(counts: str, total: float) -> Histogram:
    values = list(map(int, counts.split(",")))
    if len(values) != len(DURATION_BUCKETS) + 1:
        raise StoreError("stored duration histogram has other buckets than this version")
    return Histogram(values, total)


def connection_from_row(row: Sequence[object]) -> ConnectionAgg:
    """A ``connections`` row, columns in ``CONNECTION_COLUMNS`` order."""
    row = tuple(row)
    jobs = dict(zip(FINISHED_STATUSES, row[_SCALARS_END:_JOBS_END], strict=True))
    durations: dict[str, Histogram] = {}
    for index, status in enumerate(FINISHED_STATUSES):
        counts, total = row[_JOBS_END + 2 * index], row[_JOBS_END + 2 * index + 1]
        if counts is not None:
            durations[status] = _histogram(str(counts), float(total))  # type: ignore[arg-type]
    agg = ConnectionAgg(*row[:_SCALARS_END], jobs, durations)  # type: ignore[arg-type, call-arg]
    agg.admitted = bool(agg.admitted)
    return agg


def connection_row(agg: ConnectionAgg) -> tuple[object, ...]:
    """The aggregate's ``connections`` row, in ``CONNECTION_COLUMNS`` order."""
    row = _connection_row(agg)
    return row[:_VERSION] + row[_VERSION + 1 :]


def overflow_row(agg: ConnectionAgg) -> tuple[object, ...]:
    """The overflow aggregate's row, in ``CONNECTION_COLUMNS`` order."""
    return _connection_row(agg)


def _connection_row(agg: ConnectionAgg) -> tuple[object, ...]:
    durations: list[object] = []
    for status in FINISHED_STATUSES:
        histogram = agg.durations.get(status)
        if histogram is None:
            durations += (None, None)
        else:
            durations += (",".join(map(str, histogram.counts)), histogram.total)
    return (*_connection_values(agg), *(agg.jobs[s] for s in FINISHED_STATUSES), *durations)


def stream_agg_from_row(row: Sequence[object]) -> StreamAgg:
    return StreamAgg(*row)  # type: ignore[arg-type]


def stream_agg_row(agg: StreamAgg) -> tuple[object, ...]:
    return (agg.connection, agg.stream, agg.records_synced, agg.last_status, agg.last_finished_at)


def window_text(window: Sequence[Success]) -> str:
    """A ``success_windows`` row's ``successes``: each success's finish time and records (NaN: not known) as
    little-endian doubles, in base64. A record count fits a double exactly (the bound is 2^53 - 1); packed,
    a window of 51 is written and read in a few microseconds, where JSON's floats take a hundred."""
    flat = [value for at, records in window for value in (at, math.nan if records is None else records)]
    return base64.b64encode(struct.pack(f"<{len(flat)}d", *flat)).decode("ascii")


def window_from_text(text: str) -> list[Success]:
    """The successes of a ``success_windows`` row (:func:`window_text`), oldest first."""
    raw = base64.b64decode(text)
    flat = struct.unpack(f"<{len(raw) // 8}d", raw)
    return [(flat[i], None if math.isnan(flat[i + 1]) else int(flat[i + 1])) for i in range(0, len(flat), 2)]
