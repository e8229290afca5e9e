"""``/readyz``: a store write checked at most once per interval, and ready once the metrics are rendered."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from calabi_exporter.config import Config
from calabi_exporter.metric_families import ScrapeSettings, Thresholds
from calabi_exporter.model import parse_job
from calabi_exporter.scrape import ScrapeRenderer
from calabi_exporter.server import start_worker
from calabi_exporter.store import MetricsSnapshot, Store, StoreError
from calabi_exporter.web import create_app
from calabi_exporter.web.readiness import CHECK_INTERVAL_SECONDS, Readiness
from calabi_exporter.web.services import services
from flask import Flask
from flask.testing import FlaskClient

from tests.support.clock import FakeClock
from tests.support.faults import writes_refused
from tests.support.jobs import job

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


class RecordingSnapshots:
    """The store's metrics snapshot, noting which connections each read was restricted to (None: all)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reads: list[list[str] | None] = []

    def __call__(self, only: Collection[str] | None = None) -> MetricsSnapshot:
        self.reads.append(None if only is None else sorted(only))
        return self.store.metrics.snapshot(only=only)


def test_readiness_renders_every_connections_metrics_before_it_answers_ready(store: Store, clock: FakeClock) -> None:
    store.ingest.jobs(
        [parse_job(job("a", connection="A → B")), parse_job(job("b", connection="C → D"))], endpoint="jobs"
    )
    snapshots = RecordingSnapshots(store)
    renderer = ScrapeRenderer(ScrapeSettings(Thresholds.from_config(Config())), store.metrics.versions, snapshots)
    readiness = Readiness(store.check_ready, clock=clock, prepare=renderer.warm)
    warm_before = renderer.is_warm

    readiness.check()
    reads_when_ready = list(snapshots.reads)
    renderer.body()

    assert (warm_before, renderer.is_warm) == (False, True)
    assert reads_when_ready == [None]  # every connection, read once
    assert snapshots.reads == [None, []]  # the first scrape re-reads no connection: nothing moved


def test_a_failed_warm_up_is_not_ready_and_is_tried_again(store: Store, clock: FakeClock) -> None:
    attempts: list[int] = []

    def prepare() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise StoreError("store unreachable")

    readiness = Readiness(store.check_ready, clock=clock, prepare=prepare)
    with pytest.raises(StoreError):
        readiness.check()
    clock.advance(CHECK_INTERVAL_SECONDS)
    readiness.check()
    clock.advance(CHECK_INTERVAL_SECONDS)
    readiness.check()

    assert len(attempts) == 2  # once more after the failure, then never again


def test_a_server_worker_renders_the_metrics_before_it_accepts_a_request(store: Store, clock: FakeClock) -> None:
    store.ingest.jobs([parse_job(job("a", connection="A → B"))], endpoint="jobs")
    app = create_app(Config(), store=store, clock=clock, server_worker=True)
    worker = SimpleNamespace(wsgi=app, log=logging.getLogger("test"))
    cold = services(app).scrapes.is_warm

    try:
        start_worker(worker)  # gunicorn's post_worker_init: the worker accepts nothing before it returns
    finally:
        gc.unfreeze()

    assert (cold, services(app).scrapes.is_warm) == (False, True)
