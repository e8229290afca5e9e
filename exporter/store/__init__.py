"""Job storage behind one small interface.

The exporter talks to :class:`Store` only. SQLite (one file in the data
directory) is the default; the interface is narrow enough that a PostgreSQL
implementation can serve several exporter replicas.
"""

from __future__ import annotations

from .base import (
    ActiveJobs,
    Delivery,
    EventRoute,
    ExportBatch,
    ExportStats,
    IngestResult,
    JobFilter,
    JobNotFound,
    LogIngestResult,
    MetricsSnapshot,
    OutboxEntry,
    SeriesLimits,
    ShippingStats,
    Store,
    StoredLine,
    StoreError,
    StoreFull,
    WindowStats,
)
from .sqlite import SQLiteStore

__all__ = [
    "ActiveJobs",
    "Delivery",
    "EventRoute",
    "ExportBatch",
    "ExportStats",
    "IngestResult",
    "JobFilter",
    "JobNotFound",
    "LogIngestResult",
    "MetricsSnapshot",
    "OutboxEntry",
    "SQLiteStore",
    "SeriesLimits",
    "ShippingStats",
    "Store",
    "StoreError",
    "StoreFull",
    "StoredLine",
    "WindowStats",
]
