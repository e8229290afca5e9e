"""Airbyte's and Fivetran's webhooks through HTTP into a store on each backend: the same jobs, metrics and answers.

The payloads are the vendors' own (``tests/data/sources/``, sources in its README).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from calabi_exporter.config import Config
from calabi_exporter.store import Store
from calabi_exporter.web import create_app
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.support.clock import FakeClock
from tests.support.paths import DATA
from tests.support.samples import Samples

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

AIRBYTE = DATA / "sources" / "airbyte"
FIVETRAN = DATA / "sources" / "fivetran"
SECRET = "test-shared-secret"
SHEETS = "Google Sheets → Postgres"
MAY_26 = 1779796800.0  # 2026-05-26T12:00:00Z, after the Fivetran events


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(data_dir=str(tmp_path / "data"), sources_fivetran_webhook_secret=SECRET)


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Fivetran-Signature-256": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().upper()}


def to_fivetran(client: FlaskClient, body: bytes, headers: dict[str, str] | None = None) -> TestResponse:
    return client.post(
        "/webhooks/fivetran",
        data=body,
        content_type="application/json",
        headers=signed(body) if headers is None else headers,
    )


def stored_jobs(scrape: Callable[[], Samples]) -> float:
    return scrape().value("calabi_exporter_stored_jobs")


def test_an_airbyte_notification_is_a_job_with_its_platform_on_the_connection_info(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    response = client.post(
        "/webhooks/airbyte", data=(AIRBYTE / "cloud-sync-completed.json").read_bytes(), content_type="application/json"
    )

    assert (response.status_code, response.get_json()) == (
        200,
        {"kind": "sync_completed", "job_id": "airbyte:20441143", "outcome": "accepted"},
    )
    samples = scrape()
    assert (
        samples.value(
            "calabi_sync_connection_info",
            connection=SHEETS,
            connection_id="aa941643-07ea-48a2-9035-024575491720",
            source="Google Sheets",
            destination="Postgres",
            platform="airbyte",
        )
        == 1
    )
    assert samples.value("calabi_sync_records_synced_total", connection=SHEETS) == 1400
    assert samples.value("calabi_sync_jobs_total", connection=SHEETS, status="succeeded") == 1
    assert samples.value("calabi_exporter_source_notices_total", platform="airbyte", kind="sync_completed") == 1
    job = client.get("/api/v1/jobs/airbyte:20441143").get_json()
    assert (job["platform"], job["created_at"], job["started_at"], job["duration_seconds"]) == (
        "airbyte",
        "2024-10-22T20:27:59Z",
        None,
        83.0,
    )


def test_a_notification_sent_again_is_counted_once(client: FlaskClient, scrape: Callable[[], Samples]) -> None:
    body = (AIRBYTE / "cloud-sync-completed.json").read_bytes()
    client.post("/webhooks/airbyte", data=body, content_type="application/json")

    again = client.post("/webhooks/airbyte", data=body, content_type="application/json")

    assert again.get_json()["outcome"] == "unchanged"
    samples = scrape()
    assert samples.value("calabi_sync_jobs_total", connection=SHEETS, status="succeeded") == 1
    assert samples.value("calabi_exporter_source_notices_total", platform="airbyte", kind="sync_completed") == 2


def test_a_notice_without_a_job_is_answered_and_counted_and_stores_nothing(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    first = {"type": "section", "text": {"type": "mrkdwn", "text": "Connection disabled: <https://a/c|A → B>"}}

    response = client.post("/webhooks/airbyte", json={"text": "disabled", "blocks": [first]})

    assert (response.status_code, response.get_json()) == (
        200,
        {"kind": "connection_disabled", "job_id": None, "outcome": "counted"},
    )
    samples = scrape()
    assert samples.value("calabi_exporter_source_notices_total", platform="airbyte", kind="connection_disabled") == 1
    assert samples.value("calabi_exporter_stored_jobs") == 0


def test_a_malformed_airbyte_payload_is_a_400_naming_its_field_and_nothing_is_stored(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    body = json.loads((AIRBYTE / "docs-failed-sync.json").read_bytes())
    body["data"]["recordsCommitted"] = "many"

    response = client.post("/webhooks/airbyte", json=body)

    assert (response.status_code, response.get_json()["field"]) == (400, "data.recordsCommitted")
    samples = scrape()
    assert samples.value("calabi_exporter_stored_jobs") == 0
    assert (
        samples.value("calabi_exporter_rejected_records_total", endpoint="airbyte", field="data.recordsCommitted") == 1
    )


def test_the_airbyte_webhook_takes_the_ingest_token_in_its_url(
    tmp_path: Path, clock: FakeClock, make_store: Callable[..., Store]
) -> None:
    config = Config(data_dir=str(tmp_path / "data"), ingest_tokens=("ingest-token-0123456789",))
    client = create_app(config, store=make_store(tmp_path / "data", clock=clock), clock=clock).test_client()
    body = (AIRBYTE / "cloud-sync-completed.json").read_bytes()

    refused = client.post("/webhooks/airbyte", data=body, content_type="application/json")
    taken = client.post("/webhooks/airbyte?token=ingest-token-0123456789", data=body, content_type="application/json")

    assert (refused.status_code, taken.status_code) == (401, 200)


def test_fivetran_s_start_and_end_of_a_sync_are_one_job_with_its_duration(
    client: FlaskClient, clock: FakeClock, scrape: Callable[[], Samples]
) -> None:
    clock.now = MAY_26
    start = (FIVETRAN / "sync-start.json").read_bytes()
    end = json.dumps(
        json.loads(start)
        | {"event": "sync_end", "created": "2026-05-26T10:04:30.000Z", "data": {"status": "SUCCESSFUL"}}
    ).encode()

    outcomes = [to_fivetran(client, body).get_json()["outcome"] for body in (start, end, end)]

    assert outcomes == ["accepted", "accepted", "unchanged"]  # Fivetran retries: the same event is counted once
    job = client.get("/api/v1/jobs/fivetran:syn_def456").get_json()
    assert (job["status"], job["connection_name"], job["duration_seconds"], job["platform"]) == (
        "succeeded",
        "users_pg",
        270.0,
        "fivetran",
    )
    samples = scrape()
    assert samples.value("calabi_sync_jobs_total", connection="users_pg", status="succeeded") == 1
    assert samples.value("calabi_exporter_source_notices_total", platform="fivetran", kind="sync_end") == 2


def test_a_fivetran_failure_counts_and_a_reschedule_does_not(
    client: FlaskClient, clock: FakeClock, scrape: Callable[[], Samples]
) -> None:
    clock.now = MAY_26
    failed = (FIVETRAN / "sync-end-failure-with-task.json").read_bytes()
    rescheduled = json.dumps(
        json.loads(failed)
        | {"sync_id": "syn_later", "created": "2026-05-26T11:00:00.000Z", "data": {"status": "RESCHEDULED"}}
    ).encode()

    for body in (failed, rescheduled):
        assert to_fivetran(client, body).status_code == 200

    samples = scrape()
    assert samples.value("calabi_sync_consecutive_failures", connection="users_pg") == 1
    assert samples.value("calabi_sync_jobs_total", connection="users_pg", status="cancelled") == 1


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="unsigned"),
        pytest.param({"X-Fivetran-Signature-256": "0" * 64}, id="wrong signature"),
        pytest.param(signed((FIVETRAN / "sync-start.json").read_bytes(), "another-secret"), id="another secret"),
    ],
)
def test_a_fivetran_body_not_signed_with_the_secret_is_a_401_and_stored_nowhere(
    client: FlaskClient, clock: FakeClock, scrape: Callable[[], Samples], headers: dict[str, str]
) -> None:
    clock.now = MAY_26

    response = to_fivetran(client, (FIVETRAN / "sync-start.json").read_bytes(), headers)

    assert (response.status_code, response.get_json()["field"]) == (401, "X-Fivetran-Signature-256")
    samples = scrape()
    assert samples.value("calabi_exporter_stored_jobs") == 0
    assert samples.value("calabi_exporter_source_notices_total", platform="fivetran", kind="sync_start") == 0


def test_without_a_secret_the_fivetran_webhook_refuses_every_delivery(
    tmp_path: Path, clock: FakeClock, make_store: Callable[..., Store]
) -> None:
    config = Config(data_dir=str(tmp_path / "data"))
    client = create_app(config, store=make_store(tmp_path / "data", clock=clock), clock=clock).test_client()
    body = (FIVETRAN / "test-event.docs.json").read_bytes()

    response = to_fivetran(client, body)

    assert (response.status_code, response.get_json()["field"]) == (401, "secret")


@pytest.mark.parametrize("name", ["test-event.docs.json", "test-call-sync-end.json"])
def test_fivetran_s_test_events_get_a_2xx_so_that_the_webhook_can_be_created(
    client: FlaskClient, scrape: Callable[[], Samples], name: str
) -> None:
    response = to_fivetran(client, (FIVETRAN / name).read_bytes())

    assert (response.status_code, response.get_json()) == (200, {"kind": "test", "job_id": None, "outcome": "counted"})
    assert scrape().value("calabi_exporter_stored_jobs") == 0
