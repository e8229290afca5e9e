"""``/readyz``'s answer: the store's write check, made at most once per interval and shared.

The check is a real write (committed, so fsynced on SQLite with ``synchronous:
full`` and flushed on PostgreSQL); a probe flood must not cost one each, or
it takes the disk from the requests that store jobs. One check's result
answers every call for :data:`CHECK_INTERVAL_SECONDS`; calls arriving while
a check runs wait for it and take its result. A request that meets a store
error meanwhile marks the result stale, so the next call checks again and a
full disk shows at once.

Before the first check passes, ``prepare`` runs once: a server worker renders
every connection's metrics there (:meth:`.ScrapeRenderer.warm`) if its start-up
could not, so that a replica reported ready answers its first scrape quickly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

from ..store import StoreError
from ..timeutil import Clock

#: How long one write check answers for: well below the readiness probe's period (10 s in the manifest).
CHECK_INTERVAL_SECONDS: Final = 5.0


class Readiness:
    """Runs ``check`` (which raises :class:`StoreError` when the store is not ready) at most once per interval."""

    def __init__(
        self,
        check: Callable[[], None],
        *,
        clock: Clock,
        interval: float = CHECK_INTERVAL_SECONDS,
        prepare: Callable[[], None] = lambda: None,
    ) -> None:
        """``prepare``: what must be done once before the first ready answer (it may raise :class:`StoreError`)."""
        self._check = check
        self._prepare: Callable[[], None] | None = prepare
        self._clock = clock
        self._interval = interval
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._error: StoreError | None = None

    def check(self) -> None:
        """Raise a :class:`StoreError` (or :class:`~..store.StoreFull`) unless the store was found ready."""
        with self._lock:  # one check at a time; the callers waiting behind it take its result
            if self._stale():
                self._checked_at = self._clock()
                try:
                    self._check()
                    if self._prepare is not None:
                        self._prepare()
                        self._prepare = None
                except StoreError as failure:
                    self._error = failure
                else:
                    self._error = None
            found = self._error
        if found is not None:
            raise type(found)(*found.args)  # a fresh exception per caller: each gets its own traceback

    def mark_stale(self) -> None:
        """A request just met a store error: the next call checks again."""
        with self._lock:
            self._checked_at = None

    def _stale(self) -> bool:
        if self._checked_at is None:
            return True
        age = self._clock() - self._checked_at
        return not 0 <= age < self._interval  # a clock set back counts as stale, not as fresh for ever
