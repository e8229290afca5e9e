"""The purger: finished jobs older than the plan's window are purged in the background.

So are jobs still pending or running that nothing has changed for
``retention.unfinished_job_max_age_seconds`` (default 7 days): the product
dropped them, or a client made them up, and they would otherwise hold a place
in the series budget and keep a pending or stuck alert firing for good.

Only job rows, their streams and log lines go; the per-connection and
per-stream aggregates stay, so no counter on ``/metrics`` moves. With S3
export on, a job goes only once it is exported, so an S3 outage defers the
purge instead of losing history. Dead letters (log records and webhook
deliveries) older than the window go too. The purge
runs in small transactions with a pause between them, so ingestion and
scrapes never wait long behind it, and in one worker process at a time.

This module schedules the purge; what each purge deletes is the store's
(:mod:`.store.retention`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from .config import Config
from .singleton import SingletonWorker
from .store import Store, StoreError
from .store.records import PURGE_ROLE
from .timeutil import Clock, system_clock

log = logging.getLogger(__name__)


class Purger(SingletonWorker):
    """Deletes finished jobs older than ``config.retention_seconds``, and abandoned unfinished ones."""

    NAME = "calabi-purger"
    BATCH: Final = 1000
    PAUSE: Final = 0.05  # between batches: the write lock is free for ingestion
    INTERVAL: Final = 60.0

    def __init__(self, store: Store, config: Config, *, clock: Clock = system_clock) -> None:
        self._retention = store.retention
        self._config = config
        self._clock = clock
        super().__init__(store.role_lock(PURGE_ROLE))

    def purge_once(self, max_batches: int = 1_000_000) -> int:
        """Purge everything past the window and every abandoned job now (in batches); returns the jobs deleted.

        Then the places in the series budget this freed (or a raised limit made) go
        to the connections waiting beyond it.
        """
        now = self._clock()
        cutoff = now - self._config.retention_seconds
        exported_only = self._config.s3_export_enabled
        self._retention.purge_dead_letters(cutoff)
        total = self._batches(
            lambda: self._retention.purge(cutoff, self.BATCH, exported_only=exported_only), max_batches
        )
        abandoned = now - self._config.retention_unfinished_job_max_age_seconds
        total += self._batches(lambda: self._retention.purge_unfinished(abandoned, self.BATCH), max_batches)
        self._retention.purge_bookkeeping(cutoff)
        self._retention.readmit()
        return total

    def _batches(self, purge: Callable[[], int], max_batches: int) -> int:
        """Call ``purge`` until it deletes less than a batch, pausing between calls; returns the jobs deleted."""
        total = 0
        for _ in range(max_batches):
            deleted = purge()
            total += deleted
            if deleted < self.BATCH or self._stop.wait(self.PAUSE):
                break
        return total

    def step(self) -> float:
        try:
            deleted = self.purge_once()
        except StoreError as error:
            log.error("retention: purge failed: %s", error)
        else:
            if deleted:
                log.info("retention: purged %d jobs", deleted)
        return self.INTERVAL
