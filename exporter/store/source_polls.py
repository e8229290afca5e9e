"""What the pollers keep: each source's cursor, and how its polls went.

A poller reads a vendor's API from where it left off; the place is stored
after the jobs read before it were (they are stored by the same ingest as any
other, in their own transaction), so a restart reads a page again at worst,
whose jobs are then the same records again, counted once. The counts of polls
by outcome and the time of the last good one are read with the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping

from .database import Database, Tx

_CURSOR_SET = (
    "INSERT INTO source_cursors (source, key, value, updated_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (source, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)
_POLL_ADD = (
    "INSERT INTO source_polls (source, outcome, count) VALUES (?, ?, 1)"
    " ON CONFLICT (source, outcome) DO UPDATE SET count = source_polls.count + 1"
)
_LAST_OK_SET = (
    "INSERT INTO source_poll_health (source, last_success) VALUES (?, ?)"
    " ON CONFLICT (source) DO UPDATE SET last_success = excluded.last_success"
)


class SourcePolls:
    def __init__(self, database: Database) -> None:
        self._db = database

    def cursors(self, source: str) -> dict[str, str]:
        """Everything ``source``'s poller stored of where it is (key -> value)."""
        with self._db.read() as tx:
            return {k: v for k, v in tx.execute("SELECT key, value FROM source_cursors WHERE source = ?", (source,))}

    def save_cursors(self, source: str, values: Mapping[str, str], at: float) -> None:
        """Store where ``source``'s poller is, in one transaction."""
        if values:

            def work(tx: Tx) -> None:
                tx.executemany(_CURSOR_SET, [(source, key, value, at) for key, value in values.items()])

            self._db.submit(work)

    def polled(self, source: str, outcome: str, at: float) -> None:
        """Count one poll of ``source`` by its outcome; a good one (``ok``) is the last good poll at ``at``."""

        def work(tx: Tx) -> None:
            tx.execute(_POLL_ADD, (source, outcome))
            if outcome == "ok":
                tx.execute(_LAST_OK_SET, (source, at))

        self._db.submit(work)
