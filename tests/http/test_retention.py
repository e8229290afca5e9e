"""Retention purges old finished jobs without moving a counter, and without stopping ingestion."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from calabi_exporter.config import Config
from calabi_exporter.joblogs import LogLine
from calabi_exporter.model import Job, parse_job
from calabi_exporter.purger import Purger
from calabi_exporter.store import EventRoute, Store
from calabi_exporter.timeutil import parse_duration
from calabi_exporter.web import create_app
from flask.testing import FlaskClient

from tests.support.clock import T0, FakeClock
from tests.support.samples import Samples, parse_samples

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

DAY = 86400.0


def finished(job_id: str, days_ago: float, status: str = "succeeded", connection: str = "Stripe → Postgres") -> Job:
    end = T0 - days_ago * DAY
    return Job(
        job_id=job_id,
        connection_name=connection,
        status=status,
        started_at=end - 60,
        finished_at=end,
        records_synced=10,
        streams=(),
    ).with_derived_fields()


def scrape(client: FlaskClient) -> Samples:
    return parse_samples(client.get("/metrics").get_data(as_text=True))


def job_metrics(samples: Samples) -> Samples:
    return Samples({k: v for k, v in samples.items() if k[0].startswith("calabi_sync_")})


def test_jobs_past_the_plans_window_are_purged_and_no_counter_moves(
    tmp_path: Path, clock: FakeClock, make_store: Callable[..., Store]
) -> None:
    config = Config(data_dir=str(tmp_path / "d"), retention_plan="professional")
    store = make_store(config.data_path, clock=clock)
    client = create_app(config, store=store, clock=clock).test_client()
    store.ingest.jobs(
        [finished("old-1", 45), finished("old-2", 31, "failed"), finished("recent", 29), finished("new", 1)],
        endpoint="jobs",
    )
    store.ingest.logs("old-1", [LogLine("INFO", "Syncing stream: Account", T0 - 45 * DAY)])
    before = scrape(client)

    deleted = Purger(store, config, clock=clock).purge_once()

    after = scrape(client)
    assert deleted == 2
    assert store.reads.job("old-1") is None and store.reads.job("old-2") is None
    assert store.reads.job("recent") is not None and store.reads.job("new") is not None
    assert store.reads.log_lines("old-1") == []
    assert job_metrics(after) == job_metrics(before)
    assert after.value("calabi_exporter_stored_jobs") == 2
    assert after.value("calabi_exporter_purged_jobs_total") == 2
    assert after.value("calabi_exporter_oldest_job_timestamp_seconds") == T0 - 29 * DAY
    store.close()


def test_the_enterprise_plan_keeps_ninety_days_and_explicit_days_win(
    tmp_path: Path, clock: FakeClock, make_store: Callable[..., Store]
) -> None:
    enterprise = Config(data_dir=str(tmp_path / "e"), retention_plan="enterprise")
    explicit = Config(data_dir=str(tmp_path / "x"), retention_plan="enterprise", retention_days=7)
    outcomes = []
    for config in (enterprise, explicit):
        store = make_store(config.data_path, clock=clock)
        store.ingest.jobs([finished("a", 89), finished("b", 91), finished("c", 8)], endpoint="jobs")
        outcomes.append((Purger(store, config, clock=clock).purge_once(), store.reads.job("a") is not None))
        store.close()

    assert outcomes == [(1, True), (3, False)]
    assert enterprise.retention_seconds == 90 * DAY and explicit.retention_seconds == 7 * DAY


@pytest.mark.slow
def test_ingestion_keeps_working_while_100000_jobs_are_purged(
    tmp_path: Path, clock: FakeClock, make_store: Callable[..., Store]
) -> None:
    config = Config(data_dir=str(tmp_path / "big"), sqlite_synchronous="normal")
    store = make_store(config.data_path, clock=clock, synchronous="normal")
    for start in range(0, 100_000, 5000):
        store.ingest.jobs([finished(f"old-{i}", 40 + i / 100_000) for i in range(start, start + 5000)], endpoint="jobs")
    purger = Purger(store, config, clock=clock)
    purged: list[int] = []
    purge = threading.Thread(target=lambda: purged.append(purger.purge_once()))
    accepted: list[str] = []
    still_purging: list[bool] = []

    purge.start()
    for n in range(200):
        record = {"job_id": f"new-{n}", "connection_name": "Stripe → Postgres", "status": "succeeded"}
        accepted += store.ingest.jobs([parse_job(record)], endpoint="jobs").outcomes
        still_purging.append(purge.is_alive())
    purge.join(timeout=300)

    assert accepted == ["accepted"] * 200
    assert any(still_purging)  # the new jobs went in while the purge was running
    assert purged == [100_000]
    snapshot = store.metrics.snapshot()
    assert snapshot.stored_jobs == 200
    assert snapshot.purged_jobs == 100_000
    assert {c.connection: c.jobs["succeeded"] for c in snapshot.connections} == {"Stripe → Postgres": 100_200}
    store.close()


def test_dead_letters_older_than_the_window_are_purged_too(
    tmp_path: Path, clock: FakeClock, make_store: Callable[..., Store]
) -> None:
    config = Config(data_dir=str(tmp_path / "dl"), retention_days=30)
    store = make_store(config.data_path, clock=clock, outbox=True, webhook_routes=[EventRoute("ops")])
    store.ingest.jobs([finished("gone", 1)], endpoint="jobs")
    store.ingest.logs("gone", [LogLine("INFO", "refused by the receiver", T0 - DAY)])
    for entry in store.outbox.read(10):
        store.outbox.done(entry.id, exported=0, dead=[(entry, "HTTP 400")])
    for delivery in store.status_webhooks.due("ops", clock()):
        store.status_webhooks.dead(delivery, "HTTP 410")
    clock.advance(20 * DAY)
    store.ingest.jobs([finished("kept", -19)], endpoint="jobs")
    for delivery in store.status_webhooks.due("ops", clock()):
        store.status_webhooks.dead(delivery, "HTTP 410")
    before = (len(store.outbox.dead_letters()), len(store.status_webhooks.dead_letters()))

    clock.advance(15 * DAY)  # the first dead letters are 35 days old, the second 15
    Purger(store, config, clock=clock).purge_once()

    assert before == (2, 2)
    assert [job_id for _, job_id, _ in store.outbox.dead_letters()] == []
    assert [d.job_id for d, _ in store.status_webhooks.dead_letters()] == ["kept"]
    store.close()


def unfinished(job_id: str, status: str, connection: str) -> Job:
    return Job(job_id=job_id, connection_name=connection, status=status, streams=())


@pytest.mark.parametrize(
    ("max_age", "abandoned"),
    [
        pytest.param(None, ["pending-old", "running-old"], id="the default week"),
        pytest.param("2d", ["pending-old", "running-old", "pending-3d"], id="configured"),
    ],
)
def test_jobs_that_never_finish_are_abandoned_after_a_week_without_news(
    tmp_path: Path, clock: FakeClock, make_store: Callable[..., Store], max_age: str | None, abandoned: list[str]
) -> None:
    settings = {} if max_age is None else {"retention_unfinished_job_max_age_seconds": parse_duration(max_age)}
    config = Config(data_dir=str(tmp_path / "d"), **settings)
    store = make_store(config.data_path, clock=clock)
    client = create_app(config, store=store, clock=clock).test_client()
    store.ingest.jobs(
        [unfinished("pending-old", "pending", "Junk"), unfinished("running-old", "running", "Stripe → Postgres")],
        endpoint="jobs",
    )
    clock.advance(4 * DAY)
    store.ingest.jobs([unfinished("pending-3d", "pending", "Stripe → Postgres")], endpoint="jobs")
    clock.advance(3 * DAY + 1)
    store.ingest.jobs([finished("done", 0), unfinished("running-new", "running", "Stripe → Postgres")], endpoint="jobs")

    deleted = Purger(store, config, clock=clock).purge_once()
    samples = scrape(client)

    assert deleted == len(abandoned)
    left = {"pending-old", "running-old", "pending-3d", "running-new", "done"} - set(abandoned)
    assert {job_id for job_id in left if store.reads.job(job_id) is not None} == left
    assert all(store.reads.job(job_id) is None for job_id in abandoned)
    assert samples.value("calabi_exporter_stored_jobs") == len(left)
    assert not [key for key in samples if dict(key[1]).get("connection") == "Junk"]  # forgotten with its job
    store.close()
