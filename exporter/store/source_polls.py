"""What the pollers keep: each source's cursor, and how its polls went.

A poller reads a vendor's API from where it left off; the place is stored
after the jobs read before it were (they are stored by the same ingest as any
other, in their own transaction), so a restart reads a page again at worst,
whose jobs are then the same records again, counted once. The counts of polls
by outcome and the time of the last good one are read with the metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from ..sources import ConnectionState
from .database import Database, Tx, chunks, marks, upsert
from .rows import add_meta

_CURSOR_SET = (
    "INSERT INTO source_cursors (source, key, value, updated_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (source, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)
_POLL_ADD = (
    "INSERT INTO source_polls (source, outcome, count) VALUES (?, ?, 1)"
    " ON CONFLICT (source, outcome) DO UPDATE SET count = source_polls.count + 1"
)
_STATE_SET = upsert(
    "connection_states", ("connection", "states", "paused", "schedule_seconds", "updated_at"), ("connection",)
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

    def save_states(self, states: Sequence[ConnectionState], at: float) -> None:
        """Store what connections report of themselves; a connection whose report changed is drawn again
        at the next scrape (its series' version moves, as when a job of it is stored)."""
        if not states:
            return
        rows = {
            s.connection: (json.dumps(dict(sorted(s.states.items()))), s.paused, s.schedule_seconds) for s in states
        }

        def work(tx: Tx) -> None:
            changed = []
            for chunk in chunks(list(rows)):
                stored = {
                    name: (states, None if paused is None else bool(paused), schedule)
                    for name, states, paused, schedule in tx.execute(
                        "SELECT connection, states, paused, schedule_seconds FROM connection_states"
                        f" WHERE connection IN ({marks(len(chunk))})",
                        chunk,
                    )
                }
                changed += [name for name in chunk if stored.get(name) != rows[name]]
            if not changed:
                return
            tx.executemany(_STATE_SET, [(name, *rows[name], at) for name in changed])
            add_meta(tx, "connections_version", 1)
            for chunk in chunks(changed):
                tx.execute(
                    "UPDATE connections SET version = (SELECT value FROM meta WHERE key = 'connections_version')"
                    f" WHERE connection IN ({marks(len(chunk))})",
                    chunk,
                )

        self._db.submit(work)
