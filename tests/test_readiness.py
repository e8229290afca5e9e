"""``/readyz`` checks the store with a write at most once per interval, however often it is asked."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from calabi_exporter.store import Store
from calabi_exporter.web.readiness import CHECK_INTERVAL_SECONDS
from flask import Flask
from flask.testing import FlaskClient

from .conftest import FakeClock, job, writes_refused

pytestmark = pytest.mark.every_backend


def check_writes(store: Store) -> int:
    """Write checks the store has seen: the first inserts the counter at 0, each later one adds 1."""
    with store.database.read() as tx:
        row = tx.execute("SELECT value FROM meta WHERE key = 'ready_check'").fetchone()
    return 0 if row is None else int(row[0]) + 1


def test_a_flood_of_readiness_calls_writes_to_the_store_once_per_interval(
    client: FlaskClient, store: Store, clock: FakeClock
) -> None:
    answers = [client.get("/readyz").get_json() for _ in range(200)]
    after_flood = check_writes(store)
    clock.advance(CHECK_INTERVAL_SECONDS - 0.5)
    client.get("/readyz")
    within_interval = check_writes(store)
    clock.advance(0.5)
    client.get("/readyz")

    assert answers == [{"status": "ready"}] * 200
    assert (after_flood, within_interval, check_writes(store)) == (1, 1, 2)


def test_readiness_calls_arriving_together_share_one_check(app: Flask, store: Store) -> None:
    callers = 16
    start = threading.Barrier(callers)

    def ask(_: int) -> int:
        client = app.test_client()
        start.wait()
        return client.get("/readyz").status_code

    with ThreadPoolExecutor(max_workers=callers) as pool:
        codes = list(pool.map(ask, range(callers)))

    assert codes == [200] * callers
    assert check_writes(store) == 1


def test_a_clock_set_back_does_not_keep_an_old_answer(client: FlaskClient, store: Store, clock: FakeClock) -> None:
    client.get("/readyz")
    clock.advance(-3600)
    client.get("/readyz")

    assert check_writes(store) == 2


def test_a_store_failure_in_a_request_makes_the_next_readiness_call_check_again(
    client: FlaskClient, store: Store, clock: FakeClock
) -> None:
    assert client.get("/readyz").status_code == 200
    with writes_refused(store):
        refused = client.post("/api/v1/jobs", json=job("a"))
        not_ready = client.get("/readyz")
    still_not_ready = client.get("/readyz")  # the failed check answers until the interval has passed
    clock.advance(CHECK_INTERVAL_SECONDS)
    ready_again = client.get("/readyz")

    assert refused.status_code == 503
    assert (not_ready.status_code, not_ready.get_json()) == (
        503,
        {"status": "unavailable", "error": "the store cannot be written"},
    )
    assert still_not_ready.status_code == 503
    assert (ready_again.status_code, ready_again.get_json()) == (200, {"status": "ready"})
