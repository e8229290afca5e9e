"""The S3 export queue: finished jobs sealed into batches, and which batches are uploaded.

A batch is sealed once and keeps its object name; a job of it that changes
later (or gains log lines) bumps its version, so the batch is uploaded again
to the same keys (:func:`.ingest.export_changed`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Final

from ..documents import export_object_name
from ..joblogs import LogLine
from ..timeutil import Clock
from .database import Database, Tx, chunks, fetch_all, marks
from .records import ExportBatch
from .rows import add_meta, read_job, set_meta

_SEAL_LIMIT: Final = 50_000  # jobs sealed into export batches per call
#: An export batch as ExportBatch reads it.
_BATCHES: Final = "SELECT id, day, name, version FROM export_batches"


class ExportQueue:
    def __init__(self, database: Database, *, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    def seal(self, finished_before: float, window_seconds: float, *, finished_since: float = 0.0) -> int:
        def work(tx: Tx) -> int:
            rows = tx.execute(
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
                batch = tx.execute(
                    "INSERT INTO export_batches (day, name, oldest_finished, newest_finished) VALUES (?, ?, ?, ?)"
                    " RETURNING id",
                    (day, name, oldest[start], newest[start]),
                ).fetchone()[0]
                for chunk in chunks(ids):
                    tx.execute(
                        f"UPDATE jobs SET export_batch = ? WHERE job_id IN ({marks(len(chunk))})", (batch, *chunk)
                    )
            return len(rows)

        return self._db.submit(work)

    def waiting(self, limit: int = 100) -> list[ExportBatch]:
        sql = f"{_BATCHES} WHERE exported_at IS NULL AND NOT frozen ORDER BY id LIMIT ?"
        return [ExportBatch(*row) for row in fetch_all(self._db, sql, (limit,))]

    def batches_between(self, since: float, until: float) -> list[ExportBatch]:
        sql = (
            f"{_BATCHES} WHERE NOT frozen AND id IN (SELECT DISTINCT export_batch FROM jobs"
            " WHERE finished_at >= ? AND finished_at < ? AND export_batch IS NOT NULL) ORDER BY id"
        )
        return [ExportBatch(*row) for row in fetch_all(self._db, sql, (since, until))]

    def jobs(self, batch: ExportBatch) -> ExportBatch:
        with self._db.read() as tx:
            ids = [
                row[0]
                for row in tx.execute(
                    "SELECT job_id FROM jobs WHERE export_batch = ? ORDER BY finished_at, job_id", (batch.id,)
                )
            ]
            jobs = [job for job in (read_job(tx, job_id) for job_id in ids) if job is not None]
        return replace(batch, jobs=jobs)

    def lines(self, batch_id: int) -> Iterator[tuple[str, LogLine, float]]:
        with self._db.read() as tx:
            for job_id, level, message, timestamp, stream, received_at in tx.execute(
                "SELECT l.job_id, l.level, l.message, l.timestamp, l.stream, l.received_at"
                " FROM jobs j JOIN log_lines l ON l.job_id = j.job_id"
                " WHERE j.export_batch = ? ORDER BY j.finished_at, j.job_id, l.id",
                (batch_id,),
            ):
                yield job_id, LogLine(level, message, timestamp, stream), received_at

    def done(self, batch: ExportBatch, objects: int) -> bool:
        now = self._clock()

        def work(tx: Tx) -> bool:
            done = tx.execute(
                "UPDATE export_batches SET exported_at = ? WHERE id = ? AND version = ? RETURNING id",
                (now, batch.id, batch.version),
            ).fetchone()
            add_meta(tx, "s3_exported_objects", objects)
            set_meta(tx, "s3_export_last_success", now)
            return done is not None

        return self._db.submit(work)

    def failed(self, objects: int) -> None:
        self._db.submit(lambda tx: add_meta(tx, "s3_failed_objects", objects))
