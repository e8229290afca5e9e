"""Background work that one process at a time does: log shipping, S3 export, webhooks, the purge.

Every worker process (and every replica) may run these threads; the store's
role lock (an ``flock`` next to the SQLite file, a PostgreSQL advisory lock)
lets exactly one of them work at a time, and another takes over when that
process goes away.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from .store.database import RoleLock

log = logging.getLogger(__name__)


class SingletonWorker:
    """A daemon thread that calls :meth:`step` while it holds its role lock.

    ``step`` returns how many seconds to wait before the next call; an exception
    from it is logged and waited out for ``ERROR_WAIT`` seconds.
    """

    NAME: str = "calabi-worker"
    LOCK_POLL: Final = 5.0  # another process works; try to take over this often
    ERROR_WAIT: float = 30.0

    def __init__(self, lock: RoleLock) -> None:
        self._lock = lock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the worker holds besides the lock (after the thread stopped)."""

    @property
    def running(self) -> bool:
        """Whether the thread is alive (working, or waiting for its role)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.NAME, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._lock.release()
        self.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._lock.acquire():
                self._stop.wait(self.LOCK_POLL)
                continue
            try:
                wait = self.step()
            except Exception:  # one failed step must not end the thread
                log.exception("%s step failed", self.NAME)
                wait = self.ERROR_WAIT
            if wait:
                self._stop.wait(wait)
