"""The owner of the background work: the threads a configuration asks for, started and stopped together.

The app factory only builds this object; whoever runs the app starts it
(gunicorn's worker hooks under ``serve``, a ``with`` block in a test) and
stops it, so no thread outlives the process's wish to stop. Each worker
works only while it holds its role lock, so any number of processes (and,
on PostgreSQL, replicas) may start theirs.
"""

from __future__ import annotations

from types import TracebackType

from .airbyte_poller import AirbytePoller
from .config import Config
from .fivetran_poller import FivetranPoller
from .logship import LogShipper
from .purger import Purger
from .s3export import S3Exporter
from .singleton import SingletonWorker
from .status_webhooks import WebhookDeliverer
from .store import Store
from .store.records import METRICS_ROLE
from .timeutil import Clock, system_clock


class MetricsRole(SingletonWorker):
    """Holds the metrics role: while it does, this replica's ``/metrics`` shows the store.

    Several replicas read the same database; if each showed the store's
    metrics, a sum over the replicas would count every job once per replica.
    Holding the role is all the work: its lock proves itself alive at each
    step, and another replica takes the role when this one goes.
    """

    NAME = "calabi-metrics-role"
    HOLD: float = 1.0  # seconds between checks that the role is still held

    def __init__(self, store: Store) -> None:
        super().__init__(store.role_lock(METRICS_ROLE))

    def step(self) -> float:
        return self.HOLD


class BackgroundWorkers:
    """The purge; the log shipper, S3 exporter, webhook sender and source pollers when configured; the
    metrics role when replicas share the store."""

    def __init__(self, store: Store, config: Config, *, clock: Clock = system_clock) -> None:
        self.metrics = MetricsRole(store) if store.database.replicated else None
        self.purger = Purger(store, config, clock=clock)
        self.shipper = LogShipper(store, config, clock=clock) if config.otlp_logs_endpoint else None
        self.s3_exporter = S3Exporter(store, config, clock=clock) if config.s3_export_enabled else None
        self.webhooks = WebhookDeliverer(store, config, clock=clock) if config.webhooks else None
        self.airbyte = AirbytePoller(store, config, clock=clock) if "airbyte" in config.pollers else None
        self.fivetran = FivetranPoller(store, config, clock=clock) if "fivetran" in config.pollers else None
        self._started = False

    @property
    def workers(self) -> list[SingletonWorker]:
        found = (self.metrics, self.purger, self.shipper, self.s3_exporter, self.webhooks, self.airbyte, self.fivetran)
        return [worker for worker in found if worker is not None]

    def start(self) -> None:
        if not self._started:
            self._started = True
            for worker in self.workers:
                worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every worker (each finishes its step) and release its role."""
        if self._started:
            self._started = False
            for worker in self.workers:
                worker.stop(timeout)

    def __enter__(self) -> BackgroundWorkers:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
