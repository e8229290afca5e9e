"""Job storage: one database, seen through one narrow protocol per user.

:class:`Store` bundles the protocols (:mod:`.protocols`) over a
:class:`~.database.Database`: SQLite in the data directory by default
(:meth:`Store.sqlite`). The code above the connection layer is shared, so
every backend behaves the same.
"""

from __future__ import annotations

from .errors import JobNotFound, NewConnectionRefused, StoreError, StoreFull, StoreUnavailable
from .protocols import ExportQueue, Ingest, JobReads, MetricsReads, Outbox, Retention, WebhookQueue
from .records import (
    ActiveJobs,
    Delivery,
    EventRoute,
    ExportBatch,
    ExportStats,
    IngestResult,
    JobFilter,
    LogIngestResult,
    MetricsSnapshot,
    OutboxEntry,
    SeriesLimits,
    ShippingStats,
    StoredLine,
    WindowStats,
)
from .sqlstore import Store

__all__ = [
    "ActiveJobs",
    "Delivery",
    "EventRoute",
    "ExportBatch",
    "ExportQueue",
    "ExportStats",
    "Ingest",
    "IngestResult",
    "JobFilter",
    "JobNotFound",
    "JobReads",
    "LogIngestResult",
    "MetricsReads",
    "MetricsSnapshot",
    "NewConnectionRefused",
    "Outbox",
    "OutboxEntry",
    "Retention",
    "SeriesLimits",
    "ShippingStats",
    "Store",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "StoredLine",
    "WebhookQueue",
    "WindowStats",
]
