"""PostgreSQL killed during ingest: every job the exporter acknowledged is there when the server comes back.

The test runs its own PostgreSQL with the server's durable defaults (fsync,
synchronous commit) and stops it as a crash would (``pg_ctl stop -m immediate``)
while writers ingest: every job a writer was told was stored must be there
after recovery.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import psycopg
import pytest
from calabi_exporter.model import parse_job
from calabi_exporter.store import Store, StoreError

from tests.support.jobs import job
from tests.support.postgres_server import PostgresServer, postgres_bin
from tests.support.processes import free_port
from tests.support.real_components import missing
from tests.support.waiting import wait_until

CRASH_ROUNDS = 3


WRITERS = 8


#: Jobs acknowledged in a round before the crash: enough that some commits are always in flight.
ACKNOWLEDGED_BEFORE_CRASH = 400


@pytest.fixture
def durable_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own (it is crashed), with the server's durable defaults."""
    bin_dir, why = postgres_bin()
    if bin_dir is None:
        missing(why)
    server = PostgresServer(bin_dir, free_port(), durable=True)
    server.start()
    yield server
    server.stop()


class Writers:
    """Threads posting one job per request, each keeping the ids the store acknowledged."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name
        self.acknowledged: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(index,)) for index in range(WRITERS)]

    def __enter__(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _write(self, index: int) -> None:
        for number in itertools.count():
            if self._stop.is_set():
                return
            job_id = f"{self.name}-{index}-{number}"
            record = parse_job(job(job_id, connection=f"connection-{number % 20}"))
            try:
                self.store.ingest.jobs([record], endpoint="jobs")
            except StoreError:  # cut off by the crash: not acknowledged, so not counted
                continue
            with self._lock:
                self.acknowledged.append(job_id)


def stored_job_ids(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT job_id FROM jobs")}


def test_no_acknowledged_job_is_lost_when_postgresql_crashes_during_ingest(
    durable_postgres: PostgresServer,
) -> None:
    url = durable_postgres.new_database()
    store = Store.postgres(url, pool_size=4)
    acknowledged: list[str] = []
    try:
        for round_number in range(CRASH_ROUNDS):
            with Writers(store, f"round{round_number}") as writers:
                wait_until(
                    lambda writers=writers: len(writers.acknowledged) >= ACKNOWLEDGED_BEFORE_CRASH,
                    timeout=60,
                    what="steady ingest",
                    interval=0.01,
                )
                durable_postgres.crash()
                durable_postgres.restart()
            acknowledged += writers.acknowledged
    finally:
        store.close()
    lost = set(acknowledged) - stored_job_ids(url)
    assert sorted(lost) == []
