"""The image, built and run for real: non-root, healthy on a non-default port, a job in, its metric out, a clean stop.

Uses podman (or Docker) where one can run containers; builds a stand-in base from
Debian's packages where ``python:3.11-slim`` cannot be pulled, and says so; skips
with the reason where no engine can run. Ports are published on loopback only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.support.container_engine import Engine
from tests.support.processes import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # containers or minutes of real servers: not in the day-to-day subset

TOKEN = "container-test-token-0123456789"
PORT = 9200  # not the default 9188: the health check must follow CALABI_LISTEN


@pytest.fixture
def engine(container_engine: Engine) -> Engine:
    return container_engine


@pytest.fixture
def image(exporter_image: str) -> str:
    return exporter_image


@pytest.fixture
def container(engine: Engine, image: str) -> Iterator[tuple[str, str]]:
    """The exporter's container, listening on every interface inside on port 9200; (name, base URL on loopback)."""
    name = f"calabi-test-{uuid.uuid4().hex[:8]}"
    host_port = free_port()
    engine(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{host_port}:{PORT}",
        "-e", f"CALABI_LISTEN=0.0.0.0:{PORT}", "-e", f"CALABI_INGEST_TOKENS={TOKEN}", image,
    )  # fmt: skip
    yield name, f"http://127.0.0.1:{host_port}"
    engine("rm", "--force", name, check=False)


def inspect(engine: Engine, name: str) -> dict:  # type: ignore[type-arg]
    return json.loads(engine("inspect", name).stdout)[0]  # type: ignore[no-any-return]


def test_the_image_runs_as_uid_10001_with_the_configurable_health_check(engine: Engine, image: str) -> None:
    data = inspect(engine, image)
    config = data["Config"]
    health = config.get("Healthcheck") or data["Healthcheck"]  # where Docker keeps it, where podman does

    assert config["User"] == "10001:10001"
    assert health["Test"] == ["CMD", "calabi-exporter", "healthcheck"]
    assert config["Entrypoint"] == ["calabi-exporter"] and config["Cmd"] == ["serve"]


def test_a_container_on_a_non_default_port_is_healthy_takes_a_job_serves_its_metric_and_stops_cleanly(
    engine: Engine, container: tuple[str, str]
) -> None:
    name, url = container
    wait_until(lambda: _ready(url), timeout=60, what="the container's /readyz")

    health = engine("healthcheck", "run", name, check=False) if engine.command == "podman" else None
    assert health is None or health.returncode == 0, health.stdout + health.stderr
    if engine.command == "podman":
        assert inspect(engine, name)["State"]["Health"]["Status"] == "healthy"
    assert engine("exec", name, "id", "-u").stdout.strip() == "10001"
    assert engine("exec", name, "id", "-g").stdout.strip() == "10001"

    job = {
        "job_id": "job_in_a_container",
        "connection_name": "Salesforce → Snowflake",
        "status": "succeeded",
        "started_at": "2026-04-06T08:00:00Z",
        "finished_at": "2026-04-06T08:01:00Z",
        "records_synced": 4218,
    }
    answer = requests.post(f"{url}/api/v1/jobs", json=job, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    assert 'calabi_sync_jobs_total{connection="Salesforce → Snowflake",status="succeeded"} 1.0' in metrics
    assert 'calabi_sync_records_synced_total{connection="Salesforce → Snowflake"} 4218.0' in metrics

    engine("stop", "-t", "20", name, timeout=60)

    state = inspect(engine, name)["State"]
    assert state["ExitCode"] == 0  # SIGTERM handled: gunicorn finished, not killed after the grace period
    assert "Shutting down: Master" in engine("logs", name).stderr + engine("logs", name).stdout


def test_without_a_token_the_container_refuses_to_open_its_port(engine: Engine, image: str) -> None:
    result = engine("run", "--rm", image, timeout=120, check=False)

    assert result.returncode == 2
    assert "ingest_tokens" in result.stderr


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False
