"""What a scrape reads: every aggregate, in one read transaction (the :class:`~.protocols.MetricsReads` protocol).

Nothing here scans the job history: the per-connection and per-stream
aggregates are kept up to date at ingest, and the few other figures come
from indexes or one-row counters.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from operator import attrgetter

from ..model import OVERFLOW
from ..sources import ConnectionState
from .database import Database, Tx, chunks, marks
from .records import (
    METRICS_ROLE,
    OVERFLOW_KINDS,
    ROLES,
    ActiveJobs,
    ExportStats,
    MetricsSnapshot,
    OverflowedConnection,
    ReplicaView,
    ShippingStats,
)
from .rows import (
    CONNECTION_SELECT,
    OVERFLOW_SELECT,
    STREAM_AGG_SELECT,
    connection_from_row,
    read_meta,
    stream_agg_from_row,
)


class MetricsReads:
    def __init__(self, database: Database, *, s3_export: bool) -> None:
        self._db = database
        self._s3_export = s3_export

    def replica_view(self) -> ReplicaView:
        if not self._db.replicated:
            return ReplicaView(self._db.replica)
        with self._db.read() as tx:
            holders = self._db.role_holders(tx)
        me = self._db.replica
        roles = {role: holders.get(role) == me for role in ROLES}
        return ReplicaView(me, exposes_store=roles[METRICS_ROLE], roles=roles)

    def versions(self) -> dict[str, int]:
        with self._db.read() as tx:
            return {
                name: int(v) for name, v in tx.execute("SELECT connection, version FROM connections WHERE admitted")
            }

    def snapshot(self, only: Collection[str] | None = None) -> MetricsSnapshot:
        with self._db.read() as tx:
            # Only connections within the budget have series; the others are in the overflow row.
            if only is None:
                connections = [connection_from_row(r) for r in tx.execute(CONNECTION_SELECT + " WHERE admitted")]
                streams = [stream_agg_from_row(row) for row in tx.execute(STREAM_AGG_SELECT)]
                log_counts = {(c, f, k): int(n) for c, f, k, n in tx.execute(_LOG_COUNTS)}
                rate_limits = {c: r for c, r in tx.execute("SELECT connection, ratio FROM rate_limits")}
            else:  # these connections (and the overflow) only: a scrape re-rendering what changed
                names = [*only, OVERFLOW]
                connections, streams, log_counts, rate_limits = [], [], {}, {}
                for chunk in chunks(names):
                    where = f" WHERE connection IN ({marks(len(chunk))})"
                    rows = tx.execute(CONNECTION_SELECT + where + " AND admitted", chunk)
                    connections += [connection_from_row(row) for row in rows]
                    streams += [stream_agg_from_row(row) for row in tx.execute(STREAM_AGG_SELECT + where, chunk)]
                    log_counts.update(((c, f, k), int(n)) for c, f, k, n in tx.execute(_LOG_COUNTS + where, chunk))
                    rate_limits.update(tx.execute("SELECT connection, ratio FROM rate_limits" + where, chunk))
            overflow_row = tx.execute(OVERFLOW_SELECT).fetchone()
            overflow_jobs = {kind: read_meta(tx, f"overflow_jobs_{kind}") for kind in OVERFLOW_KINDS}
            active = [
                ActiveJobs(name, status, int(count), oldest, None if admitted is None else bool(admitted))
                for name, status, count, oldest, admitted in tx.execute(_ACTIVE)
            ]
            overflowed = [
                OverflowedConnection(name, int(failures), since) for name, failures, since in tx.execute(_OVERFLOWED)
            ]
            ingest = {(e, o): int(n) for e, o, n in tx.execute("SELECT endpoint, outcome, count FROM ingest_counts")}
            stored = read_meta(tx, "stored_jobs")
            shipping = _shipping_stats(tx)
            rejections = {(e, f): int(n) for e, f, n in tx.execute("SELECT endpoint, field, count FROM rejections")}
            notices = {(c, k): int(n) for c, k, n in tx.execute("SELECT source, kind, count FROM source_notices")}
            polls = {(s, o): int(n) for s, o, n in tx.execute("SELECT source, outcome, count FROM source_polls")}
            last_polls = {s: t for s, t in tx.execute("SELECT source, last_success FROM source_poll_health")}
            if only is None:
                state_rows = tx.execute(_STATES).fetchall()
            else:  # the connections re-rendered only
                state_rows = []
                for chunk in chunks(list(only)):
                    state_rows += tx.execute(_STATES + f" WHERE connection IN ({marks(len(chunk))})", chunk).fetchall()
            states = {
                name: ConnectionState(name, json.loads(parts), None if paused is None else bool(paused), schedule)
                for name, parts, paused, schedule in state_rows
            }
            purged = read_meta(tx, "purged_jobs")
            oldest = tx.execute("SELECT min(finished_at) FROM jobs WHERE finished_at IS NOT NULL").fetchone()[0]
            export = _export_stats(tx) if self._s3_export else ExportStats()
            webhook_counts = {
                (e, o): int(n) for e, o, n in tx.execute("SELECT endpoint, outcome, count FROM webhook_counts")
            }
            webhook_depth = {
                e: int(n) for e, n in tx.execute("SELECT endpoint, count(*) FROM webhook_queue GROUP BY endpoint")
            }
        # In name order whatever the engine and its collation (SQLite returns them so already).
        connections.sort(key=attrgetter("connection"))
        streams.sort(key=attrgetter("connection", "stream"))
        active.sort(key=attrgetter("status", "connection"))
        return MetricsSnapshot(
            connections,
            streams,
            active,
            ingest,
            stored,
            log_counts,
            rate_limits,
            shipping,
            rejections,
            self._db.size_bytes(),
            purged,
            oldest,
            export,
            webhook_counts,
            webhook_depth,
            None if overflow_row is None else connection_from_row(overflow_row),
            overflow_jobs,
            overflowed,
            notices,
            polls,
            last_polls,
            states,
        )


_LOG_COUNTS = "SELECT connection, family, key, count FROM log_counts"
_STATES = "SELECT connection, states, paused, schedule_seconds FROM connection_states"
#: Jobs pending or running per connection, and whether it has series of its own (NULL: forgotten since).
_ACTIVE = (
    "SELECT j.connection_name, j.status, count(*), min(j.active_since), c.admitted"
    " FROM jobs j LEFT JOIN connections c ON c.connection = j.connection_name"
    " WHERE j.status IN ('pending', 'running') GROUP BY j.status, j.connection_name, c.admitted"
)
#: The connections beyond the budget, with what their failing and staleness alerts compare.
_OVERFLOWED = (
    "SELECT connection, consecutive_failures, coalesce(last_success_at, first_seen) FROM connections WHERE NOT admitted"
)


def _meta(tx: Tx, prefix: str) -> dict[str, float]:
    return {key: value for key, value in tx.execute("SELECT key, value FROM meta WHERE key LIKE ?", (prefix + "%",))}


def _shipping_stats(tx: Tx) -> ShippingStats:
    meta = _meta(tx, "log_")
    cursor = read_meta(tx, "outbox_cursor")
    # The outbox keeps only what is past the cursor (shipped records are deleted), so its highest id
    # less the cursor is what waits; read from the primary key, not by counting the backlog.
    newest = tx.execute("SELECT max(id) FROM outbox").fetchone()[0]
    return ShippingStats(
        waiting=max(int(newest or 0) - cursor, 0),
        exported=int(meta["log_exported"]),
        failed=int(meta["log_failed"]),
        dead_lettered=int(meta["log_dead_lettered"]),
        last_success=meta.get("log_export_last_success"),
    )


def _export_stats(tx: Tx) -> ExportStats:
    meta = _meta(tx, "s3_")
    unsealed = tx.execute(
        "SELECT min(finished_at) FROM jobs WHERE finished_at IS NOT NULL AND export_batch IS NULL"
    ).fetchone()[0]
    unexported = tx.execute("SELECT min(oldest_finished) FROM export_batches WHERE exported_at IS NULL").fetchone()[0]
    waiting = [t for t in (unsealed, unexported) if t is not None]
    return ExportStats(
        exported_objects=int(meta["s3_exported_objects"]),
        failed_objects=int(meta["s3_failed_objects"]),
        last_success=meta.get("s3_export_last_success"),
        oldest_waiting=min(waiting) if waiting else None,
    )
