"""The stored state an ingest plan reads (:class:`~calabi_exporter.ingest_plan.State`), read ahead in a few queries.

A batch of 10,000 jobs touches a few hundred connections and streams; reading
each aggregate per job would cost a query per job. :meth:`StoredState.prefetch`
reads what a batch needs in a few queries; what it did not foresee is read on
demand, once. Everything is read before the plan is applied, so the planner
sees the store as it stood before the batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from ..aggregates import ConnectionAgg, StreamAgg
from ..ingest_plan import Success
from ..model import FAILED, OVERFLOW, RESET, SUCCEEDED, Job
from .database import MAX_PARAMS, Tx, chunks, marks
from .rows import (
    CONNECTION_SELECT,
    OVERFLOW_SELECT,
    STREAM_AGG_SELECT,
    connection_from_row,
    read_job,
    read_jobs,
    read_meta,
    stream_agg_from_row,
    window_from_text,
)

#: A stored row, as the database driver gives it.
Row = Sequence[object]

_FORGOTTEN_SELECT: Final = "SELECT connection, forgotten_at FROM forgotten_connections"
#: A connection's newest successes that are not resets, from its jobs: for one without a stored window
#: (a store from before windows were kept). The column types are :class:`Success`'s on both engines.
_SUCCESSES: Final = (
    "SELECT finished_at, records_synced FROM jobs WHERE connection_name = ?"
    f" AND status = '{SUCCEEDED}' AND finished_at IS NOT NULL AND (job_type IS NULL OR job_type != '{RESET}')"
    " AND job_time >= ? ORDER BY job_time DESC, job_id DESC LIMIT ?"
)
_WINDOW_SELECT: Final = "SELECT connection, successes FROM success_windows"


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


class StoredState:
    """The store as one write transaction found it; every answer read once.

    Aggregates are kept as the rows read and built at each call: the planner
    changes what it is given, and a new object costs less than a copy of one.
    """

    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self.jobs: dict[str, Job | None] = {}
        self.connections: dict[str, Row | None] = {}
        self.streams: dict[tuple[str, str], Row | None] = {}
        self.forgotten: dict[str, float | None] = {}
        self.own: dict[str, int] = {}
        self.made: dict[tuple[str, int], int] = {}
        self.admitted: int | None = None
        self.overflow_read = False
        self.overflow_row: Row | None = None
        self.windows: dict[str, list[Success] | None] = {}  # None: no window stored

    def prefetch(self, jobs: Sequence[Job]) -> None:
        """Read what a batch touches (its stored jobs and aggregates) with a few queries, not a few per job.

        Every query goes out before any result is read: on PostgreSQL (pipeline
        mode) the reads of a batch cost one round trip between them.
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
                    pair = (job.connection_name, stream.name)
                    if pair not in self.streams:
                        self.streams[pair] = None
                        wanted.setdefault(job.connection_name, []).append(stream.name)
        stream_reads = []
        for part in _statements((connection, chunk) for connection, names in wanted.items() for chunk in chunks(names)):
            where = " OR ".join(f"(connection = ? AND stream IN ({marks(len(names))}))" for _, names in part)
            stream_reads.append(
                self.tx.execute(STREAM_AGG_SELECT + f" WHERE {where}", [v for c, n in part for v in (c, *n)])
            )
        window_reads = self._send_window_reads([name for name in names if name not in self.windows])
        forget_reads = [
            (chunk, self.tx.execute(_FORGOTTEN_SELECT + f" WHERE connection IN ({marks(len(chunk))})", chunk))
            for chunk in chunks([name for name in names if name not in self.forgotten])
        ]
        ids = [job.job_id for job in jobs if job.job_id not in self.jobs]
        found = read_jobs(self.tx, ids)
        self.jobs.update((job_id, found.get(job_id)) for job_id in ids)
        for chunk, rows in connection_reads:
            self.connections.update(dict.fromkeys(chunk))
            for row in rows.fetchall():
                self.connections[str(row[0])] = row
        for rows in stream_reads:
            for row in rows.fetchall():
                self.streams[(str(row[0]), str(row[1]))] = row
        self._take_windows(window_reads)
        for chunk, rows in forget_reads:
            self.forgotten.update(dict.fromkeys(chunk))
            self.forgotten.update((name, float(at)) for name, at in rows.fetchall())

    def job(self, job_id: str) -> Job | None:
        if job_id not in self.jobs:
            self.jobs[job_id] = read_job(self.tx, job_id)
        return self.jobs[job_id]

    def connection(self, name: str) -> ConnectionAgg | None:
        if name not in self.connections:
            self.connections[name] = self.tx.execute(CONNECTION_SELECT + " WHERE connection = ?", (name,)).fetchone()
        row = self.connections[name]
        return None if row is None else connection_from_row(row)

    def overflow(self) -> ConnectionAgg | None:
        if not self.overflow_read:
            self.overflow_row = self.tx.execute(OVERFLOW_SELECT).fetchone()
            self.overflow_read = True
        return None if self.overflow_row is None else connection_from_row(self.overflow_row)

    def stream(self, connection: str, stream: str) -> StreamAgg | None:
        pair = (connection, stream)
        if pair not in self.streams:
            self.streams[pair] = self.tx.execute(
                STREAM_AGG_SELECT + " WHERE connection = ? AND stream = ?", pair
            ).fetchone()
        row = self.streams[pair]
        return None if row is None else stream_agg_from_row(row)

    def own_streams(self, connection: str) -> int:
        if connection not in self.own:
            self.own[connection] = int(
                self.tx.execute(
                    "SELECT count(*) FROM stream_aggs WHERE connection = ? AND stream != ?", (connection, OVERFLOW)
                ).fetchone()[0]
            )
        return self.own[connection]

    def admitted_connections(self) -> int:
        if self.admitted is None:
            self.admitted = read_meta(self.tx, "admitted_connections")
        return self.admitted

    def connections_made(self, token: str, hour: int) -> int:
        key = (token, hour)
        if key not in self.made:
            row = self.tx.execute("SELECT count FROM new_connections WHERE token = ? AND hour = ?", key).fetchone()
            self.made[key] = 0 if row is None else int(row[0])
        return self.made[key]

    def forgotten_at(self, connection: str) -> float | None:
        if connection not in self.forgotten:
            row = self.tx.execute(_FORGOTTEN_SELECT + " WHERE connection = ?", (connection,)).fetchone()
            self.forgotten[connection] = None if row is None else float(row[1])
        return self.forgotten[connection]

    def failures_after(self, connection: str, moment: float) -> int:
        row = self.tx.execute(
            # status as a literal, so that the partial index of failed jobs applies
            f"SELECT count(*) FROM jobs WHERE connection_name = ? AND status = '{FAILED}' AND finished_at > ?",
            (connection, moment),
        ).fetchone()
        return int(row[0])

    def lines(self, job_id: str) -> Sequence[tuple[str, str, str | None]]:
        rows = self.tx.execute("SELECT level, message, stream FROM log_lines WHERE job_id = ? ORDER BY id", (job_id,))
        return [(str(level), str(message), stream) for level, message, stream in rows]

    def successes(self, connections: Sequence[str], limit: int) -> Mapping[str, Sequence[Success]]:
        self._take_windows(self._send_window_reads([name for name in connections if name not in self.windows]))
        # A connection without a window (its jobs stored before windows were kept, or forgotten since) is
        # read from its jobs, newest first by the index of its listing, those from before a forget left
        # out; every query goes out before any result is read.
        missing = [name for name in connections if self.windows[name] is None]
        sent = [(name, self.tx.execute(_SUCCESSES, (name, self.forgotten_at(name) or 0.0, limit))) for name in missing]
        found: dict[str, list[Success]] = {name: rows.fetchall() for name, rows in sent}
        return {name: found[name] if (window := self.windows[name]) is None else window for name in connections}

    def _send_window_reads(self, names: Sequence[str]) -> list[tuple[Sequence[str], Any]]:
        """The queries of the connections' success windows, sent; :meth:`_take_windows` reads their results."""
        return [
            (chunk, self.tx.execute(_WINDOW_SELECT + f" WHERE connection IN ({marks(len(chunk))})", chunk))
            for chunk in chunks(names)
        ]

    def _take_windows(self, reads: Sequence[tuple[Sequence[str], Any]]) -> None:
        for chunk, rows in reads:
            self.windows.update(dict.fromkeys(chunk))
            self.windows.update((str(name), window_from_text(str(text))) for name, text in rows.fetchall())
