"""The embedded default main job: ``calabi-exporter demo`` and its simulator."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests
from calabi_exporter.simulator import CONNECTIONS, backfill

from tests.support.clock import T0
from tests.support.demo_metrics import JOB_FAMILIES, families_without_a_nonzero_value
from tests.support.exporter_process import ExporterProcess
from tests.support.processes import environment_without_calabi, free_port
from tests.support.samples import parse_samples


def test_demo_serves_nonzero_values_for_every_job_metric_family(tmp_path: Path) -> None:
    """How soon is measured by bench/bench_demo.py (target: 15 s); here it must happen within a loose bound."""
    port = free_port()
    env = environment_without_calabi()
    started = time.monotonic()
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "calabi_exporter",
            "demo",
            "--listen",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(tmp_path / "demo"),
            "--seed",
            "7",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    missing = JOB_FAMILIES
    text = ""
    try:
        while time.monotonic() - started < 120 and missing:
            with contextlib.suppress(requests.RequestException):
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                missing = families_without_a_nonzero_value(text)
            time.sleep(0.25)
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()

    assert missing == []
    assert demo.returncode == 0
    samples = parse_samples(text)

    def value(family: str, connection: str) -> float:
        return samples.family(family)[frozenset({("connection", connection)})]

    # The story detection tells: Shopify went quiet three hours ago, overdue on its hourly schedule;
    # Jira still succeeds, with a hundredth of its usual rows.
    quiet = "Shopify → Snowflake"
    interval = value("calabi_sync_expected_interval_seconds", quiet)  # hourly, give or take the jobs' jitter
    assert 3500 < interval < 3700
    assert value("calabi_sync_overdue_threshold_seconds", quiet) == interval + 3600
    assert time.time() - value("calabi_sync_last_success_timestamp_seconds", quiet) > 3 * 3600
    dropped = "Jira → Databricks"
    assert value("calabi_sync_last_success_records", dropped) < 0.25 * value("calabi_sync_records_expected", dropped)
    assert value("calabi_sync_last_success_records_score", dropped) < -5


def test_the_simulator_tells_the_same_story_for_the_same_seed() -> None:
    import random

    one = backfill(CONNECTIONS, random.Random(3), now=T0)
    two = backfill(CONNECTIONS, random.Random(3), now=T0)
    other = backfill(CONNECTIONS, random.Random(4), now=T0)

    assert [j.record for j in one] == [j.record for j in two]
    assert [j.logs for j in one] == [j.logs for j in two]
    assert [j.record["job_id"] for j in one] != [j.record["job_id"] for j in other]


def test_the_simulated_history_has_every_status_and_the_products_messages() -> None:
    import random

    jobs = backfill(CONNECTIONS, random.Random(42), now=T0)

    statuses = {j.record["status"] for j in jobs}
    summaries = {j.record["error_summary"] for j in jobs}
    lines = [line for j in jobs for line in j.logs]
    assert statuses == {"succeeded", "failed", "cancelled"}
    assert "Stream contacts: 401 Unauthorized — token expired" in summaries
    assert any(line.endswith("WARN Salesforce API rate limit at 85% — throttling requests") for line in lines)
    salesforce = next(
        j for j in jobs if j.record["connection_name"] == "Salesforce → Snowflake" and j.record["status"] == "succeeded"
    )
    assert [s["status"] for s in salesforce.record["streams"]] == ["succeeded"] * 14


def test_simulate_against_an_exporter_that_refuses_its_token_exits_2_naming_the_token(
    exporter_process: Callable[..., ExporterProcess],
) -> None:
    exporter = exporter_process(env={"CALABI_INGEST_TOKENS": "the-real-token-0123456789"})
    base = [sys.executable, "-m", "calabi_exporter", "simulate", "--url", exporter.url, "--duration", "5"]

    without = subprocess.run(base, env=environment_without_calabi(), capture_output=True, text=True, timeout=120)
    wrong = subprocess.run(
        [*base, "--token", "not-the-token-0123456789"],
        env=environment_without_calabi(),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert (without.returncode, without.stderr.splitlines()[-1]) == (
        2,
        f"calabi-exporter: config error: --token: {exporter.url} needs an ingest token and was given no token "
        "(HTTP 401)",
    )
    assert (wrong.returncode, wrong.stderr.splitlines()[-1]) == (
        2,
        f"calabi-exporter: config error: --token: {exporter.url} needs an ingest token and was given a token "
        "the exporter refused (HTTP 401)",
    )
    stored = requests.get(
        exporter.url + "/api/v1/jobs", headers={"Authorization": "Bearer the-real-token-0123456789"}, timeout=10
    )
    assert stored.json()["jobs"] == []
