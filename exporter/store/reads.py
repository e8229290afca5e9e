"""Reads of jobs, log lines and connections for the read API and the MCP tools.

The :class:`~.protocols.JobReads` protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ..aggregates import ConnectionAgg
from ..joblogs import LogLine
from ..model import Job
from .database import Database, Dialect, marks
from .records import JobFilter, StoredLine, WindowStats
from .rows import CONNECTION_SELECT, JOB_COLUMNS, connection_from_row, job_from_row, read_job

_JOB_PAGE: Final = f"SELECT job_time, {', '.join(JOB_COLUMNS)} FROM jobs"


class JobReads:
    def __init__(self, database: Database) -> None:
        self._db = database

    def job(self, job_id: str) -> Job | None:
        with self._db.read() as tx:
            return read_job(tx, job_id)

    def log_lines(self, job_id: str) -> list[LogLine]:
        with self._db.read() as tx:
            return [
                LogLine(level, message, timestamp, stream)
                for level, message, timestamp, stream in tx.execute(
                    "SELECT level, message, timestamp, stream FROM log_lines WHERE job_id = ? ORDER BY id", (job_id,)
                )
            ]

    def jobs(self, where: JobFilter, limit: int, after: tuple[float, str] | None = None) -> list[tuple[float, Job]]:
        sql, params = list_jobs_sql(self._db.dialect, where, limit, after)
        with self._db.read() as tx:
            rows = tx.execute(sql, params).fetchall()
        return [(row[0], job_from_row(row[1:])) for row in rows]

    def jobs_plan(self, where: JobFilter, limit: int, after: tuple[float, str] | None = None) -> list[str]:
        """The engine's plan for :meth:`jobs`, to check that an index serves it."""
        return self._db.explain(*list_jobs_sql(self._db.dialect, where, limit, after))

    def log_page(
        self, job_id: str, *, levels: Sequence[str] = (), search: str = "", after_id: int = 0, limit: int = 100
    ) -> list[StoredLine]:
        clauses = ["job_id = ?", "id > ?"]
        params: list[object] = [job_id, after_id]
        if levels:
            clauses.append(f"level IN ({marks(len(levels))})")
            params += levels
        if search:
            dialect = self._db.dialect
            clauses.append(dialect.contains_folded("level || ' ' || coalesce(stream, '') || ' ' || message"))
            params.append(dialect.fold(search))
        with self._db.read() as tx:
            rows = tx.execute(
                "SELECT id, level, message, timestamp, stream, received_at FROM log_lines"
                f" WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [StoredLine(r[0], LogLine(r[1], r[2], r[3], r[4]), r[5]) for r in rows]

    def connection_names(self) -> list[tuple[str, str | None]]:
        with self._db.read() as tx:
            rows = tx.execute("SELECT connection, connection_id FROM connections").fetchall()
        return sorted((row[0], row[1]) for row in rows)

    def connection_aggregates(self) -> list[ConnectionAgg]:
        with self._db.read() as tx:
            aggregates = [connection_from_row(row) for row in tx.execute(CONNECTION_SELECT)]
        return sorted(aggregates, key=lambda agg: agg.connection)

    def window_stats(self, finished_since: float) -> dict[str, WindowStats]:
        stats: dict[str, WindowStats] = {}
        with self._db.read() as tx:
            for name, status, jobs, duration_sum, duration_count in tx.execute(
                "SELECT connection_name, status, count(*), coalesce(sum(duration_seconds), 0.0),"
                " count(duration_seconds) FROM jobs WHERE finished_at >= ? GROUP BY connection_name, status",
                (finished_since,),
            ):
                entry = stats.setdefault(name, WindowStats())
                entry.jobs[status] = int(jobs)
                entry.duration_sum += float(duration_sum)
                entry.duration_count += int(duration_count)
        return stats


def list_jobs_sql(
    dialect: Dialect, where: JobFilter, limit: int, after: tuple[float, str] | None
) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    # With both filters the connection's index is the narrower one (a connection has a few thousand jobs, a
    # status hundreds of thousands); SQLite, which has no statistics, is kept off the status index.
    status_column = dialect.unindexed("status") if where.connections else "status"
    for column, values in (("connection_name", where.connections), (status_column, where.statuses)):
        if values:
            clauses.append(f"{column} IN ({marks(len(values))})")
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
        _JOB_PAGE
        + (" WHERE " + " AND ".join(clauses) if clauses else "")
        + " ORDER BY job_time DESC, job_id DESC LIMIT ?"
    )
    return sql, [*params, limit]
