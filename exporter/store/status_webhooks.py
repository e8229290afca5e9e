"""The status webhooks' queue: each status change waiting for each endpoint.

The :class:`~.protocols.WebhookQueue` protocol.

Ingest queues the events (:mod:`.ingest`); the deliverer takes the due ones,
oldest first and one at a time per job, so an endpoint sees a job's changes
in order; a failed attempt holds back the whole endpoint until its retry.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..timeutil import Clock
from .database import Database, Tx, fetch_all, marks
from .records import Delivery


class WebhookQueue:
    def __init__(self, database: Database, *, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    def due(self, endpoint: str, now: float, limit: int = 100) -> list[Delivery]:
        sql = (
            "SELECT q.id, q.endpoint, q.job_id, q.event_id, q.payload, q.created_at, q.attempts"
            " FROM webhook_queue q WHERE q.endpoint = ? AND q.next_attempt_at <= ? AND NOT EXISTS"
            " (SELECT 1 FROM webhook_queue p WHERE p.endpoint = q.endpoint AND p.job_id = q.job_id AND p.id < q.id)"
            " ORDER BY q.id LIMIT ?"
        )
        return [Delivery(*row) for row in fetch_all(self._db, sql, (endpoint, now, limit))]

    def orphans(self, endpoints: Sequence[str]) -> int:
        now = self._clock()
        where = f"endpoint NOT IN ({marks(len(endpoints)) or 'NULL'})"
        return self._db.submit(
            lambda tx: dead_letter_webhooks(tx, where, tuple(endpoints), "endpoint no longer configured", now)
        )

    def delivered(self, delivery: Delivery) -> None:
        def work(tx: Tx) -> None:
            tx.execute("DELETE FROM webhook_queue WHERE id = ?", (delivery.id,))
            tx.execute("DELETE FROM webhook_endpoints WHERE endpoint = ?", (delivery.endpoint,))
            _count(tx, delivery.endpoint, "delivered")

        self._db.submit(work)

    def retry(self, delivery: Delivery, next_attempt_at: float, error: str) -> None:
        def work(tx: Tx) -> None:
            tx.execute(
                "UPDATE webhook_queue SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?",
                (next_attempt_at, error, delivery.id),
            )
            tx.execute(
                "UPDATE webhook_queue SET next_attempt_at = ? WHERE endpoint = ? AND next_attempt_at < ?",
                (next_attempt_at, delivery.endpoint, next_attempt_at),
            )
            tx.execute(
                "INSERT INTO webhook_endpoints (endpoint, blocked_until) VALUES (?, ?) ON CONFLICT (endpoint)"
                " DO UPDATE SET blocked_until = excluded.blocked_until",
                (delivery.endpoint, next_attempt_at),
            )
            _count(tx, delivery.endpoint, "failed")

        self._db.submit(work)

    def dead(self, delivery: Delivery, reason: str) -> None:
        now = self._clock()
        self._db.submit(lambda tx: dead_letter_webhooks(tx, "id = ?", (delivery.id,), reason, now))

    def dead_letters(self, limit: int = 1000) -> list[tuple[Delivery, str]]:
        sql = (
            "SELECT id, endpoint, job_id, event_id, payload, created_at, attempts, reason FROM webhook_dead_letters"
            " ORDER BY id DESC LIMIT ?"
        )
        return [(Delivery(*row[:7]), str(row[7])) for row in reversed(fetch_all(self._db, sql, (limit,)))]


def _count(tx: Tx, endpoint: str, outcome: str) -> None:
    tx.execute(
        "INSERT INTO webhook_counts (endpoint, outcome, count) VALUES (?, ?, 1)"
        " ON CONFLICT (endpoint, outcome) DO UPDATE SET count = webhook_counts.count + 1",
        (endpoint, outcome),
    )


def dead_letter_webhooks(tx: Tx, where: str, params: tuple[object, ...], reason: str, now: float) -> int:
    """Move the queued deliveries matching ``where`` to the dead letters, counted per endpoint."""
    rows = tx.execute(f"SELECT id, endpoint FROM webhook_queue WHERE {where}", params).fetchall()
    tx.execute(
        "INSERT INTO webhook_dead_letters (id, endpoint, job_id, event_id, payload, created_at, attempts,"
        " reason, dead_at) SELECT id, endpoint, job_id, event_id, payload, created_at, attempts, ?, ?"
        f" FROM webhook_queue WHERE {where}"
        " ON CONFLICT (id) DO UPDATE SET reason = excluded.reason, dead_at = excluded.dead_at",
        (reason, now, *params),
    )
    tx.execute(f"DELETE FROM webhook_queue WHERE {where}", params)
    for _id, endpoint in rows:
        _count(tx, endpoint, "dead_lettered")
    return len(rows)
