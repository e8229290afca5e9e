"""The log shipper's queue: stored lines and finished jobs' summaries, in the order they were stored.

Ingest adds a row per new line and per newly finished job in the same
transaction (:mod:`.ingest`); the shipper reads from its cursor, and moves it
only after Loki took the records, so delivery is at least once and in order.
Writes are serialised, so ids grow in commit order and the cursor never
passes a record still being written. The shipper may also finish records past
the cursor (another connection's, read past a backlog): those are deleted by id.
Dead letters can be queued again (:meth:`Outbox.redrive`), as new records.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..joblogs import LogLine
from ..model import Job
from ..timeutil import Clock
from .database import Database, Tx
from .protocols import DeadLetter
from .records import OutboxEntry
from .rows import add_meta, read_job, read_meta, set_meta


class Outbox:
    def __init__(self, database: Database, *, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    def read(self, limit: int, *, after: int = 0, skip_jobs: Sequence[str] = ()) -> list[OutboxEntry]:
        """The oldest waiting records past the cursor and ``after``, but none of the jobs ``skip_jobs``."""
        skip = f" AND o.job_id NOT IN ({', '.join('?' * len(skip_jobs))})" if skip_jobs else ""
        with self._db.read() as tx:
            rows = tx.execute(
                "SELECT o.id, o.job_id, l.level, l.message, l.timestamp, l.stream, o.queued_at"
                " FROM outbox o LEFT JOIN log_lines l ON l.id = o.line_id"
                f" WHERE o.id > ?{skip} ORDER BY o.id LIMIT ?",
                (max(read_meta(tx, "outbox_cursor"), after), *skip_jobs, limit),
            ).fetchall()
            jobs: dict[str, Job | None] = {}
            out: list[OutboxEntry] = []
            for outbox_id, job_id, level, message, timestamp, stream, queued_at in rows:
                if job_id not in jobs:
                    jobs[job_id] = read_job(tx, job_id)
                job = jobs[job_id]
                if job is None:  # purged since it was queued: nothing left to ship
                    continue
                line = None if level is None else LogLine(level, message, timestamp, stream)
                out.append(OutboxEntry(outbox_id, job, line, queued_at))
            return out

    def done(self, last_id: int, *, exported: int, dead: Sequence[DeadLetter] = (), also: Sequence[int] = ()) -> None:
        """Move the cursor to ``last_id`` and drop the records ``also`` past it; count and dead-letter."""
        now = self._clock()
        greatest = self._db.dialect.greatest("value", "?")

        def work(tx: Tx) -> None:
            tx.execute(f"UPDATE meta SET value = {greatest} WHERE key = 'outbox_cursor'", (last_id,))
            add_meta(tx, "log_exported", exported)
            tx.executemany(
                "INSERT INTO dead_letters (outbox_id, job_id, line_id, reason, dead_at)"
                " SELECT id, job_id, line_id, ?, ? FROM outbox WHERE id = ?"
                " ON CONFLICT (outbox_id) DO UPDATE SET reason = excluded.reason, dead_at = excluded.dead_at",
                [(reason, now, entry.id) for entry, reason in dead],
            )
            add_meta(tx, "log_dead_lettered", len(dead))
            if exported:
                set_meta(tx, "log_export_last_success", now)
            tx.execute("DELETE FROM outbox WHERE id <= ?", (last_id,))
            tx.executemany("DELETE FROM outbox WHERE id = ?", [(id_,) for id_ in also])

        self._db.submit(work)

    def failed(self, records: int) -> None:
        self._db.submit(lambda tx: add_meta(tx, "log_failed", records))

    def dead_letters(self, limit: int = 1000) -> list[tuple[int, str, str]]:
        with self._db.read() as tx:
            rows = tx.execute(
                "SELECT outbox_id, job_id, reason FROM dead_letters ORDER BY outbox_id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [(int(i), str(j), str(r)) for i, j, r in reversed(rows)]

    def redrive(self, connection: str | None = None) -> int:
        """Queue dead letters (of one connection, or all) again as new records; returns how many.

        Those whose job or line the retention purge removed since stay dead-lettered
        until the purge takes them too: there is nothing left to send.
        """
        where = "" if connection is None else " AND j.connection_name = ?"

        def work(tx: Tx) -> int:
            rows = tx.execute(
                "SELECT d.outbox_id, d.job_id, d.line_id FROM dead_letters d JOIN jobs j ON j.job_id = d.job_id"
                " WHERE (d.line_id IS NULL OR EXISTS (SELECT 1 FROM log_lines l WHERE l.id = d.line_id))"
                f"{where} ORDER BY d.outbox_id",
                () if connection is None else (connection,),
            ).fetchall()
            now = self._clock()
            tx.executemany(
                "INSERT INTO outbox (job_id, line_id, queued_at) VALUES (?, ?, ?)",
                [(job_id, line_id, now) for _, job_id, line_id in rows],
            )
            tx.executemany("DELETE FROM dead_letters WHERE outbox_id = ?", [(outbox_id,) for outbox_id, _, _ in rows])
            return len(rows)

        return self._db.submit(work)
