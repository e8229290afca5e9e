"""Request bodies are taken in within a budget of bytes per worker process (``max_body_bytes_in_flight``).

What a body costs in memory is measured in ``bench/bench_body_memory.py``; here
only who is admitted: a body that does not fit waits, then gets 503 with
``Retry-After``, before any of it is read.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from calabi_exporter.config import Config
from calabi_exporter.store import Store
from calabi_exporter.web import create_app
from calabi_exporter.web.admission import RETRY_AFTER_SECONDS
from calabi_exporter.web.body_budget import BodyBudget
from calabi_exporter.web.services import services

from tests.support.clock import FakeClock
from tests.support.exporter_process import ExporterProcess
from tests.support.jobs import job

BUDGET = 100_000  # bytes
TOKEN = "budget-token-0123456789"


def ndjson(prefix: str, size: int) -> bytes:
    """Job records of about ``size`` bytes in all, one per line."""
    lines: list[bytes] = []
    while sum(map(len, lines)) < size:
        record = job(f"{prefix}-{len(lines):05d}", error_summary="x" * 200)
        lines.append(json.dumps(record).encode() + b"\n")
    return b"".join(lines)


def test_a_body_that_does_not_fit_is_refused_and_fits_once_another_is_released() -> None:
    budget = BodyBudget(100, wait_seconds=0)

    first = budget.acquire(60)
    refused = budget.acquire(50)
    budget.release(60)
    second = budget.acquire(50)

    assert (first, refused, second, budget.in_use) == (60, None, 50, 50)


def test_a_body_larger_than_the_budget_is_admitted_alone() -> None:
    budget = BodyBudget(100, wait_seconds=0)

    alone = budget.acquire(5_000)
    beside_it = budget.acquire(1)

    assert (alone, beside_it, budget.in_use) == (100, None, 100)


def test_a_waiting_body_is_admitted_as_soon_as_room_is_released() -> None:
    budget = BodyBudget(100, wait_seconds=60)
    assert budget.acquire(80) == 80
    admitted: list[int | None] = []
    waiter = threading.Thread(target=lambda: admitted.append(budget.acquire(50)))
    waiter.start()

    budget.release(80)
    waiter.join(timeout=60)

    assert admitted == [50]
    assert budget.in_use == 50


def test_every_answer_gives_its_bytes_back(tmp_path: Path, store: Store, clock: FakeClock) -> None:
    config = Config(data_dir=str(tmp_path / "data"), ingest_tokens=(TOKEN,), max_body_bytes_in_flight=2048)
    app = create_app(config, store=store, clock=clock)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = json.dumps(job("j1", error_summary="x" * 1500)).encode()

    codes = [
        client.post("/api/v1/jobs", data=body, content_type="application/json", headers=auth).status_code,
        client.post("/api/v1/jobs", data=body, content_type="application/json").status_code,
        client.post("/api/v1/jobs", data=body, content_type="text/csv", headers=auth).status_code,
        client.post("/api/v1/jobs", data=body[:-1], content_type="application/json", headers=auth).status_code,
        client.post("/api/v1/jobs/j1/logs", data=b"INFO x" * 300, content_type="text/plain", headers=auth).status_code,
        client.post("/api/v1/nothing-here", data=body, content_type="application/json").status_code,
        client.post("/api/v1/jobs", data=body, content_type="application/json", headers=auth).status_code,
    ]

    assert codes == [200, 401, 415, 400, 200, 404, 200]
    assert services(app).bodies.in_use == 0


@pytest.fixture
def exporter(exporter_process: Callable[..., ExporterProcess]) -> ExporterProcess:
    return exporter_process(env={"CALABI_MAX_BODY_BYTES_IN_FLIGHT": str(BUDGET)})


class HeldRequest:
    """A POST whose headers and first bytes are sent and whose rest waits for :meth:`finish`."""

    def __init__(self, exporter: ExporterProcess, body: bytes) -> None:
        self.body = body
        self.sock = socket.create_connection(("127.0.0.1", exporter.port), timeout=60)
        head = (
            "POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body[:1000])

    def finish(self) -> tuple[int, dict[str, object]]:
        """Send the rest; the status and the JSON answer."""
        self.sock.sendall(self.body[1000:])
        answer = b""
        while chunk := self.sock.recv(65_536):
            answer += chunk
        self.sock.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)


@pytest.fixture
def held(exporter: ExporterProcess) -> Iterator[Callable[[bytes], HeldRequest]]:
    opened: list[HeldRequest] = []

    def hold(body: bytes) -> HeldRequest:
        opened.append(HeldRequest(exporter, body))
        return opened[-1]

    yield hold
    for request in opened:
        request.sock.close()


def post(exporter: ExporterProcess, body: bytes | Iterator[bytes]) -> requests.Response:
    return requests.post(
        exporter.url + "/api/v1/jobs", data=body, headers={"Content-Type": "application/x-ndjson"}, timeout=60
    )


def test_a_body_that_does_not_fit_beside_one_in_progress_gets_503_with_retry_after(
    exporter: ExporterProcess, held: Callable[[bytes], HeldRequest]
) -> None:
    large, medium, small = ndjson("large", 75_000), ndjson("medium", 30_000), ndjson("small", 10_000)
    assert len(large) + len(medium) > BUDGET >= len(large) + len(small)
    in_progress = held(large)

    # The held request is admitted once the server has read its headers: until then the other fits.
    refused = post(exporter, medium)
    for _ in range(10):
        if refused.status_code == 503:
            break
        refused = post(exporter, medium)
    chunked = post(exporter, iter([small]))  # no Content-Length: it may be as large as max_body_bytes
    beside = post(exporter, small)
    scrape = requests.get(exporter.url + "/metrics", timeout=10)
    finished = in_progress.finish()
    after = post(exporter, medium)

    assert (refused.status_code, refused.headers["Retry-After"], refused.json()) == (
        503,
        str(RETRY_AFTER_SECONDS),
        {"error": "too many request bodies are being processed at once; retry shortly", "field": "body"},
    )
    assert (chunked.status_code, chunked.headers["Retry-After"]) == (503, str(RETRY_AFTER_SECONDS))
    assert (beside.status_code, beside.json()["rejected"]) == (200, 0)
    assert scrape.status_code == 200  # a request without a body costs nothing
    assert (finished[0], finished[1]["accepted"], finished[1]["rejected"]) == (200, large.count(b"\n"), 0)
    assert (after.status_code, after.json()["rejected"]) == (200, 0)
