"""Ingest tokens guard the write endpoints; metrics and health stay open."""

from __future__ import annotations

from pathlib import Path

import pytest
from calabi_exporter.config import Config
from calabi_exporter.web import create_app
from flask.testing import FlaskClient

from tests.support.clock import FakeClock
from tests.support.jobs import job

TOKEN = "s3cret-token-0123456789"


@pytest.fixture
def guarded(tmp_path: Path, clock: FakeClock) -> FlaskClient:
    config = Config(data_dir=str(tmp_path), ingest_tokens=("another-token-abcdefgh", TOKEN))
    return create_app(config, clock=clock).test_client()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no header"),
        pytest.param({"Authorization": "Bearer wrong-token-0123456789"}, id="wrong token"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, id="wrong scheme"),
        pytest.param({"Authorization": "Bearer "}, id="empty token"),
    ],
)
def test_a_write_without_a_valid_token_gets_401_and_stores_nothing(
    guarded: FlaskClient, headers: dict[str, str]
) -> None:
    response = guarded.post("/api/v1/jobs", json=job("a"), headers=headers)

    assert response.status_code == 401
    assert response.get_json()["field"] == "Authorization"
    assert (
        guarded.post("/api/v1/jobs/a/logs", data="INFO x", content_type="text/plain", headers=headers).status_code
        == 401
    )
    assert guarded.post("/webhooks/calabi", json=job("a"), headers=headers).status_code == 401
    assert 'connection="' not in guarded.get("/metrics").get_data(as_text=True)


def test_any_configured_token_is_accepted(guarded: FlaskClient) -> None:
    response = guarded.post("/api/v1/jobs", json=job("a"), headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 200


def test_the_webhook_accepts_the_token_in_the_url_because_the_product_only_takes_a_url(guarded: FlaskClient) -> None:
    assert guarded.post(f"/webhooks/calabi?token={TOKEN}", json=job("a")).status_code == 200
    assert guarded.post(f"/api/v1/jobs?token={TOKEN}", json=job("b")).status_code == 401


def test_metrics_and_health_need_no_token(guarded: FlaskClient) -> None:
    assert guarded.get("/metrics").status_code == 200
    assert guarded.get("/healthz").status_code == 200
    assert guarded.get("/readyz").status_code == 200


def test_the_log_dead_letters_need_the_token(guarded: FlaskClient) -> None:
    assert guarded.get("/api/v1/logs/dead-letters").status_code == 401
    response = guarded.get("/api/v1/logs/dead-letters", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.get_json() == {"dead_letters": []}


METRICS_TOKEN = "scrape-token-0123456789"


def test_metrics_tokens_guard_the_scrape_and_leave_health_open(tmp_path: Path, clock: FakeClock) -> None:
    config = Config(data_dir=str(tmp_path), metrics_tokens=(METRICS_TOKEN,), ingest_tokens=(TOKEN,))
    client = create_app(config, clock=clock).test_client()

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
    scraped = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status_code == 200
    assert b"calabi_exporter_" in scraped.data
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
