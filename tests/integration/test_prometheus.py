"""A real Prometheus scrapes the exporter; PromQL over a known data set gives exact numbers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.exporter_process import ExporterProcess
from tests.support.jobs import job
from tests.support.prometheus_checks import SF, STRIPE, post, settled
from tests.support.prometheus_server import Prometheus
from tests.support.waiting import wait_until


def test_promql_over_a_known_data_set_returns_exact_numbers(
    exporter_process: Callable[..., ExporterProcess], prometheus_for: Callable[[str], Prometheus]
) -> None:
    exporter = exporter_process()
    post(
        exporter,
        job(
            "sf1",
            started_at="2026-04-06T08:00:00Z",
            finished_at="2026-04-06T08:01:42Z",
            records_synced=12847,
            bytes_synced=3_200_000,
        ),
        job(
            "sf2",
            "failed",
            started_at="2026-04-06T09:00:00Z",
            failed_at="2026-04-06T09:03:16Z",
            records_synced=10,
            records_failed=4,
        ),
        job(
            "st1",
            connection=STRIPE,
            started_at="2026-04-06T08:00:00Z",
            finished_at="2026-04-06T08:00:30Z",
            records_synced=500,
        ),
        job("st2", "running", connection=STRIPE, started_at="2026-04-06T10:00:00Z"),
    )
    prometheus = prometheus_for(f"127.0.0.1:{exporter.port}")
    wait_until(settled(prometheus, 'up{job="calabi-exporter"}', 1), timeout=30, what="the first scrape")
    wait_until(settled(prometheus, "sum(calabi_sync_jobs_total)", 3), timeout=30, what="phase one in Prometheus")
    # Every sample at or before t0 holds phase one: phase two is posted after it.
    t0 = time.time()

    post(
        exporter,
        job("sf3", "failed", started_at="2026-04-06T10:00:00Z", failed_at="2026-04-06T10:02:00Z", records_synced=1),
        job("st3", "failed", connection=STRIPE, started_at="2026-04-06T10:30:00Z", failed_at="2026-04-06T10:30:05Z"),
    )
    wait_until(settled(prometheus, "sum(calabi_sync_jobs_total)", 5), timeout=30, what="phase two in Prometheus")

    assert prometheus.scalar(f'calabi_sync_records_synced_total{{connection="{SF}"}}') == 12858
    assert prometheus.scalar(f'calabi_sync_records_failed_total{{connection="{SF}"}}') == 4
    assert prometheus.scalar("sum(calabi_sync_bytes_synced_total)") == 3_200_000
    failed_since_t0 = (
        f'sum(calabi_sync_jobs_total{{status="failed"}}) - sum(calabi_sync_jobs_total{{status="failed"}} @ {t0:.3f})'
    )
    assert prometheus.scalar(failed_since_t0) == 2
    assert prometheus.scalar(f'calabi_sync_consecutive_failures{{connection="{SF}"}}') == 2
    assert prometheus.scalar(f'calabi_sync_consecutive_failures{{connection="{STRIPE}"}}') == 1
    assert prometheus.scalar(f'calabi_sync_last_success_timestamp_seconds{{connection="{SF}"}}') == 1775462502
    assert prometheus.scalar(f'calabi_sync_job_duration_seconds_count{{connection="{SF}",status="failed"}}') == 2
    assert prometheus.scalar(f'calabi_sync_job_duration_seconds_sum{{connection="{SF}",status="failed"}}') == 316
    assert prometheus.scalar('sum(calabi_sync_jobs_in_progress{status="running"})') == 1
    assert (
        prometheus.scalar("count(calabi_sync_consecutive_failures >= on(connection) calabi_sync_failure_threshold)")
        == 1
    )
    stale = prometheus.query(
        "time() - calabi_sync_last_success_timestamp_seconds > on(connection) calabi_sync_freshness_threshold_seconds"
    )
    assert sorted(r["metric"]["connection"] for r in stale) == [SF, STRIPE]
    latest = prometheus.query(f'calabi_sync_last_job_info{{connection="{SF}"}}')
    assert [r["metric"]["job_id"] for r in latest] == ["sf3"]


def test_prometheus_scrapes_a_token_guarded_metrics_endpoint_with_its_credentials_file(
    exporter_process: Callable[..., ExporterProcess], prometheus_for: Callable[..., Prometheus], tmp_path: Path
) -> None:
    token = "scrape-token-0123456789"
    exporter = exporter_process(env={"CALABI_METRICS_TOKENS": token})
    post(exporter, job("sf1", finished_at="2026-04-06T08:01:42Z", records_synced=12847))
    assert requests.get(exporter.url + "/metrics", timeout=10).status_code == 401
    secret = tmp_path / "metrics-token"
    secret.write_text(token + "\n")

    prometheus = prometheus_for(exporter.url.removeprefix("http://"), credentials_file=secret)

    wait_until(settled(prometheus, 'up{job="calabi-exporter"}', 1.0), timeout=30, what="an authorised scrape")
    assert prometheus.scalar(f'calabi_sync_records_synced_total{{connection="{SF}"}}') == 12847
