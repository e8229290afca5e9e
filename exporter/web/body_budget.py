"""A semaphore counted in bytes: the request bodies one worker process may hold at once.

Plain threading, no Flask: :mod:`.admission` takes requests' bodies from it and
:class:`~.services.Services` holds one per worker process.
"""

from __future__ import annotations

import threading
from typing import Final

#: How long a request waits for room in the budget before it is refused.
WAIT_SECONDS: Final = 3.0


class BodyBudget:
    """A semaphore counted in bytes: the request bodies one worker process holds at once."""

    def __init__(self, capacity: int, *, wait_seconds: float = WAIT_SECONDS) -> None:
        if capacity < 1:
            raise ValueError("the body budget must be at least one byte")
        self.capacity = capacity
        self._wait_seconds = wait_seconds
        self._in_use = 0
        self._changed = threading.Condition()

    @property
    def in_use(self) -> int:
        """Bytes admitted and not yet released."""
        with self._changed:
            return self._in_use

    def acquire(self, cost: int) -> int | None:
        """Take ``cost`` bytes (at most the whole budget), waiting for room; the bytes taken, or None."""
        taken = min(cost, self.capacity)
        with self._changed:
            if not self._changed.wait_for(lambda: self._in_use + taken <= self.capacity, self._wait_seconds):
                return None
            self._in_use += taken
        return taken

    def release(self, taken: int) -> None:
        """Give back what :meth:`acquire` took; waiting requests try again."""
        with self._changed:
            self._in_use -= taken
            self._changed.notify_all()
