"""The exporter as a real process: restarts keep every value, several workers count exactly."""

from __future__ import annotations

import gc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import requests
from calabi_exporter.config import Config
from calabi_exporter.server import gunicorn_options
from calabi_exporter.web import background_workers, create_app

from tests.support.exporter_process import ExporterProcess
from tests.support.jobs import job

CONNECTIONS = [f"Connection {n} → Warehouse" for n in range(5)]
STATUSES = ["succeeded", "failed", "cancelled", "succeeded"]


def numbered_job(n: int) -> dict[str, object]:
    minute, second = divmod(n, 60)
    return job(
        f"job_{n:05d}",
        STATUSES[n % 4],
        connection=CONNECTIONS[n % 5],
        started_at=f"2026-04-06T{8 + minute // 60:02d}:{minute % 60:02d}:00Z",
        finished_at=f"2026-04-06T{8 + minute // 60:02d}:{minute % 60:02d}:{max(second, 1):02d}Z",
        records_synced=n,
        bytes_synced=10 * n,
        streams=[{"name": "Account", "status": "succeeded", "records_synced": n}],
    )


def test_a_restart_serves_identical_samples(exporter_process: Callable[..., ExporterProcess], tmp_path: Path) -> None:
    data_dir = tmp_path / "restart"
    first = exporter_process(data_dir=data_dir)
    jobs = [numbered_job(n) for n in range(40)] + [job("pending_1", "pending", created_at="2026-04-06T07:00:00Z")]
    assert requests.post(first.url + "/api/v1/jobs", json={"jobs": jobs}, timeout=30).status_code == 200
    assert (
        requests.post(
            first.url + "/api/v1/jobs/job_00001/logs", data="INFO a", timeout=30, headers={"Content-Type": "text/plain"}
        ).status_code
        == 200
    )
    before = first.scrape()
    first.stop()

    second = exporter_process(data_dir=data_dir)
    after = second.scrape()

    # Everything the store shows but its on-disk size (a clean shutdown checkpoints the WAL) is the same;
    # the process's own samples (process_*, python_*) are the new process's.
    size = ("calabi_exporter_store_size_bytes", frozenset())
    assert after.pop(size) > 0 and before.pop(size) > 0
    assert after.value("process_start_time_seconds") > before.value("process_start_time_seconds")
    assert after.store_samples() == before.store_samples()
    assert after.value("calabi_exporter_stored_jobs") == 41
    assert after.value("calabi_sync_records_synced_total", connection=CONNECTIONS[0]) == sum(range(0, 40, 5))


def test_two_worker_processes_count_a_thousand_concurrent_jobs_exactly(
    exporter_process: Callable[..., ExporterProcess],
) -> None:
    exporter = exporter_process(workers=2)
    jobs = [numbered_job(n) for n in range(1000)]
    session = requests.Session()

    def post(record: dict[str, object]) -> int:
        return session.post(exporter.url + "/api/v1/jobs", json=record, timeout=60).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(post, jobs))
    with ThreadPoolExecutor(max_workers=16) as pool:
        replay_codes = list(pool.map(post, jobs[:200]))

    samples = exporter.scrape()
    assert codes == [200] * 1000
    assert replay_codes == [200] * 200
    assert samples.value("calabi_exporter_stored_jobs") == 1000
    assert samples.value("calabi_exporter_ingested_records_total", endpoint="jobs", outcome="accepted") == 1000
    assert samples.value("calabi_exporter_ingested_records_total", endpoint="jobs", outcome="unchanged") == 200
    for index, connection in enumerate(CONNECTIONS):
        mine = [n for n in range(1000) if n % 5 == index]
        for status in ("succeeded", "failed", "cancelled"):
            expected = sum(1 for n in mine if STATUSES[n % 4] == status)
            assert samples.value("calabi_sync_jobs_total", connection=connection, status=status) == expected
        assert samples.value("calabi_sync_records_synced_total", connection=connection) == sum(mine)
        assert samples.value("calabi_sync_bytes_synced_total", connection=connection) == 10 * sum(mine)
        assert samples.value("calabi_sync_stream_records_synced_total", connection=connection, stream="Account") == (
            sum(mine)
        )
        assert samples.value("calabi_sync_job_duration_seconds_count", connection=connection, status="succeeded") == (
            sum(1 for n in mine if STATUSES[n % 4] == "succeeded")
        )


def test_the_access_log_masks_the_webhooks_query_token_and_authorization(
    exporter_process: Callable[..., ExporterProcess], tmp_path: Path
) -> None:
    token = "s3cret-Ingest-Token-42"
    log = tmp_path / "exporter.log"
    exporter = exporter_process(env={"CALABI_INGEST_TOKENS": token}, log_level="debug", log_path=log)
    failed = {"connection_name": "Stripe → Postgres", "job_id": "job_w1", "status": "failed"}

    webhook = requests.post(f"{exporter.url}/webhooks/calabi?token={token}&source=calabi", json=failed, timeout=10)
    api = requests.get(exporter.url + "/api/v1/jobs/job_w1", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    exporter.stop()

    assert (webhook.status_code, api.status_code) == (200, 200)
    text = log.read_text()
    assert token not in text
    access = [line for line in text.splitlines() if '"POST /webhooks/calabi' in line]
    assert len(access) == 1 and '"POST /webhooks/calabi?token=[REDACTED]&source=calabi HTTP/1.1" 200' in access[0]


def test_a_worker_freezes_what_start_up_made_and_runs_the_background_work_until_it_exits(tmp_path: Path) -> None:
    config = Config(data_dir=str(tmp_path / "data"))
    options = gunicorn_options(config)
    worker = SimpleNamespace(wsgi=create_app(config))
    workers = background_workers(worker.wsgi)
    assert workers is not None
    gc.unfreeze()
    try:
        options["post_worker_init"](worker)
        frozen, running = gc.get_freeze_count(), [w.running for w in workers.workers]
        options["worker_exit"](None, worker)
    finally:
        gc.unfreeze()

    assert frozen > 0
    assert running == [True]  # the purge: the only role this configuration has
    assert [w.running for w in workers.workers] == [False]
