"""What leaves the store: jobs past retention, abandoned jobs, old dead letters, forgotten connections.

The :class:`~.protocols.Retention` protocol.

The aggregates stay when jobs go, so no counter moves; one small transaction
per call keeps the write lock short for ingestion running alongside. A place
in the series budget that a forgotten connection frees goes to the connection
that has waited beyond the budget longest (:func:`readmit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ..aggregates import admitted_afresh
from ..timeutil import Clock, system_clock
from .database import Database, Tx, chunks, marks, upsert
from .records import SeriesLimits
from .rows import CONNECTION_SELECT, CONNECTION_UPSERT, add_meta, connection_from_row, connection_row, read_meta

_FORGOTTEN_UPSERT: Final = upsert("forgotten_connections", ("connection", "forgotten_at"), ("connection",))


class Retention:
    def __init__(self, database: Database, *, clock: Clock = system_clock, limits: SeriesLimits | None = None) -> None:
        self._db = database
        self._clock = clock
        self._limits = limits or SeriesLimits()

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
            self._delete_jobs(tx, [row[0] for row in rows])
            batches = sorted({row[1] for row in rows if row[1] is not None})
            for batch_chunk in chunks(batches):
                where = f"id IN ({marks(len(batch_chunk))})"
                tx.execute(f"UPDATE export_batches SET frozen = TRUE WHERE {where}", batch_chunk)
                tx.execute(
                    f"DELETE FROM export_batches WHERE {where}"
                    " AND NOT EXISTS (SELECT 1 FROM jobs WHERE export_batch = export_batches.id)",
                    batch_chunk,
                )
            return len(rows)

        return self._db.submit(work)

    def purge_unfinished(self, changed_before: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` jobs still pending or running that no record has changed since ``changed_before``.

        The product dropped them (or a client made them up): left alone they would
        hold their connection's place in the series budget, and keep a pending or
        stuck alert firing, for ever.
        """

        def work(tx: Tx) -> int:
            ids = [
                row[0]
                for row in tx.execute(
                    "SELECT job_id FROM jobs WHERE status IN ('pending', 'running') AND updated_at < ?"
                    " ORDER BY updated_at LIMIT ?",
                    (changed_before, limit),
                )
            ]
            if ids:
                self._delete_jobs(tx, ids)
            return len(ids)

        return self._db.submit(work)

    def _delete_jobs(self, tx: Tx, ids: Sequence[str]) -> None:
        """Delete the jobs with their streams and lines; connections left without a job are forgotten."""
        for chunk in chunks(ids):
            for table in ("streams", "log_lines", "outbox", "jobs"):
                tx.execute(f"DELETE FROM {table} WHERE job_id IN ({marks(len(chunk))})", chunk)
        add_meta(tx, "stored_jobs", -len(ids))
        add_meta(tx, "purged_jobs", len(ids))
        # A connection without a job left in the retention window is forgotten: its series go.
        idle = tx.execute(
            "SELECT connection FROM connections c"
            " WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE connection_name = c.connection)"
        ).fetchall()
        self._forget(tx, [row[0] for row in idle])

    def forget_connection(self, name: str) -> int | None:
        """Drop a connection's aggregates (and so its series); its jobs stay until retention.

        Returns how many of its jobs are still stored, or None for an unknown connection.
        Counters of other connections do not move; a job posted later starts it afresh,
        and a record of a job from before the forget is stored but not counted again
        (see :func:`forgotten_at`). Its jobs still pending or running stay in the
        gauges under its name until they finish or are abandoned.
        """

        def work(tx: Tx) -> int | None:
            if tx.execute("SELECT 1 FROM connections WHERE connection = ?", (name,)).fetchone() is None:
                return None
            self._forget(tx, [name])
            return int(tx.execute("SELECT count(*) FROM jobs WHERE connection_name = ?", (name,)).fetchone()[0])

        return self._db.submit(work)

    def readmit(self) -> int:
        """Give the free places of the series budget to connections waiting beyond it; returns how many.

        A place is freed by a forget (by request, or by the purge) and made by a
        raised ``limits.max_connections``; the purge calls this every minute.
        """
        return self._db.submit(lambda tx: readmit(tx, self._limits))

    def purge_dead_letters(self, before: float) -> int:
        def work(tx: Tx) -> int:
            logs = tx.execute("DELETE FROM dead_letters WHERE dead_at < ? RETURNING 1", (before,)).fetchall()
            hooks = tx.execute("DELETE FROM webhook_dead_letters WHERE dead_at < ? RETURNING 1", (before,)).fetchall()
            return len(logs) + len(hooks)

        return self._db.submit(work)

    def purge_bookkeeping(self, before: float) -> None:
        """Delete forget times older than ``before`` (the retention cutoff) and past hours' new-connection counts."""

        def work(tx: Tx) -> None:
            tx.execute("DELETE FROM forgotten_connections WHERE forgotten_at < ?", (before,))
            tx.execute("DELETE FROM new_connections WHERE hour < ?", (int(self._clock() // 3600),))

        self._db.submit(work)

    def _forget(self, tx: Tx, names: Sequence[str]) -> None:
        forget(tx, names, self._clock())
        readmit(tx, self._limits)


def forget(tx: Tx, names: Sequence[str], now: float) -> None:
    """Delete the aggregates of ``names``; a place in the series budget they held is free again.

    When each was forgotten is kept: a job from before then belongs to what was
    forgotten and is not counted into the connection's new aggregates.
    """
    for chunk in chunks(names):
        where = f"connection IN ({marks(len(chunk))})"
        admitted = tx.execute(f"SELECT count(*) FROM connections WHERE admitted AND {where}", chunk).fetchone()[0]
        add_meta(tx, "admitted_connections", -int(admitted))
        for table in (
            "connections",
            "stream_aggs",
            "log_counts",
            "rate_limits",
            "connection_states",
            "success_windows",
        ):
            tx.execute(f"DELETE FROM {table} WHERE {where}", chunk)
    tx.executemany(_FORGOTTEN_UPSERT, [(name, now) for name in names])


def readmit(tx: Tx, limits: SeriesLimits) -> int:
    """Admit connections waiting beyond the budget into its free places, longest-known first.

    Their counters start again from zero (see :func:`~calabi_exporter.aggregates.admitted_afresh`).
    """
    free = limits.max_connections - read_meta(tx, "admitted_connections")
    if free <= 0:
        return 0
    rows = tx.execute(
        CONNECTION_SELECT + " WHERE NOT admitted ORDER BY first_seen, connection LIMIT ?", (free,)
    ).fetchall()
    if not rows:
        return 0
    add_meta(tx, "connections_version", 1)  # the rows below are stamped with it: a scrape renders them
    add_meta(tx, "admitted_connections", len(rows))
    CONNECTION_UPSERT.write(tx, [connection_row(admitted_afresh(connection_from_row(row))) for row in rows])
    return len(rows)
