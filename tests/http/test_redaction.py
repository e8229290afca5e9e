"""Secrets never reach the store, a log line or a dead letter: a table of real-looking secrets and of lines
that must stay as they are, and the webhook sender against receivers that fail."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from calabi_exporter.config import Config, WebhookEndpoint
from calabi_exporter.logship import LogShipper
from calabi_exporter.redact import redact
from calabi_exporter.status_webhooks import WebhookDeliverer
from calabi_exporter.store import Store
from calabi_exporter.web import create_app
from flask.testing import FlaskClient

from tests.support.capture_servers import WebhookReceiver
from tests.support.clock import FakeClock
from tests.support.otlp_receiver import Receiver
from tests.support.redaction_samples import SECRETS

UNTOUCHED = [
    "INFO Syncing stream: Account",
    "INFO Stream Account: 4,218 records synced in 18.2s",
    "WARN Salesforce API rate limit at 85% — throttling requests",
    'ERROR Failed to refresh OAuth token for source "HubSpot Production"',
    'ERROR Response 401: {"error": "invalid_token"}',
    "Stream contacts: 401 Unauthorized — token expired",
    "Basic authentication failed for user etl",
    "Invalid credentials: check the API key in the source settings",
    "GET https://api.example.com:8443/v1/users?email=ops@example.com&limit=10",
    "see https://mastodon.example/@calabi and ssh://git@github.com/calabi/connect.git",
    "GET /v1/search?design=flat&author=ops&page=2",
]


@pytest.mark.parametrize(("text", "secret", "expected"), SECRETS, ids=[s[1][:12] for s in SECRETS])
def test_a_secret_is_replaced_and_the_rest_of_the_line_kept(text: str, secret: str, expected: str) -> None:
    assert redact(text) == expected
    assert secret not in redact(text)


@pytest.mark.parametrize("text", UNTOUCHED)
def test_ordinary_log_lines_are_left_as_they_are(text: str) -> None:
    assert redact(text) == text


def test_redacting_twice_changes_nothing_more() -> None:
    for text, _, expected in SECRETS:
        assert redact(redact(text)) == expected


def test_no_secret_reaches_the_store_through_any_endpoint(client: FlaskClient, store: Store) -> None:
    texts = [text for text, _, _ in SECRETS]
    job = {
        "job_id": "job-secrets",
        "connection_name": "HubSpot Production → BigQuery",
        "status": "failed",
        "error_summary": texts[0],
        "job_url": "https://calabi.example.com/jobs/1?token=a1b2c3d4e5f6",
        "streams": [{"name": "contacts", "status": "failed", "error": texts[4]}],
    }
    assert client.post("/api/v1/jobs", json=job).status_code == 200
    webhook = {
        "connection_name": "Stripe → Postgres",
        "job_id": "job-hook",
        "status": "failed",
        "error_summary": texts[7],
    }
    assert client.post("/webhooks/calabi", json=webhook).status_code == 200
    text_body = "\n".join(f"ERROR {t}" for t in texts)
    assert client.post("/api/v1/jobs/job-secrets/logs", data=text_body, content_type="text/plain").status_code == 200
    json_lines = [{"level": "ERROR", "message": t} for t in texts]
    assert client.post("/api/v1/jobs/job-hook/logs", json=json_lines).status_code == 200

    stored = store.reads.job("job-secrets"), store.reads.job("job-hook")
    everything = repr(stored) + repr(store.reads.log_lines("job-secrets")) + repr(store.reads.log_lines("job-hook"))
    on_disk = b"".join(p.read_bytes() for p in store.database.path.parent.iterdir() if p.is_file())  # database and WAL
    for _, secret, _ in SECRETS:
        assert secret not in everything
        assert secret.encode() not in on_disk
    assert stored[0] is not None and stored[0].error_summary == "Authorization: Bearer [REDACTED]"
    assert stored[0].job_url == "https://calabi.example.com/jobs/1?token=[REDACTED]"
    assert len(store.reads.log_lines("job-secrets")) == len(texts)


WEBHOOK_TOKEN = "HUNTER2-webhook-token-0123"
WEBHOOK_SIG = "HUNTER2-webhook-sig-4567"
LOCATION_TOKEN = "HUNTER2-location-89ab"


@pytest.mark.every_backend
def test_the_webhook_sender_keeps_the_endpoints_token_out_of_its_log_lines_and_dead_letters(
    tmp_path: Path,
    backend: str,
    make_store: Callable[..., Store],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    down, moved = WebhookReceiver(), WebhookReceiver()
    down.start()
    down.stop()  # its port now refuses connections: each try is a ConnectionError quoting the URL's path
    moved.answers = [(308, {"Location": f"https://hooks.example.com/final?token={LOCATION_TOKEN}"})]
    moved.start()
    database_url = make_store.database_url(tmp_path / "data") if backend == "postgres" else ""  # type: ignore[attr-defined]
    config = Config(
        data_dir=str(tmp_path / "data"),
        database_url=database_url,
        webhooks=(
            WebhookEndpoint("down", f"{down.url}?token={WEBHOOK_TOKEN}&sig={WEBHOOK_SIG}", "whsec-0123456789abcdef"),
            WebhookEndpoint("moved", f"{moved.url}?token={WEBHOOK_TOKEN}", "whsec-0123456789abcdef"),
        ),
    )
    store = Store.from_config(config, clock=clock)
    client = create_app(config, store=store, clock=clock).test_client()
    deliverer = WebhookDeliverer(store, config, clock=clock)
    caplog.set_level(logging.INFO, logger="calabi_exporter.status_webhooks")
    try:
        answer = client.post(
            "/api/v1/jobs", json={"job_id": "w1", "connection_name": "Stripe → Postgres", "status": "failed"}
        )
        assert answer.status_code == 200

        deliverer.deliver_once()  # down: retried later; moved: 308, dead-lettered with its Location
        clock.advance(25 * 3600)
        deliverer.deliver_once()  # down: a day of failures, dead-lettered
        letters = sorted((d.endpoint, reason) for d, reason in store.status_webhooks.dead_letters())
        listed = client.get("/api/v1/webhooks/dead-letters").get_data(as_text=True)
        on_disk = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("*") if p.is_file())  # SQLite and WAL
    finally:
        deliverer.close()
        store.close()
        moved.stop()

    retry_lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "retrying" in r.getMessage()]
    assert len(retry_lines) == 1
    assert retry_lines[0].startswith("webhook down: ConnectionError: ")
    assert "/calabi-events?token=[REDACTED]&sig=[REDACTED]" in retry_lines[0]
    assert [endpoint for endpoint, _ in letters] == ["down", "moved"]
    assert letters[0][1].startswith("undelivered after 24 hours: ConnectionError: ")
    assert "/calabi-events?token=[REDACTED]&sig=[REDACTED]" in letters[0][1]
    assert (
        letters[1][1]
        == "HTTP 308 redirect to https://hooks.example.com/final?token=[REDACTED]: configure the final URL"
    )
    for secret in (WEBHOOK_TOKEN, WEBHOOK_SIG, LOCATION_TOKEN):
        assert secret not in caplog.text
        assert secret not in listed
        assert secret.encode() not in on_disk


@pytest.mark.every_backend
def test_a_log_dead_letter_keeps_the_receivers_reason_without_the_credentials_it_quotes(
    tmp_path: Path, make_store: Callable[..., Store], clock: FakeClock
) -> None:
    receiver = Receiver()
    receiver.answers.append(
        (
            400,
            {"Content-Type": "text/plain"},
            b"invalid push to https://loki:pw-secret-0123@gw.example.com/otlp?api_key=key-secret-0123",
        )
    )
    receiver.start()
    config = Config(data_dir=str(tmp_path / "data"), otlp_logs_endpoint=receiver.url, otlp_timeout_seconds=3.0)
    store = make_store(config.data_path, clock=clock, outbox=True)
    client = create_app(config, store=store, clock=clock).test_client()
    shipper = LogShipper(store, config, clock=clock)
    try:
        job = {"job_id": "d1", "connection_name": "Stripe → Postgres", "status": "running"}
        assert client.post("/api/v1/jobs", json=job).status_code == 200
        line = "2026-04-06T08:00:01Z ERROR sync failed\n"
        assert client.post("/api/v1/jobs/d1/logs", data=line, content_type="text/plain").status_code == 200

        for _ in range(10):
            if shipper.ship_once() > 0 and store.outbox.dead_letters():
                break
        listed = client.get("/api/v1/logs/dead-letters").get_data(as_text=True)
    finally:
        shipper.stop()
        receiver.stop()

    assert [reason for _, _, reason in store.outbox.dead_letters()] == [
        "refused by the receiver (HTTP 400): invalid push to "
        "https://loki:[REDACTED]@gw.example.com/otlp?api_key=[REDACTED]"
    ]
    assert "secret-0" not in listed
