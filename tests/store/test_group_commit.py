"""Concurrent writes share one commit, and each request still stands or falls alone."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from calabi_exporter.joblogs import LogLine
from calabi_exporter.model import parse_job
from calabi_exporter.store import JobNotFound, Store
from calabi_exporter.store.groupcommit import GroupCommitter

from tests.support.waiting import wait_until


class Database:
    """A real SQLite file with a transaction counter, for the committer under test."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("CREATE TABLE t (value TEXT)")
        self.transactions = 0
        self.fail_commit = False

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.transactions += 1
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            if self.fail_commit:
                raise sqlite3.OperationalError("disk I/O error")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def values(self) -> list[str]:
        return sorted(row[0] for row in self.db.execute("SELECT value FROM t"))


SAVEPOINTS: list[str] = []


@contextmanager
def savepoint(db: sqlite3.Connection) -> Iterator[None]:
    SAVEPOINTS.append("w")
    db.execute("SAVEPOINT w")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK TO w")
        db.execute("RELEASE w")
        raise
    db.execute("RELEASE w")


def insert(value: str) -> Callable[[sqlite3.Connection], str]:
    def work(db: sqlite3.Connection) -> str:
        db.execute("INSERT INTO t VALUES (?)", (value,))
        if value.startswith("bad"):
            raise ValueError(f"{value} refused")
        return value

    return work


def submit_together(committer: GroupCommitter[sqlite3.Connection], works: dict[str, Callable[..., str]]) -> dict:
    """Queue every work while the leader lock is held, so that they all run as one group."""
    outcomes: dict[str, object] = {}

    def run(name: str, work: Callable[..., str]) -> None:
        try:
            outcomes[name] = committer.submit(work)
        except Exception as error:
            outcomes[name] = error

    threads = [threading.Thread(target=run, args=item) for item in works.items()]
    with committer._leader:
        for thread in threads:
            thread.start()
        wait_until(lambda: len(committer._queue) == len(works), timeout=10, what="every work queued")
    for thread in threads:
        thread.join(timeout=10)
    return outcomes


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "t.sqlite3")
    yield database
    database.db.close()


def test_queued_writes_share_one_transaction_without_savepoints(database: Database) -> None:
    committer = GroupCommitter(database.transaction, savepoint)
    SAVEPOINTS.clear()

    outcomes = submit_together(committer, {"a": insert("a"), "b": insert("b"), "c": insert("c")})

    assert outcomes == {"a": "a", "b": "b", "c": "c"}
    assert database.transactions == 1 and SAVEPOINTS == []
    assert database.values() == ["a", "b", "c"]


def test_a_failing_write_is_undone_alone_and_gets_its_own_error(database: Database) -> None:
    committer = GroupCommitter(database.transaction, savepoint)

    outcomes = submit_together(committer, {"a": insert("a"), "bad": insert("bad"), "c": insert("c")})

    assert outcomes["a"] == "a" and outcomes["c"] == "c"
    assert isinstance(outcomes["bad"], ValueError) and str(outcomes["bad"]) == "bad refused"
    # Run together first, rolled back for the failure, then each write in its savepoint.
    assert database.transactions == 2
    assert database.values() == ["a", "c"]


def test_a_failed_commit_fails_every_write_of_the_group_and_stores_none(database: Database) -> None:
    committer = GroupCommitter(database.transaction, savepoint)
    database.fail_commit = True

    outcomes = submit_together(committer, {"a": insert("a"), "b": insert("b")})

    assert [type(outcomes[name]) for name in ("a", "b")] == [sqlite3.OperationalError] * 2
    assert database.values() == []


def test_a_lone_write_that_fails_is_rolled_back(database: Database) -> None:
    committer = GroupCommitter(database.transaction, savepoint)

    with pytest.raises(ValueError, match="bad-alone refused"):
        committer.submit(insert("bad-alone"))
    assert committer.submit(insert("after")) == "after"

    assert database.values() == ["after"]


@pytest.mark.every_backend
def test_logs_for_an_unknown_job_fail_alone_beside_jobs_stored_in_the_same_commit(store: Store) -> None:
    job = parse_job({"job_id": "j-1", "connection_name": "Stripe → Postgres", "status": "succeeded"})
    outcomes: dict[str, object] = {}

    def logs() -> None:
        try:
            store.ingest.logs("no-such-job", [LogLine(level="INFO", message="hello")])
        except JobNotFound as error:
            outcomes["logs"] = error

    def jobs() -> None:
        outcomes["jobs"] = store.ingest.jobs([job], endpoint="jobs").count("accepted")

    threads = [threading.Thread(target=logs), threading.Thread(target=jobs)]
    with store.database._group._leader:
        for thread in threads:
            thread.start()
        wait_until(lambda: len(store.database._group._queue) == 2, timeout=10, what="both writes queued")
    for thread in threads:
        thread.join(timeout=10)

    assert isinstance(outcomes["logs"], JobNotFound) and outcomes["logs"].job_id == "no-such-job"
    assert outcomes["jobs"] == 1
    assert store.reads.job("j-1") is not None
    assert store.metrics.snapshot().ingest_counts[("jobs", "accepted")] == 1
    assert ("logs", "accepted") not in store.metrics.snapshot().ingest_counts


def test_queued_requests_of_one_kind_run_as_one_merged_call(database: Database) -> None:
    committer = GroupCommitter(database.transaction, savepoint)
    calls: list[list[str]] = []

    def merge(db: sqlite3.Connection, items: list[str]) -> list[str]:
        calls.append(items)
        db.executemany("INSERT INTO t VALUES (?)", [(item,) for item in items])
        return [f"stored {item}" for item in items]

    def request(value: str) -> Callable[[], str]:
        return lambda: committer.submit(lambda db: merge(db, [value])[0], merge=merge, item=value)

    outcomes: dict[str, object] = {}
    threads = [threading.Thread(target=lambda v=v: outcomes.update({v: request(v)()})) for v in ("a", "b", "c")]
    with committer._leader:
        for thread in threads:
            thread.start()
        wait_until(lambda: len(committer._queue) == 3, timeout=10, what="every request queued")
    for thread in threads:
        thread.join(timeout=10)

    assert outcomes == {"a": "stored a", "b": "stored b", "c": "stored c"}
    assert sorted(map(sorted, calls)) == [["a", "b", "c"]]
    assert database.transactions == 1 and database.values() == ["a", "b", "c"]
