"""Background work that one process per data directory does: the log shipper and the purge.

Under gunicorn every worker process builds the app and starts these threads;
a non-blocking ``flock`` on a file next to the store lets exactly one of them
work at a time, and another takes over when that process goes away.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)


class DirectoryLock:
    """A non-blocking exclusive ``flock`` on ``data_dir/filename``, held until released."""

    def __init__(self, data_dir: Path, filename: str) -> None:
        self._path = Path(data_dir) / filename
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the lock
            self._fd = None


class SingletonWorker:
    """A daemon thread that calls :meth:`step` while it holds the directory lock.

    ``step`` returns how many seconds to wait before the next call; an exception
    from it is logged and waited out for ``ERROR_WAIT`` seconds.
    """

    NAME: str = "calabi-worker"
    LOCK_POLL: Final = 5.0  # another process works; try to take over this often
    ERROR_WAIT: float = 30.0

    def __init__(self, lock: DirectoryLock) -> None:
        self._lock = lock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the worker holds besides the lock (after the thread stopped)."""

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
