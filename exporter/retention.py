"""Retention: finished jobs older than the plan's window are purged in the background.

Only job rows, their streams and log lines go; the per-connection and
per-stream aggregates stay, so no counter on ``/metrics`` moves. The purge
runs in small transactions with a pause between them, so ingestion and
scrapes never wait long behind it, and in one worker process at a time.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from .config import Config
from .logship import ShipperLock
from .store import Store, StoreError
from .timeutil import Clock, system_clock

log = logging.getLogger(__name__)
LOCK_FILENAME: Final = "calabi-exporter-purge.lock"


class Purger:
    """Deletes finished jobs older than ``config.retention_seconds``."""

    BATCH: Final = 1000
    PAUSE: Final = 0.05  # between batches: the write lock is free for ingestion
    INTERVAL: Final = 60.0

    def __init__(self, store: Store, config: Config, *, clock: Clock = system_clock) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self._lock = ShipperLock(config.data_path, LOCK_FILENAME)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def purge_once(self, max_batches: int = 1_000_000) -> int:
        """Purge everything past the window now (in batches); returns the jobs deleted."""
        cutoff = self._clock() - self._config.retention_seconds
        total = 0
        for _ in range(max_batches):
            deleted = self._store.purge(cutoff, self.BATCH)
            total += deleted
            if deleted < self.BATCH or self._stop.wait(self.PAUSE):
                break
        return total

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="calabi-purger", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._lock.release()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._lock.acquire():
                try:
                    deleted = self.purge_once()
                    if deleted:
                        log.info("retention: purged %d jobs", deleted)
                except StoreError as error:
                    log.error("retention: purge failed: %s", error)
            self._stop.wait(self.INTERVAL)
