"""The store: one database seen through the protocols its users need.

Both backends run the same code above the connection layer: the ingest rules,
the reads, the queues. Only :class:`~.database.Database` differs, so a
behaviour checked on one backend holds on the other.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TypedDict, Unpack

from ..config import Config
from ..timeutil import Clock, system_clock
from .database import Database, RoleLock
from .export import ExportQueue
from .ingest import IngestRules
from .metrics import MetricsReads
from .outbox import Outbox
from .reads import JobReads
from .records import EventRoute, SeriesLimits
from .retention import Retention
from .source_polls import SourcePolls
from .status_webhooks import WebhookQueue


def replica_name(server_pid: int | None = None) -> str:
    """This replica: the host, and the pid of the server process whose workers make up the replica."""
    return f"{socket.gethostname()}:{server_pid if server_pid is not None else os.getpid()}"


class StoreOptions(TypedDict, total=False):
    """What a store does besides keeping jobs; what is left out is as in :data:`DEFAULT_OPTIONS`.

    ``outbox``: keep every new log line and finished job in the outbox for the log shipper.
    ``webhook_routes``: queue every job status change for each endpoint whose filters it
    passes, in the transaction that records the change. ``s3_export``: keep the index the
    export reads, and report the export's progress in the metrics snapshot. ``limits``: the
    series budget.
    """

    clock: Clock
    outbox: bool
    webhook_routes: Sequence[EventRoute]
    s3_export: bool
    limits: SeriesLimits


DEFAULT_OPTIONS: Final[StoreOptions] = {
    "clock": system_clock,
    "outbox": False,
    "webhook_routes": (),
    "s3_export": False,
    "limits": SeriesLimits(),
}


def _options(options: StoreOptions) -> StoreOptions:
    return {**DEFAULT_OPTIONS, **options}


class Store:
    """Every protocol of the store over one :class:`~.database.Database` (options: :class:`StoreOptions`)."""

    def __init__(self, database: Database, **given: Unpack[StoreOptions]) -> None:
        options = _options(given)
        clock = options["clock"]
        self.database = database
        self.ingest = IngestRules(
            database,
            clock=clock,
            limits=options["limits"],
            outbox=options["outbox"],
            webhook_routes=options["webhook_routes"],
        )
        self.reads = JobReads(database)
        self.metrics = MetricsReads(database, s3_export=options["s3_export"])
        self.outbox = Outbox(database, clock=clock)
        self.exports = ExportQueue(database, clock=clock)
        self.status_webhooks = WebhookQueue(database, clock=clock)
        self.retention = Retention(database, clock=clock, limits=options["limits"])
        self.source_polls = SourcePolls(database)

    @classmethod
    def sqlite(cls, data_dir: Path, *, synchronous: str = "full", **options: Unpack[StoreOptions]) -> Store:
        """The embedded store: one SQLite file in ``data_dir``."""
        from .sqlite import SQLiteDatabase

        s3_export = _options(options)["s3_export"]
        database = SQLiteDatabase(data_dir, synchronous=synchronous, s3_export=s3_export, replica=replica_name())
        return cls(database, **options)

    @classmethod
    def postgres(
        cls,
        url: str,
        *,
        replica: str | None = None,
        pool_size: int | None = None,
        connect_seconds: float | None = None,
        **options: Unpack[StoreOptions],
    ) -> Store:
        """A store in a PostgreSQL database that other replicas may share.

        ``pool_size`` and ``connect_seconds`` (how long start-up waits for a database that
        does not answer): as configured by default.
        """
        from .postgres import PostgresDatabase

        defaults = Config()
        if pool_size is None:
            pool_size = defaults.database_pool_size
        if connect_seconds is None:
            connect_seconds = defaults.database_connect_timeout_seconds

        s3_export = _options(options)["s3_export"]
        database = PostgresDatabase(
            url,
            replica=replica or replica_name(),
            pool_size=pool_size,
            connect_seconds=connect_seconds,
            s3_export=s3_export,
        )
        return cls(database, **options)

    @classmethod
    def from_config(cls, config: Config, *, clock: Clock = system_clock, replica: str | None = None) -> Store:
        """The store the configuration names (``database_url``, else SQLite), with the queues its features need.

        ``replica``: this process's replica, recorded with the background roles it takes (default:
        :func:`replica_name`).
        """
        options: StoreOptions = {
            "clock": clock,
            "outbox": bool(config.otlp_logs_endpoint),
            "webhook_routes": [EventRoute(e.name, e.statuses, e.connections) for e in config.webhooks],
            "s3_export": config.s3_export_enabled,
            "limits": SeriesLimits(
                config.limits_max_connections,
                config.limits_max_streams_per_connection,
                config.limits_new_connections_per_hour,
            ),
        }
        if config.database_url:
            return cls.postgres(
                config.database_url,
                replica=replica,
                pool_size=config.database_pool_size,
                connect_seconds=config.database_connect_timeout_seconds,
                **options,
            )
        return cls.sqlite(config.data_path, synchronous=config.sqlite_synchronous, **options)

    def role_lock(self, role: str) -> RoleLock:
        """The lock that makes one process at a time (among workers and replicas) do ``role``."""
        return self.database.role_lock(role)

    def check_ready(self) -> None:
        """Raise :class:`~.errors.StoreError` unless the store can be read and written."""
        self.database.check_ready()

    def close(self) -> None:
        self.database.close()
