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

The group first runs without savepoints (a savepoint costs a round trip per
request on a networked database), and requests of one kind that know how to
run together (``merge``) run as one: many single-job posts become one batch,
read and written with a few statements. Only when something fails does the
group run again, each request alone in its savepoint.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Db = TypeVar("Db")


#: Runs several requests' items as one: ``merge(db, items)`` returns each item's result, in order.
Merge = Callable[[Db, list[Any]], list[Any]]


class _Work(Generic[Db]):
    __slots__ = ("done", "error", "fn", "item", "merge", "result")

    def __init__(self, fn: Callable[[Db], object], merge: Merge[Db] | None, item: object) -> None:
        self.fn = fn
        self.merge = merge
        self.item = item
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

    def submit(self, fn: Callable[[Db], T], *, merge: Merge[Db] | None = None, item: object = None) -> T:
        """Run ``fn(db)`` in a committed transaction; return its result or raise its error.

        ``merge`` and ``item``: ``fn(db)`` is ``merge(db, [item])[0]``, and queued
        requests with the same ``merge`` may run together as ``merge(db, items)``.
        """
        work: _Work[Db] = _Work(fn, merge, item)
        with self._queue_lock:
            self._queue.append(work)
        with self._leader:
            if not work.done:
                self._lead()
        if work.error is not None:
            raise work.error
        return work.result  # type: ignore[return-value]

    def _lead(self) -> None:
        """Open a transaction, then take every request queued by then and run them in it.

        The queue is taken once the transaction holds the write lock, so the
        requests that arrived while another writer (a process, a replica) held
        it join this group instead of waiting for the next one.
        """
        group: list[_Work[Db]] = []
        try:
            with self._transaction() as db:
                with self._queue_lock:
                    group, self._queue = self._queue, []
                self._run_together(db, group)
        except BaseException as error:
            if not group:  # the transaction did not even begin: what is queued would fail the same way
                with self._queue_lock:
                    group, self._queue = self._queue, []
            for work in group:
                work.result = None
            if len(group) > 1 and isinstance(error, Exception):
                self._run_apart(group)  # find the request that failed: each alone in its savepoint
                return
            for work in group:
                work.error = error
                work.done = True
            if not isinstance(error, Exception):
                raise
            return
        for work in group:
            work.done = True

    @staticmethod
    def _run_together(db: Db, group: list[_Work[Db]]) -> None:
        """Run the group without savepoints, requests that can merge as one call; raise on any failure.

        Failures are rare, and a savepoint costs a round trip per request on a
        networked database; so the group first runs as one plain transaction,
        and only when something in it fails does it run again with each
        request in its own savepoint, to undo the failed one alone.
        """
        for run in _runs(group):
            if len(run) > 1 and run[0].merge is not None:
                results = run[0].merge(db, [work.item for work in run])
                for work, result in zip(run, results, strict=True):
                    work.result = result
            else:
                for work in run:
                    work.result = work.fn(db)

    def _run_apart(self, group: list[_Work[Db]]) -> None:
        try:
            with self._transaction() as db:
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


def _runs(group: list[_Work[Db]]) -> list[list[_Work[Db]]]:
    """The group in order, cut into runs of consecutive requests with the same ``merge``."""
    runs: list[list[_Work[Db]]] = []
    for work in group:
        if runs and work.merge is not None and runs[-1][-1].merge == work.merge:
            runs[-1].append(work)
        else:
            runs.append([work])
    return runs
