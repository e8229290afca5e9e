"""A metrics snapshot grouped by connection: what each connection's series are made of.

A scrape renders (and keeps) each connection's lines apart from the others'
(see :mod:`.scrape`), so the snapshot is cut into one part per connection
with series of its own, one per connection forgotten while its jobs ran, and
the ``__overflow__`` part of the connections beyond the series budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .aggregates import ConnectionAgg, StreamAgg
from .model import OVERFLOW
from .sources import ConnectionState
from .store import MetricsSnapshot


@dataclass(slots=True)
class ConnectionPart:
    """What one connection's series are made of (or, named ``__overflow__``, those beyond the budget)."""

    name: str
    agg: ConnectionAgg | None  # None: an overflow with jobs in progress or log lines only
    streams: list[StreamAgg] = field(default_factory=list)  # sorted by stream name
    log_counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (family, key) -> count
    rate_limit: float | None = None
    state: ConnectionState | None = None  # what it reports of itself through a poller
    active: dict[str, tuple[int, float]] = field(default_factory=dict)  # status -> (jobs, oldest since)


def connection_parts(snap: MetricsSnapshot) -> list[ConnectionPart]:
    """The snapshot grouped by connection: sorted by name, the overflow (if any) last.

    Jobs in progress of a connection with series of its own that a restricted
    snapshot left out are skipped (its kept lines show them); those of a connection
    forgotten while they ran stay under its name, as a part of their own, so that
    its stuck and pending alerts still see them.
    """
    parts = {c.connection: ConnectionPart(c.connection, c) for c in snap.connections}
    overflow = ConnectionPart(OVERFLOW, snap.overflow)
    for s in sorted(snap.streams, key=lambda s: s.stream):
        parts.get(s.connection, overflow).streams.append(s)
    for (connection, family_name, key), count in snap.log_counts.items():
        target = parts.get(connection, overflow)
        target.log_counts[(family_name, key)] = target.log_counts.get((family_name, key), 0) + count
    for connection, ratio in snap.rate_limits.items():
        if connection in parts:
            parts[connection].rate_limit = ratio
    for connection, state in snap.connection_states.items():
        if connection in parts:
            parts[connection].state = state
    for a in snap.active:  # jobs of connections beyond the budget add up under __overflow__
        if a.admitted is None:
            target = parts.setdefault(a.connection, ConnectionPart(a.connection, None))
        elif not a.admitted:
            target = overflow
        elif a.connection in parts:
            target = parts[a.connection]
        else:
            continue
        count, since = target.active.get(a.status, (0, a.oldest_since))
        target.active[a.status] = (count + a.count, min(since, a.oldest_since))
    ordered = [parts[name] for name in sorted(parts)]
    if overflow.agg is not None or overflow.streams or overflow.log_counts or overflow.active:
        ordered.append(overflow)
    return ordered
