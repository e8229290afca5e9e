"""Status webhooks from two real worker processes: each event delivered exactly once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.capture_servers import WebhookReceiver
from tests.support.exporter_process import ExporterProcess
from tests.support.jobs import job
from tests.support.waiting import wait_until

SECRET = "whsec-0123456789abcdef"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def transitions(bodies: list[dict[str, Any]]) -> dict[str, list[tuple[str | None, str]]]:
    seen: dict[str, list[tuple[str | None, str]]] = {}
    for body in bodies:
        seen.setdefault(body["job_id"], []).append((body["previous_status"], body["status"]))
    return seen


def test_two_worker_processes_deliver_each_event_exactly_once(
    tmp_path: Path, receiver: WebhookReceiver, exporter_process: Callable[..., ExporterProcess]
) -> None:
    config_file = tmp_path / "calabi.yaml"
    config_file.write_text(
        f"webhooks:\n  - name: ops\n    url: {receiver.url}\n    secret: {SECRET}\n", encoding="utf-8"
    )
    exporter = exporter_process(workers=2, env={"CALABI_CONFIG": str(config_file)})

    def post(records: list[dict[str, Any]]) -> None:
        response = requests.post(exporter.url + "/api/v1/jobs", json=records, timeout=30)
        assert response.status_code == 200, response.text

    threads = [
        threading.Thread(target=post, args=([job(f"w{t}-{n}", "running") for n in range(25)],)) for t in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    post([job(f"w{t}-{n}", "succeeded") for t in range(4) for n in range(25)])
    wait_until(lambda: len(receiver.requests) >= 200, timeout=30, what="200 deliveries")
    wait_until(
        lambda: exporter.scrape().value("calabi_exporter_webhook_queue_depth", endpoint="ops") == 0,
        timeout=10,
        what="the queue to empty",
    )

    bodies = receiver.bodies()
    assert len(bodies) == 200
    assert transitions(bodies) == {
        f"w{t}-{n}": [(None, "running"), ("running", "succeeded")] for t in range(4) for n in range(25)
    }
    assert (
        exporter.scrape().value("calabi_exporter_webhook_deliveries_total", endpoint="ops", outcome="delivered") == 200
    )
