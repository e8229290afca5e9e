"""Several ``serve`` replicas on one PostgreSQL: one schema, exact sums, and background roles that move.

Every replica is a real ``calabi-exporter serve`` (gunicorn and its workers)
on a free loopback port; the database is the session's real PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import yaml
from calabi_exporter.store import Store
from calabi_exporter.store.migrations import SCHEMA_VERSION
from calabi_exporter.timeutil import format_rfc3339

from tests.support.capture_servers import WebhookReceiver
from tests.support.exporter_process import ExporterProcess
from tests.support.otlp_receiver import Receiver
from tests.support.postgres_server import PostgresServer
from tests.support.processes import process_tree
from tests.support.prometheus_server import Prometheus
from tests.support.s3_server import BUCKET, MotoServer
from tests.support.samples import Samples
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # containers or minutes of real servers: not in the day-to-day subset

ROLES = ("metrics", "shipper", "s3", "purge", "webhooks")
SECRET = "whsec-0123456789abcdef"


@pytest.fixture
def database_url(postgres: PostgresServer) -> str:
    return postgres.new_database()


@pytest.fixture
def replica(
    exporter_process: Callable[..., ExporterProcess], database_url: str, tmp_path: Path
) -> Callable[..., ExporterProcess]:
    """``replica(name, workers=2, env=None)``: a ``serve`` process on the shared database."""

    def replica(name: str, *, workers: int = 2, env: dict[str, str] | None = None) -> ExporterProcess:
        environment = {"CALABI_DATABASE_URL": database_url, **(env or {})}
        return exporter_process(workers=workers, data_dir=tmp_path / name, env=environment)

    return replica


def roles_held(replica: ExporterProcess) -> set[str]:
    """The background roles this replica says it holds."""
    samples = replica.scrape()
    return {dict(labels)["role"] for labels, value in samples.family("calabi_exporter_role_held").items() if value}


def sync_samples(samples: Samples) -> int:
    return sum(1 for name, _ in samples if name.startswith("calabi_sync_"))


def test_stores_opened_at_once_on_an_empty_database_agree_on_one_schema(database_url: str) -> None:
    barrier = threading.Barrier(8)

    def open_store(_: int) -> int:
        barrier.wait()
        store = Store.postgres(database_url)
        store.close()
        return 1

    with ThreadPoolExecutor(8) as pool:
        opened = sum(pool.map(open_store, range(8)))

    with psycopg.connect(database_url) as conn:
        versions = conn.execute("SELECT version FROM calabi_schema").fetchall()
    assert opened == 8
    assert versions == [(SCHEMA_VERSION,)]


def test_two_replicas_started_at_the_same_moment_on_an_empty_database_make_one_schema(
    replica: Callable[..., ExporterProcess], database_url: str
) -> None:
    with ThreadPoolExecutor(2) as pool:
        started = list(pool.map(lambda name: replica(name), ["a", "b"]))

    with psycopg.connect(database_url) as conn:
        versions = conn.execute("SELECT version FROM calabi_schema").fetchall()
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert versions == [(SCHEMA_VERSION,)]
    assert {"jobs", "connections", "outbox", "webhook_queue", "export_batches", "replica_roles"} <= tables
    assert [requests.get(r.url + "/readyz", timeout=10).json() for r in started] == [{"status": "ready"}] * 2


def finished_job(index: int, now: float) -> dict[str, Any]:
    started = now - 3 * 3600 + index
    return {
        "job_id": f"job-{index:04d}",
        "connection_name": f"conn-{index % 10} → warehouse",
        "status": "failed" if index % 7 == 0 else "succeeded",
        "started_at": format_rfc3339(started),
        "finished_at": format_rfc3339(started + 60),
        "records_synced": index,
        "bytes_synced": 10 * index,
    }


def post_job_and_line(target: ExporterProcess, other: ExporterProcess, index: int, now: float) -> None:
    """The job record to one replica, its log line to the other; both must be acknowledged."""
    record = finished_job(index, now)
    assert requests.post(target.url + "/api/v1/jobs", json=record, timeout=30).status_code == 200
    line = f"{record['finished_at']} INFO line of {record['job_id']}\n"
    response = requests.post(
        f"{other.url}/api/v1/jobs/{record['job_id']}/logs",
        data=line,
        headers={"Content-Type": "text/plain"},
        timeout=30,
    )
    assert response.status_code == 200


def test_two_replicas_fed_alternately_give_exact_sums_in_prometheus(
    replica: Callable[..., ExporterProcess], prometheus_for: Callable[..., Prometheus]
) -> None:
    a, b = replica("a"), replica("b")
    wait_until(
        lambda: sum("metrics" in roles_held(r) for r in (a, b)) == 1, timeout=20, what="one replica to take metrics"
    )
    now = time.time()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: post_job_and_line(*((a, b) if i % 2 else (b, a)), i, now), range(2000)))

    prometheus = prometheus_for([a.url.removeprefix("http://"), b.url.removeprefix("http://")])
    wait_until(lambda: prometheus.scalar("sum(up)") == 2, timeout=30, what="both replicas scraped")
    wait_until(
        lambda: prometheus.scalar("sum(calabi_sync_jobs_total)") == 2000, timeout=30, what="2,000 jobs in Prometheus"
    )

    assert prometheus.scalar("sum(calabi_sync_records_synced_total)") == sum(range(2000))
    assert prometheus.scalar('sum(calabi_sync_jobs_total{status="failed"})') == len(range(0, 2000, 7))
    assert prometheus.scalar('sum(calabi_sync_log_lines_total{level="info"})') == 2000
    assert prometheus.scalar("count(count by (instance) (calabi_sync_jobs_total))") == 1
    assert prometheus.scalar('sum(calabi_exporter_role_held{role="metrics"})') == 1
    assert prometheus.scalar("count(calabi_exporter_build_info)") == 2
    exposing = [sync_samples(r.scrape()) > 0 for r in (a, b)]
    assert sorted(exposing) == [False, True]


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def log_receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


def test_killing_the_replica_that_holds_the_roles_hands_them_over_and_loses_nothing(
    replica: Callable[..., ExporterProcess],
    database_url: str,
    tmp_path: Path,
    s3: MotoServer,
    webhook_receiver: WebhookReceiver,
    log_receiver: Receiver,
) -> None:
    config = tmp_path / "exporter.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "otlp_logs_endpoint": log_receiver.url,
                "s3_export": {"bucket": BUCKET, "endpoint_url": s3.url, "addressing_style": "path"},
                "webhooks": [{"name": "ops", "url": webhook_receiver.url, "secret": SECRET}],
            }
        )
    )
    env = {
        "CALABI_CONFIG": str(config),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    a = replica("a", workers=1, env=env)
    wait_until(lambda: roles_held(a) == set(ROLES), timeout=20, what="the first replica to hold every role")
    b = replica("b", env=env)

    acknowledged: list[int] = []
    now = time.time()

    def post(index: int) -> None:
        """To A while it lives, else to B: what a client retrying against the Service does."""
        for target, other in ((a, b), (b, b)) if index % 2 else ((b, a), (b, b)):
            try:
                post_job_and_line(target, other, index, now)
            except (requests.RequestException, AssertionError):
                continue
            acknowledged.append(index)
            return

    with ThreadPoolExecutor(4) as pool:
        posts = [pool.submit(post, index) for index in range(1200)]
        wait_until(lambda: len(acknowledged) >= 400, timeout=60, what="400 jobs acknowledged")
        assert a.process is not None
        for pid in process_tree(a.process.pid):  # under load, the role holder dies outright
            os.kill(pid, signal.SIGKILL)
        in_flight = 1200 - len(acknowledged)
        # How soon is measured by bench/bench_replicas.py; here it must happen, within a bound far from it.
        wait_until(lambda: roles_held(b) == set(ROLES), timeout=90, what="the other replica to take every role")
        for done in posts:
            done.result()
    a.process.wait(timeout=10)

    assert in_flight > 0
    assert sorted(acknowledged) == list(range(1200))
    job_ids = {f"job-{i:04d}" for i in range(1200)}
    wait_until(lambda: b.scrape().value("calabi_exporter_log_outbox_records") == 0, timeout=60, what="the outbox")
    wait_until(
        lambda: b.scrape().value("calabi_exporter_webhook_queue_depth", endpoint="ops") == 0,
        timeout=60,
        what="the webhook queue",
    )
    shipped = [r.body for r in log_receiver.records if r.body.startswith("line of ")]
    assert {body.removeprefix("line of ") for body in shipped} == job_ids
    assert len(shipped) - len(set(shipped)) <= 1000  # at least once: a batch in flight at the kill may go again
    events = [(body["job_id"], body["status"]) for body in webhook_receiver.bodies()]
    assert {job_id for job_id, _ in events} == job_ids
    assert len(events) - len(set(events)) <= 200  # at least once: the deliveries in flight at the kill

    def exported() -> set[str]:
        return {job["job_id"] for key in s3.objects("calabi-connect/jobs/") for job in s3.ndjson(key)}

    wait_until(lambda: exported() == job_ids, timeout=90, what="every job in S3")
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT count(*) FROM jobs").fetchone()
        stored = conn.execute("SELECT value FROM meta WHERE key = 'stored_jobs'").fetchone()
        counted = conn.execute("SELECT sum(jobs_succeeded + jobs_failed + jobs_cancelled) FROM connections").fetchone()
        lines = conn.execute("SELECT count(*) FROM log_lines").fetchone()
        level_counts = conn.execute("SELECT sum(count) FROM log_counts WHERE family = 'level'").fetchone()
    assert (rows[0], stored[0], counted[0], lines[0], level_counts[0]) == (1200, 1200, 1200, 1200, 1200)
