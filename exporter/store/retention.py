"""What leaves the store: jobs past retention, old dead letters, forgotten connections.

The :class:`~.roles.Retention` role.

The aggregates stay when jobs go, so no counter moves; one small transaction
per call keeps the write lock short for ingestion running alongside.
"""

from __future__ import annotations

from collections.abc import Sequence

from .database import Database, Tx, chunks, marks
from .rows import add_meta


class Retention:
    def __init__(self, database: Database) -> None:
        self._db = database

    def purge(self, finished_before: float, limit: int = 1000, *, exported_only: bool = False) -> int:
        """Delete up to ``limit`` jobs finished before ``finished_before``, with their streams and lines.

        With ``exported_only`` a job goes only once the S3 batch holding it is
        exported in its latest version and every job of the batch is past the
        cutoff. A batch the purge takes jobs from is frozen (never uploaded
        again, which would shrink its objects); batches left without jobs go.
        """
        if exported_only:
            select = (
                "SELECT j.job_id, j.export_batch FROM jobs j JOIN export_batches b ON b.id = j.export_batch"
                " WHERE j.finished_at < ? AND b.exported_at IS NOT NULL AND b.newest_finished < ?"
                " ORDER BY j.finished_at LIMIT ?"
            )
            params: tuple[object, ...] = (finished_before, finished_before, limit)
        else:
            select = "SELECT job_id, export_batch FROM jobs WHERE finished_at < ? ORDER BY finished_at LIMIT ?"
            params = (finished_before, limit)

        def work(tx: Tx) -> int:
            rows = tx.execute(select, params).fetchall()
            if not rows:
                return 0
            ids = [row[0] for row in rows]
            for chunk in chunks(ids):
                for table in ("streams", "log_lines", "outbox", "jobs"):
                    tx.execute(f"DELETE FROM {table} WHERE job_id IN ({marks(len(chunk))})", chunk)
            batches = sorted({row[1] for row in rows if row[1] is not None})
            for batch_chunk in chunks(batches):
                where = f"id IN ({marks(len(batch_chunk))})"
                tx.execute(f"UPDATE export_batches SET frozen = TRUE WHERE {where}", batch_chunk)
                tx.execute(
                    f"DELETE FROM export_batches WHERE {where}"
                    " AND NOT EXISTS (SELECT 1 FROM jobs WHERE export_batch = export_batches.id)",
                    batch_chunk,
                )
            add_meta(tx, "stored_jobs", -len(ids))
            add_meta(tx, "purged_jobs", len(ids))
            # A connection without a job left in the retention window is forgotten: its series go.
            idle = tx.execute(
                "SELECT connection FROM connections c"
                " WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE connection_name = c.connection)"
            ).fetchall()
            forget(tx, [row[0] for row in idle])
            return len(ids)

        return self._db.submit(work)

    def forget_connection(self, name: str) -> int | None:
        """Drop a connection's aggregates (and so its series); its jobs stay until retention.

        Returns how many of its jobs are still stored, or None for an unknown connection.
        Counters of other connections do not move; a job posted later starts it afresh.
        """

        def work(tx: Tx) -> int | None:
            if tx.execute("SELECT 1 FROM connections WHERE connection = ?", (name,)).fetchone() is None:
                return None
            forget(tx, [name])
            return int(tx.execute("SELECT count(*) FROM jobs WHERE connection_name = ?", (name,)).fetchone()[0])

        return self._db.submit(work)

    def purge_dead_letters(self, before: float) -> int:
        def work(tx: Tx) -> int:
            logs = tx.execute("DELETE FROM dead_letters WHERE dead_at < ? RETURNING 1", (before,)).fetchall()
            hooks = tx.execute("DELETE FROM webhook_dead_letters WHERE dead_at < ? RETURNING 1", (before,)).fetchall()
            return len(logs) + len(hooks)

        return self._db.submit(work)


def forget(tx: Tx, names: Sequence[str]) -> None:
    """Delete the aggregates of ``names``; a place in the series budget they held is free again."""
    for chunk in chunks(names):
        where = f"connection IN ({marks(len(chunk))})"
        admitted = tx.execute(f"SELECT count(*) FROM connections WHERE admitted AND {where}", chunk).fetchone()[0]
        add_meta(tx, "admitted_connections", -int(admitted))
        for table in ("connections", "stream_aggs", "log_counts", "rate_limits"):
            tx.execute(f"DELETE FROM {table} WHERE {where}", chunk)
