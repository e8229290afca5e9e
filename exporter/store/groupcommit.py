"""Group commit: concurrent write requests share one durable commit.

A commit with ``synchronous = FULL`` costs an fsync, and only one writer may
hold the database at a time. Under many small concurrent requests (one job per
POST, the common case for webhooks and per-job callers) the fsync and the
hand-over of the write lock, not the work itself, would bound the rate.

So writers queue their work; whichever thread takes the leader lock first
runs everything queued so far in one transaction, each piece of work inside
its own savepoint so that one failing request is undone alone, then commits
once and hands every waiter its own result. Nobody gets an answer before the
commit that holds their work, so each answer still means "stored durably".
With one writer at a time the group is just that writer: nothing waits for a
timer to fill a batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

T = TypeVar("T")
Db = TypeVar("Db")


class _Work(Generic[Db]):
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[Db], object]) -> None:
        self.fn = fn
        self.result: object = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommitter(Generic[Db]):
    """Runs submitted work in shared transactions.

    ``transaction`` opens one write transaction (and commits it on a clean
    exit, rolls it back on an exception); ``savepoint`` wraps one piece of
    work so that an exception undoes that piece only.
    """

    def __init__(
        self,
        transaction: Callable[[], AbstractContextManager[Db]],
        savepoint: Callable[[Db], AbstractContextManager[None]],
    ) -> None:
        self._transaction = transaction
        self._savepoint = savepoint
        self._queue: list[_Work[Db]] = []
        self._queue_lock = threading.Lock()
        self._leader = threading.Lock()

    def submit(self, fn: Callable[[Db], T]) -> T:
        """Run ``fn(db)`` in a committed transaction; return its result or raise its error."""
        work: _Work[Db] = _Work(fn)
        with self._queue_lock:
            self._queue.append(work)
        with self._leader:
            if not work.done:
                with self._queue_lock:
                    group, self._queue = self._queue, []
                self._run(group)
        if work.error is not None:
            raise work.error
        return work.result  # type: ignore[return-value]

    def _run(self, group: list[_Work[Db]]) -> None:
        try:
            with self._transaction() as db:
                if len(group) == 1:  # alone in its transaction: the rollback undoes it, no savepoint needed
                    group[0].result = group[0].fn(db)
                    return
                for work in group:
                    try:
                        with self._savepoint(db):
                            work.result = work.fn(db)
                    except Exception as error:  # this request's failure: its savepoint is undone, the others stay
                        work.error = error
        except BaseException as error:
            # The commit itself failed (or was interrupted): nothing in the group is stored.
            for work in group:
                work.result = None
                if work.error is None:
                    work.error = error
            if not isinstance(error, Exception):
                raise
        finally:
            for work in group:
                work.done = True
