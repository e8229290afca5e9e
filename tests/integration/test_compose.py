"""docker-compose.yml brought up whole with podman-compose, as a user runs it, every service but Grafana.

The stack runs from a copy of the files a user has (compose file, ``.env``, the configs it
mounts, with ``alerting-rules/secrets/`` as shipped: empty), with the choices ``.env``
asks for given as environment variables, as a user exports them, and host ports moved to free
loopback ports through the variables ``.env`` documents. The exporter's image is the
Dockerfile's; Prometheus, Alertmanager and Loki are the images the file pins, or stand-ins
built under those tags from this machine's binaries where no registry answers
(:mod:`.container_engine`). podman 4.3 runs health checks only when asked (its timers need
systemd), so the test asks, as the timer would.

A failing job posted through the exporter's published port must come out as a metric in
Prometheus, an alert in Alertmanager, its log line in Loki and an answer of the MCP tools.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import requests
from calabi_exporter.timeutil import format_rfc3339
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.container_engine import Engine
from tests.support.paths import ROOT
from tests.support.processes import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # containers or minutes of real servers: not in the day-to-day subset

TOKEN = "compose-test-token-0123456789abcdef"
READ_TOKEN = "compose-read-token-0123456789abcdef"
CONNECTION = "HubSpot Production → BigQuery"
#: Every service but Grafana, whose image no Debian package stands in for, and the profiles' ones.
SERVICES = ("exporter", "loki", "prometheus", "alertmanager", "mcp")
#: What a user's copy of the repository holds that the compose file reads.
USER_FILES = ("docker-compose.yml", ".env", "loki", "prometheus", "alerting-rules", "grafana", "dashboards")
PORTS = ("EXPORTER_PORTS", "PROMETHEUS_PORT", "LOKI_PORT", "ALERTMANAGER_PORT", "MCP_PORT")


@dataclass
class Stack:
    """A compose project brought up from ``directory``: its variables, and how to call podman-compose on it."""

    engine: Engine
    directory: Path
    project: str
    env: dict[str, str]
    ports: dict[str, int]

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "podman_compose", "-p", self.project, *args],
            cwd=self.directory, env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"podman-compose {' '.join(args)}: {result.stdout[-3000:]}{result.stderr[-3000:]}")
        return result

    def url(self, variable: str) -> str:
        return f"http://127.0.0.1:{self.ports[variable]}"

    def containers(self) -> dict[str, dict[str, Any]]:
        """This project's containers by service, as ``podman ps`` sees them."""
        listed = json.loads(
            self.engine("ps", "-a", "--format", "json", "--filter", f"label=io.podman.compose.project={self.project}")
            .stdout or "[]"
        )  # fmt: skip
        return {c["Labels"]["com.docker.compose.service"]: c for c in listed}

    def healthy(self, service: str) -> bool:
        """Runs the service's health check now (what podman's timer would do) and says whether it passed."""
        name = self.containers()[service]["Names"][0]
        return self.engine("healthcheck", "run", name, check=False).returncode == 0

    def logs(self, service: str) -> str:
        name = self.containers()[service]["Names"][0]
        result = self.engine("logs", name, check=False)
        return result.stdout + result.stderr


def user_copy(destination: Path) -> Path:
    """The files a user of the stack has, copied as they are (secrets folder with its README only)."""
    for name in USER_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, destination / name)
    secrets = destination / "alerting-rules" / "secrets"
    for path in secrets.iterdir():
        if path.name != "README.md":
            path.unlink()
    return destination


def new_stack(engine: Engine, image: str, directory: Path, **choices: str) -> Stack:
    ports = {name: free_port() for name in PORTS}
    env = {
        **engine.environment(),
        "INGEST_TOKEN": TOKEN,
        "READ_TOKEN": READ_TOKEN,
        "GRAFANA_ADMIN_PASSWORD": "not-started-in-this-test",
        "EXPORTER_IMAGE": image,
        **{name: f"127.0.0.1:{port}" if name == "EXPORTER_PORTS" else str(port) for name, port in ports.items()},
        **choices,
    }
    return Stack(engine, directory, f"calabi-test-{uuid.uuid4().hex[:8]}", env, ports)


@pytest.fixture(scope="module")
def stack(
    container_engine: Engine,
    exporter_image: str,
    compose_server_images: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The stack up, every service healthy, with the null Alertmanager configuration ``.env`` offers."""
    directory = user_copy(tmp_path_factory.mktemp("compose"))
    stack = new_stack(container_engine, exporter_image, directory, ALERTMANAGER_CONFIG="alertmanager-null.yml")
    try:
        stack.compose("up", "-d", "--no-build", *SERVICES)
        unhealthy = [s for s in SERVICES if s != "mcp"]  # the MCP tools serve no readiness endpoint

        def all_healthy() -> bool:
            unhealthy[:] = [service for service in unhealthy if not stack.healthy(service)]
            return not unhealthy

        wait_until(all_healthy, timeout=180, interval=2, what=f"the health checks of {unhealthy} to pass")
        yield stack
    finally:
        for service in SERVICES:
            if service in stack.containers():
                print(f"--- {service}\n{stack.logs(service)[-2000:]}")
        stack.compose("down", "-v", "-t", "20", check=False)


def test_the_stack_runs_the_services_asked_for_and_no_demo_simulator(stack: Stack) -> None:
    containers = stack.containers()

    assert sorted(containers) == sorted(SERVICES)
    assert {service: c["State"] for service, c in containers.items()} == dict.fromkeys(SERVICES, "running")
    connections = requests.get(
        stack.url("EXPORTER_PORTS") + "/api/v1/connections", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ).json()["connections"]
    assert connections == []  # no simulated job mixed in: the simulator runs only with --profile demo


def test_prometheus_loki_and_alertmanager_answer_on_loopback_only(stack: Stack) -> None:
    published = {
        service: {(p["host_ip"], p["container_port"]) for p in c.get("Ports") or []}
        for service, c in stack.containers().items()
    }

    assert published == {
        "exporter": {("127.0.0.1", 9188)},  # the test moved it to loopback through EXPORTER_PORTS
        "loki": {("127.0.0.1", 3100)},
        "prometheus": {("127.0.0.1", 9090)},
        "alertmanager": {("127.0.0.1", 9093)},
        "mcp": {("127.0.0.1", 9189)},
    }


def test_a_failed_job_posted_to_the_exporter_is_a_metric_an_alert_a_log_line_and_an_mcp_answer(stack: Stack) -> None:
    now = time.time()
    job_id = f"job_compose_{uuid.uuid4().hex[:8]}"
    record = {
        "job_id": job_id,
        "connection_name": CONNECTION,
        "status": "failed",
        "started_at": format_rfc3339(now - 180),
        "finished_at": format_rfc3339(now - 60),
        "error_summary": "Stream contacts: 401 Unauthorized — token expired",
        "job_url": f"https://app.calabi.io/connect/jobs/{job_id}",
    }
    auth = {"Authorization": f"Bearer {TOKEN}"}
    exporter = stack.url("EXPORTER_PORTS")
    answer = requests.post(exporter + "/api/v1/jobs", json=record, headers=auth, timeout=10)
    assert answer.json()["outcome"] == "accepted", answer.text
    lines = f"{format_rfc3339(now - 120)} ERROR Stream contacts: 401 Unauthorized — token expired\n"
    logged = requests.post(
        f"{exporter}/api/v1/jobs/{job_id}/logs", data=lines.encode(), headers={**auth, "Content-Type": "text/plain"}
    )
    assert logged.json() == {"accepted": 1, "unchanged": 0}

    # Prometheus scrapes the exporter by its service name every 15 s.
    def failed_in_prometheus() -> float | None:
        query = f'calabi_sync_jobs_total{{connection="{CONNECTION}",status="failed"}}'
        result = requests.get(stack.url("PROMETHEUS_PORT") + "/api/v1/query", params={"query": query}, timeout=10)
        values = [float(r["value"][1]) for r in result.json()["data"]["result"]]
        return values[0] if values else None

    wait_until(lambda: failed_in_prometheus() == 1.0, timeout=120, interval=2, what="the failed job in Prometheus")

    # The rules fire at the next evaluation and Prometheus sends the alert to the alertmanager service.
    def alert() -> dict[str, str] | None:
        alerts = requests.get(stack.url("ALERTMANAGER_PORT") + "/api/v2/alerts", timeout=10).json()
        found = [a["labels"] for a in alerts if a["labels"].get("alertname") == "CalabiSyncJobFailed"]
        return found[0] if found else None

    wait_until(lambda: alert() is not None, timeout=120, interval=2, what="CalabiSyncJobFailed in Alertmanager")
    labels = alert()
    assert labels is not None
    assert (labels["connection"], labels["job_id"], labels["severity"]) == (CONNECTION, job_id, "warning")

    # The exporter ships the line to the loki service over OTLP, with the stack's resource attributes.
    def lines_in_loki() -> list[tuple[dict[str, str], str]]:
        params = {
            "query": '{service_name="calabi-connect"} | event="log" |= "token expired"',
            "start": str(int((now - 3600) * 1e9)),
            "end": str(int((time.time() + 60) * 1e9)),
        }
        result = requests.get(stack.url("LOKI_PORT") + "/loki/api/v1/query_range", params=params, timeout=10)
        return [(s["stream"], v[1]) for s in result.json()["data"]["result"] for v in s["values"]]

    wait_until(lambda: lines_in_loki() != [], timeout=120, interval=2, what="the log line in Loki")
    [(stream, line)] = lines_in_loki()
    assert line == "Stream contacts: 401 Unauthorized — token expired"
    assert (stream["connection"], stream["deployment_environment"], stream["job_id"]) == (
        CONNECTION,
        "production",
        job_id,
    )

    # The MCP tools answer an agent sending the read token, and read the exporter's API with the same one.
    async def ask() -> Any:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {READ_TOKEN}"}, timeout=30) as http,
            Client(streamable_http_client(stack.url("MCP_PORT") + "/mcp", http_client=http)) as client,
        ):
            result = await client.call_tool("get_job_status", {"job_id": job_id})
            assert not result.is_error, result.content
            return result.structured_content

    without_token = requests.post(stack.url("MCP_PORT") + "/mcp", json={}, timeout=10)
    [status] = asyncio.run(asyncio.wait_for(ask(), timeout=60))["jobs"]
    assert without_token.status_code == 401
    assert (status["job_id"], status["status"], status["connection_name"]) == (job_id, "failed", CONNECTION)
    assert status["error_lines"] == ["Stream contacts: 401 Unauthorized — token expired"]


def test_alertmanager_refuses_to_start_while_the_secrets_of_its_configuration_are_missing(
    container_engine: Engine, exporter_image: str, compose_server_images: list[str], tmp_path: Path
) -> None:
    directory = user_copy(tmp_path)
    stack = new_stack(container_engine, exporter_image, directory, ALERTMANAGER_CONFIG="alertmanager.yml")

    try:
        result = stack.compose("run", "--rm", "--no-deps", "alertmanager", timeout=300, check=False)
    finally:
        stack.compose("down", "-v", "-t", "20", check=False)  # `run` made the project's pod: no leftover

    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "alertmanager: refusing to start: /etc/alertmanager/alertmanager.yml names secret files that are missing "
        "or empty: /etc/alertmanager/secrets/smtp_password /etc/alertmanager/secrets/slack_webhook_url "
        "/etc/alertmanager/secrets/pagerduty_routing_key"
    ) in result.stdout + result.stderr
