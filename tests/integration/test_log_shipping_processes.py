"""Log shipping across real processes: a restart during an outage, two workers shipping each line once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from calabi_exporter.timeutil import format_rfc3339

from tests.support.exporter_process import ExporterProcess
from tests.support.otlp_receiver import Receiver
from tests.support.processes import free_port
from tests.support.waiting import wait_until


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


def post_lines(base_url: str, job_id: str, count: int, tag: str) -> None:
    """A running job and ``count`` timestamped lines through the real HTTP API."""
    session = requests.Session()
    record = {"job_id": job_id, "connection_name": "Stripe → Postgres", "status": "running"}
    assert session.post(base_url + "/api/v1/jobs", json=record, timeout=10).status_code == 200
    start = time.time() - 3600  # recent: older lines would be dead-lettered as too old for Loki
    body = "".join(f"{format_rfc3339(start + i)} INFO {tag} line {i}\n" for i in range(count))
    response = session.post(
        base_url + f"/api/v1/jobs/{job_id}/logs",
        data=body.encode(),
        headers={"Content-Type": "text/plain"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def received_bodies(receiver: Receiver) -> list[str]:
    with receiver.lock:
        return [r.body for r in receiver.records]


def test_two_worker_processes_ship_each_line_once(
    exporter_process: Callable[..., ExporterProcess], receiver: Receiver
) -> None:
    exporter = exporter_process(workers=2, env={"CALABI_OTLP_LOGS_ENDPOINT": receiver.url})
    threads = [threading.Thread(target=post_lines, args=(exporter.url, f"job-{n}", 500, f"j{n}")) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    wait_until(lambda: len(received_bodies(receiver)) >= 2000, timeout=60, what="2,000 lines at the receiver")
    wait_until(
        lambda: exporter.scrape().value("calabi_exporter_log_outbox_records") == 0, timeout=30, what="empty outbox"
    )

    bodies = received_bodies(receiver)
    assert len(bodies) == 2000
    assert len(set(bodies)) == 2000
    assert exporter.scrape().value("calabi_exporter_log_records_total", outcome="exported") == 2000


def test_a_restart_during_an_outage_loses_nothing(
    exporter_process: Callable[..., ExporterProcess], tmp_path: Path
) -> None:
    receiver = Receiver(port=free_port())  # not started: the endpoint is down
    env = {"CALABI_OTLP_LOGS_ENDPOINT": receiver.url, "CALABI_OTLP_TIMEOUT_SECONDS": "1"}
    first = exporter_process(data_dir=tmp_path / "kept", env=env)
    post_lines(first.url, "job-a", 300, "before")
    assert first.scrape().value("calabi_exporter_log_outbox_records") == 300
    first.stop()

    receiver.start()
    try:
        second = exporter_process(data_dir=tmp_path / "kept", env=env)
        post_lines(second.url, "job-b", 100, "after")
        wait_until(lambda: len(received_bodies(receiver)) >= 400, timeout=60, what="400 lines at the receiver")
        wait_until(
            lambda: second.scrape().value("calabi_exporter_log_outbox_records") == 0, timeout=30, what="empty outbox"
        )
        bodies = received_bodies(receiver)
    finally:
        receiver.stop()

    assert sorted(set(bodies)) == sorted(
        [f"before line {i}" for i in range(300)] + [f"after line {i}" for i in range(100)]
    )
    assert len(bodies) - len(set(bodies)) <= 100  # duplicates, if any, bounded by one batch
