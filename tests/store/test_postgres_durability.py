"""An answer means stored durably, and a failed request leaves nothing behind on its connection.

The crash itself (PostgreSQL killed while writers ingest) is
``tests/integration/test_postgres_crash.py``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from calabi_exporter.model import parse_job
from calabi_exporter.store import Store, StoreError
from calabi_exporter.store.database import Tx
from calabi_exporter.store.migrations import SCHEMA_VERSION

from tests.support.jobs import job
from tests.support.postgres_server import PostgresServer
from tests.support.waiting import wait_until


def test_an_answer_comes_once_the_write_is_flushed_to_the_wal(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    with psycopg.connect(url, autocommit=True) as conn:  # the server's default, which the test cluster turns off
        conn.execute(f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET synchronous_commit = on")  # type: ignore[arg-type]
    store = Store.postgres(url)

    def write(tx: Tx) -> str:
        tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (f"written-{len(flushed)}", 1))
        return str(tx.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])

    flushed: list[bool] = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(20):
                written = store.database.submit(write)
                row = conn.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (written,)).fetchone()
                flushed.append(bool(row and row[0]))
    finally:
        store.close()
    assert flushed == [True] * 20


def test_a_store_of_the_previous_schema_gets_its_commit_marks_when_it_opens(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    Store.postgres(url).close()
    with psycopg.connect(url, autocommit=True) as conn:  # as the exporter before commit marks left it
        conn.execute("DROP TABLE commit_marks")
        conn.execute("UPDATE calabi_schema SET version = 1")

    store = Store.postgres(url)
    try:
        store.ingest.jobs([parse_job(job("after-the-upgrade"))], endpoint="jobs")
        assert store.reads.job("after-the-upgrade") is not None
    finally:
        store.close()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM calabi_schema").fetchall() == [(SCHEMA_VERSION,)]


def insert_twice(tx: Tx) -> None:
    """Work that fails in the database: the second row breaks the key, later statements are new to it."""
    tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("written-twice", 1))
    tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("written-twice", 2))
    tx.execute("UPDATE meta SET value = value + ? WHERE key = ?", (1, "written-twice"))


#: How each engine says that ``insert_twice`` broke the key.
UNIQUE_VIOLATION = {
    "sqlite": "UNIQUE constraint failed: meta.key",
    "postgres": 'duplicate key value violates unique constraint "meta_pkey"',
}


def one_connection(backend: str) -> dict[str, int]:
    """Store options under which every request uses the same connection (SQLite's writer is one anyway)."""
    return {"pool_size": 1} if backend == "postgres" else {}


@pytest.mark.every_backend
def test_after_a_request_fails_in_the_database_the_next_requests_on_its_connection_succeed(
    make_store: Callable[..., Store], backend: str, tmp_path: Path
) -> None:
    store = make_store(tmp_path, **one_connection(backend))
    for number in range(20):
        with pytest.raises(StoreError, match=re.escape(UNIQUE_VIOLATION[backend])):
            store.database.submit(insert_twice)
        store.ingest.jobs([parse_job(job(f"after-failure-{number}"))], endpoint="jobs")
    assert store.reads.job("after-failure-19") is not None
    with store.database.read() as tx:
        assert tx.execute("SELECT count(*) FROM jobs").fetchone()[0] == 20
        assert tx.execute("SELECT count(*) FROM meta WHERE key = ?", ("written-twice",)).fetchone()[0] == 0


def post_beside_failing_work(store: Store, failing: Callable[[Tx], object]) -> tuple[list[str], list[str]]:
    """Six threads post 60 good jobs each while two submit ``failing`` 60 times each, all at once.

    Returns what the good posts raised, and the kinds of error the failing work raised.
    """
    failures: list[str] = []
    errors_of_failing_work: list[str] = []

    def post(index: int) -> None:
        for number in range(60):
            try:
                store.ingest.jobs([parse_job(job(f"good-{index}-{number}"))], endpoint="jobs")
            except StoreError as error:
                failures.append(str(error))

    def fail() -> None:
        for _ in range(60):
            try:
                store.database.submit(failing)
            except StoreError as error:
                errors_of_failing_work.append(type(error).__name__)

    threads = [threading.Thread(target=post, args=(index,)) for index in range(6)]
    threads += [threading.Thread(target=fail) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures, errors_of_failing_work


@pytest.mark.every_backend
def test_requests_sharing_a_commit_with_failing_ones_all_succeed(
    make_store: Callable[..., Store], backend: str, tmp_path: Path
) -> None:
    store = make_store(tmp_path, **one_connection(backend))

    failures, errors_of_failing_work = post_beside_failing_work(store, insert_twice)

    assert failures == []
    assert errors_of_failing_work == ["StoreError"] * 120
    with store.database.read() as tx:
        assert tx.execute("SELECT count(*) FROM jobs").fetchone()[0] == 360


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # SQLite stores the character
def test_requests_sharing_a_commit_with_ones_refused_by_the_driver_all_succeed(
    make_store: Callable[..., Store], tmp_path: Path
) -> None:
    store = make_store(tmp_path, pool_size=2)

    def write_a_nul_character(tx: Tx) -> None:
        tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("before-a-nul", 1))
        tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("nul-\x00-character", 1))

    failures, errors_of_failing_work = post_beside_failing_work(store, write_a_nul_character)

    assert failures == []
    assert errors_of_failing_work == ["StoreError"] * 120
    with store.database.read() as tx:
        assert tx.execute("SELECT count(*) FROM jobs").fetchone()[0] == 360
        assert tx.execute("SELECT count(*) FROM meta WHERE key = ?", ("before-a-nul",)).fetchone()[0] == 0


def test_a_closed_store_leaves_no_session_on_the_server(postgres: PostgresServer) -> None:
    """Every connection the store opened ends with it, the one it used last included."""
    url = postgres.new_database()
    store = Store.postgres(url)
    store.ingest.jobs([parse_job(job("j1", "running"))], endpoint="jobs")
    store.close()
    name = url.rsplit("/", 1)[1]

    def sessions() -> int:
        with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()
            return int(row[0]) if row else -1

    wait_until(lambda: sessions() == 0, timeout=10, what="the closed store's sessions to end")
