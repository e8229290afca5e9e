"""The plain data the store takes and hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from ..aggregates import ConnectionAgg, StreamAgg
from ..joblogs import LogLine
from ..model import Job, ValidationError
from ..sources import ConnectionState


@dataclass(slots=True)
class IngestResult:
    """What happened to each record of one request, in order.

    ``errors``: why the store refused a record (outcome ``rejected``), by its
    place in the request: a record valid alone that the job stored before
    would take past a bound (streams, totals). The others are stored.
    """

    outcomes: list[str] = field(default_factory=list)
    errors: dict[int, ValidationError] = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return self.outcomes.count(outcome)


@dataclass(frozen=True, slots=True)
class LogIngestResult:
    accepted: int
    unchanged: int


@dataclass(frozen=True, slots=True)
class ActiveJobs:
    """Jobs of one connection that are pending or running now."""

    connection: str
    status: str
    count: int
    oldest_since: float
    # Whether the connection has series of its own; None: it was forgotten while these jobs were
    # pending or running (they stay under its name until they finish or age out).
    admitted: bool | None = True


@dataclass(frozen=True, slots=True)
class OverflowedConnection:
    """A connection beyond the series budget: what the overflow alerts need of it."""

    connection: str
    consecutive_failures: int
    healthy_since: float  # its latest success, or its first-seen time while it never succeeded


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One record waiting to be shipped: a stored log line, or a finished job's summary (``line`` is None)."""

    id: int
    job: Job
    line: LogLine | None
    received_at: float


@dataclass(frozen=True, slots=True)
class ShippingStats:
    """The shipper's counters, shared by every worker through the store."""

    waiting: int = 0
    exported: int = 0
    failed: int = 0
    dead_lettered: int = 0
    last_success: float | None = None


@dataclass(frozen=True, slots=True)
class EventRoute:
    """A webhook endpoint's filters: which status changes are queued for it (empty: all)."""

    endpoint: str
    statuses: frozenset[str] = frozenset()
    connections: frozenset[str] = frozenset()

    def wants(self, job: Job) -> bool:
        return (not self.statuses or job.status in self.statuses) and (
            not self.connections or job.connection_name in self.connections
        )


@dataclass(frozen=True, slots=True)
class ExportBatch:
    """Finished jobs sealed together into one pair of S3 objects (jobs and logs).

    ``version`` grows when a job of the batch changes or gains log lines after
    sealing, so an upload of an older version does not count as the export.
    """

    id: int
    day: str  # YYYY-MM-DD (UTC) the jobs finished on
    name: str  # object name, stable once sealed
    version: int
    jobs: list[Job] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ExportStats:
    exported_objects: int = 0
    failed_objects: int = 0
    last_success: float | None = None
    oldest_waiting: float | None = None  # finish time of the oldest finished job not exported yet


@dataclass(frozen=True, slots=True)
class Delivery:
    """One status-change event waiting for one webhook endpoint."""

    id: int
    endpoint: str
    job_id: str
    event_id: str
    payload: str  # the JSON body, fixed when the change was recorded
    created_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a listing wants; empty tuples and None mean "any"."""

    connections: tuple[str, ...] = ()  # connection names
    statuses: tuple[str, ...] = ()
    since: float | None = None  # job_time >= since
    until: float | None = None  # job_time < until
    job_type: str | None = None


@dataclass(frozen=True, slots=True)
class StoredLine:
    """A stored log line with its id (the cursor of a log page) and receipt time."""

    id: int
    line: LogLine
    received_at: float


@dataclass(slots=True)
class WindowStats:
    """One connection's jobs finished in a time window."""

    jobs: dict[str, int] = field(default_factory=dict)  # final status -> jobs
    duration_sum: float = 0.0
    duration_count: int = 0


@dataclass(frozen=True, slots=True)
class SeriesLimits:
    """The series budget: connections and streams per connection with series of their own.

    Jobs beyond it are stored and counted as usual, and their counters also add
    up under ``connection="__overflow__"`` / ``stream="__overflow__"``, so a sum
    over any counter stays exact while the number of series stays bounded.
    """

    max_connections: int = 10_000
    max_streams_per_connection: int = 100
    #: Connections one ingest token may make known per clock hour (0: no limit): one request cannot
    #: take every place of the budget with made-up names.
    new_connections_per_hour: int = 0


OVERFLOW_KINDS: Final = ("connection", "stream")
LEVEL_FAMILY: Final = "level"  # log counts: lines by level
ERROR_FAMILY: Final = "error"  # log counts: errors by kind


#: The background roles, each done by one process at a time (among workers and replicas).
METRICS_ROLE: Final = "metrics"  # exposes the store's metrics when replicas share a database
SHIPPER_ROLE: Final = "shipper"  # ships the log outbox
S3_ROLE: Final = "s3"  # exports finished jobs to S3
PURGE_ROLE: Final = "purge"  # applies retention
WEBHOOKS_ROLE: Final = "webhooks"  # delivers status changes to the webhook endpoints
AIRBYTE_POLL_ROLE: Final = "airbyte_poll"  # polls Airbyte's API for jobs
FIVETRAN_POLL_ROLE: Final = "fivetran_poll"  # polls Fivetran's API for connections
#: Append only: a role's place is its PostgreSQL lock id.
ROLES: Final = (METRICS_ROLE, SHIPPER_ROLE, S3_ROLE, PURGE_ROLE, WEBHOOKS_ROLE, AIRBYTE_POLL_ROLE, FIVETRAN_POLL_ROLE)


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """What this replica shows on ``/metrics`` when several share one database.

    Every replica reads the same store, so only one of them (the holder of the
    ``metrics`` role) exposes the store's metrics: a sum over every scraped
    replica stays exact. ``roles``: each background role and whether this
    replica holds it (None on a store no other replica shares).
    """

    replica: str
    exposes_store: bool = True
    roles: dict[str, bool] | None = None


@dataclass(slots=True)
class MetricsSnapshot:
    """All a scrape needs, read in one consistent transaction."""

    connections: list[ConnectionAgg]
    streams: list[StreamAgg]
    active: list[ActiveJobs]
    ingest_counts: dict[tuple[str, str], int]
    stored_jobs: int
    # (connection, family, key) -> count; family "level" (key: info/warn/error/debug) or "error" (key: kind)
    log_counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    rate_limits: dict[str, float] = field(default_factory=dict)  # connection -> latest usage ratio
    shipping: ShippingStats = field(default_factory=ShippingStats)
    rejections: dict[tuple[str, str], int] = field(default_factory=dict)  # (endpoint, field) -> records
    store_bytes: int | None = None  # on-disk size, when the store has one
    purged_jobs: int = 0
    oldest_finished_at: float | None = None
    export: ExportStats = field(default_factory=ExportStats)
    webhook_counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (endpoint, outcome) -> deliveries
    webhook_depth: dict[str, int] = field(default_factory=dict)  # endpoint -> events waiting
    # Counters of every connection beyond the series budget, added up (None: none so far).
    overflow: ConnectionAgg | None = None
    overflow_jobs: dict[str, int] = field(default_factory=dict)  # kind -> jobs counted into an overflow series
    overflowed: list[OverflowedConnection] = field(default_factory=list)  # connections beyond the budget
    notices: dict[tuple[str, str], int] = field(default_factory=dict)  # (source, kind) -> webhook deliveries
    polls: dict[tuple[str, str], int] = field(default_factory=dict)  # (source, outcome) -> polls of its API
    last_polls: dict[str, float] = field(default_factory=dict)  # source -> time of its last good poll
    # connection -> what it reports of itself through a poller: (states by part, paused, schedule seconds)
    connection_states: dict[str, ConnectionState] = field(default_factory=dict)
