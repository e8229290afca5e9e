"""Forgetting a connection: by request, or by the purge once none of its jobs is left."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from calabi_exporter.config import Config
from calabi_exporter.store import Store
from calabi_exporter.web import create_app
from flask import Flask
from flask.testing import FlaskClient

from tests.support.clock import T0, FakeClock
from tests.support.jobs import job
from tests.support.samples import Samples, parse_samples

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

TOKEN = "forgetting-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SF, HUBSPOT, STRIPE = "Salesforce → Snowflake", "HubSpot/Marketing → BigQuery", "Stripe → Postgres"
FINISHED = "2026-04-06T08:03:17Z"
# Scrape-wide values that change with anything: compared apart.
SCRAPE_WIDE = ("calabi_exporter_series", "calabi_exporter_store_size_bytes")


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse_samples(response.get_data(as_text=True))


def of(samples: Samples, connection: str | None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of ``connection`` (None: those of no connection), scrape-wide values left out."""
    return {
        key: value
        for key, value in samples.store_samples().items()
        if dict(key[1]).get("connection") == connection and key[0] not in SCRAPE_WIDE
    }


def post(client: FlaskClient, *records: dict[str, object]) -> None:
    response = client.post("/api/v1/jobs", json={"jobs": list(records)}, headers=AUTH)
    assert response.status_code == 200 and response.get_json()["rejected"] == 0, response.get_json()


def running_job_series(connection: str, started: float) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The series of a forgotten connection whose job is still running: that job, and the thresholds its alerts use."""
    label = ("connection", connection)
    return {
        ("calabi_sync_jobs_in_progress", frozenset({label, ("status", "pending")})): 0,
        ("calabi_sync_jobs_in_progress", frozenset({label, ("status", "running")})): 1,
        ("calabi_sync_oldest_job_start_timestamp_seconds", frozenset({label, ("status", "running")})): started,
        ("calabi_sync_failure_threshold", frozenset({label})): 2,
        ("calabi_sync_freshness_threshold_seconds", frozenset({label})): 259200,
        ("calabi_sync_stuck_floor_seconds", frozenset({label})): 3600,
        ("calabi_sync_pending_threshold_seconds", frozenset({label})): 1800,
    }


def test_forgetting_a_connection_removes_its_series_and_moves_nothing_else(open_app: Callable[..., Flask]) -> None:
    client = open_app(ingest_tokens=(TOKEN,)).test_client()
    streams = [{"name": "Account", "status": "succeeded", "records_synced": 4}]
    post(
        client,
        job("sf1", finished_at=FINISHED, records_synced=10, streams=streams),
        job(
            "hs1", "failed", connection=HUBSPOT, finished_at=FINISHED, error_summary="401 Unauthorized", streams=streams
        ),
        job("hs2", "running", connection=HUBSPOT),
        job("st1", connection=STRIPE, finished_at=FINISHED, records_synced=7),
    )
    client.post("/api/v1/jobs/hs1/logs", data="ERROR 401 Unauthorized", content_type="text/plain", headers=AUTH)
    before = scrape(client)

    response = client.delete("/api/v1/connections/HubSpot/Marketing%20%E2%86%92%20BigQuery", headers=AUTH)
    after = scrape(client)

    assert response.status_code == 200
    assert response.get_json() == {"connection_name": HUBSPOT, "forgotten": True, "jobs_kept": 2}
    assert of(before, HUBSPOT) and of(after, HUBSPOT) == running_job_series(HUBSPOT, T0)  # hs2 still runs
    assert of(after, SF) == of(before, SF) and of(after, STRIPE) == of(before, STRIPE)
    assert of(after, None) == of(before, None)  # exporter-wide counters, stored jobs included
    assert client.get("/api/v1/jobs/hs1", headers=AUTH).get_json()["status"] == "failed"  # the jobs stay
    names = [c["connection_name"] for c in client.get("/api/v1/connections", headers=AUTH).get_json()["connections"]]
    assert names == [SF, STRIPE]


def test_a_job_after_forgetting_starts_the_connection_afresh(open_app: Callable[..., Flask]) -> None:
    client = open_app(ingest_tokens=(TOKEN,)).test_client()
    post(client, job("sf1", finished_at=FINISHED, records_synced=10))
    client.delete("/api/v1/connections/Salesforce%20%E2%86%92%20Snowflake", headers=AUTH)

    post(client, job("sf2", finished_at="2026-04-06T09:00:00Z", records_synced=3))

    samples = scrape(client)
    assert samples[("calabi_sync_records_synced_total", frozenset({("connection", SF)}))] == 3


def test_forgetting_needs_the_ingest_token_and_a_known_connection(open_app: Callable[..., Flask]) -> None:
    client = open_app(ingest_tokens=(TOKEN,)).test_client()
    post(client, job("sf1", finished_at=FINISHED))

    anonymous = client.delete("/api/v1/connections/Salesforce%20%E2%86%92%20Snowflake")
    unknown = client.delete("/api/v1/connections/Nobody", headers=AUTH)

    assert (anonymous.status_code, anonymous.get_json()["field"]) == (401, "Authorization")
    assert (unknown.status_code, unknown.get_json()) == (404, {"error": "no connection 'Nobody'", "field": "name"})
    assert ("calabi_sync_jobs_total", frozenset({("connection", SF), ("status", "succeeded")})) in scrape(client)


def test_forgetting_frees_a_place_in_the_series_budget(open_app: Callable[..., Flask]) -> None:
    client = open_app(ingest_tokens=(TOKEN,), limits_max_connections=1).test_client()
    post(client, job("a1", connection="A", finished_at=FINISHED), job("b1", connection="B", finished_at=FINISHED))
    client.delete("/api/v1/connections/A", headers=AUTH)

    post(client, job("c1", connection="C", finished_at=FINISHED))

    jobs = {
        dict(key)["connection"]: value
        for (name, key), value in scrape(client).items()
        if name == "calabi_sync_jobs_total" and ("status", "succeeded") in key
    }
    # B, which waited beyond the budget, took the place: its counters start afresh (its first job stays
    # counted under overflow, so sums stay exact); C, later, waits in its turn.
    assert jobs == {"B": 0, "__overflow__": 2}


def test_a_job_running_at_the_forget_stays_visible_under_its_name_and_is_not_counted_when_it_ends(
    open_app: Callable[..., Flask], clock: FakeClock
) -> None:
    client = open_app(ingest_tokens=(TOKEN,)).test_client()
    post(client, job("st1", connection=STRIPE, finished_at=FINISHED), job("st2", "running", connection=STRIPE))
    clock.advance(300)
    client.delete("/api/v1/connections/Stripe%20%E2%86%92%20Postgres", headers=AUTH)

    while_running = of(scrape(client), STRIPE)
    clock.advance(300)
    post(client, job("st2", connection=STRIPE, finished_at="2026-04-06T08:09:00Z", records_synced=5))
    after = of(scrape(client), STRIPE)

    assert while_running == running_job_series(STRIPE, T0)  # CalabiSyncJobStuck still sees it
    assert after == {}  # it belonged to what was forgotten: finished, it is no one's to count
    assert client.get("/api/v1/jobs/st2", headers=AUTH).get_json()["records_synced"] == 5  # and it is stored


def test_a_late_record_of_a_job_from_before_the_forget_is_not_credited_to_the_connection_afresh(
    open_app: Callable[..., Flask], clock: FakeClock
) -> None:
    client = open_app(ingest_tokens=(TOKEN,)).test_client()
    post(client, job("hs1", "failed", connection=HUBSPOT, started_at="2026-04-06T07:00:00Z", finished_at=FINISHED))
    client.delete("/api/v1/connections/HubSpot%2FMarketing%20%E2%86%92%20BigQuery", headers=AUTH)
    clock.advance(3600)
    post(client, job("hs2", connection=HUBSPOT, finished_at="2026-04-06T08:30:00Z", records_synced=3))

    post(
        client,  # the full record of the failed job (the webhook came first), and a job from before the forget
        job("hs1", "failed", connection=HUBSPOT, error_summary="401 Unauthorized", records_synced=10),
        job("hs0", connection=HUBSPOT, started_at="2026-04-06T06:00:00Z", finished_at="2026-04-06T06:30:00Z"),
    )
    client.post("/api/v1/jobs/hs1/logs", data="ERROR 401 Unauthorized", content_type="text/plain", headers=AUTH)
    samples = scrape(client)

    label = ("connection", HUBSPOT)
    assert samples[("calabi_sync_records_synced_total", frozenset({label}))] == 3
    assert samples[("calabi_sync_jobs_total", frozenset({label, ("status", "succeeded")}))] == 1
    assert samples[("calabi_sync_jobs_total", frozenset({label, ("status", "failed")}))] == 0
    assert samples[("calabi_sync_errors_total", frozenset({label, ("kind", "auth")}))] == 0
    assert samples[("calabi_sync_log_lines_total", frozenset({label, ("level", "error")}))] == 0
    assert samples[("calabi_sync_consecutive_failures", frozenset({label}))] == 0
    assert client.get("/api/v1/jobs/hs1", headers=AUTH).get_json()["records_synced"] == 10  # stored all the same


def test_the_purge_forgets_connections_without_a_job_left(
    tmp_path: Path, clock: FakeClock, make_store: Callable[..., Store]
) -> None:
    store = make_store(tmp_path / "data", clock=clock)
    client = create_app(Config(data_dir=str(tmp_path / "data")), store=store, clock=clock).test_client()
    client.post("/api/v1/jobs", json=job("old", connection="Gone", finished_at="2026-03-01T00:00:00Z"))
    client.post("/api/v1/jobs", json=job("new", finished_at=FINISHED))
    kept = of(scrape(client), SF)

    purged = store.retention.purge(finished_before=clock() - 30 * 86400)

    samples = scrape(client)
    assert purged == 1
    assert not of(samples, "Gone")
    assert of(samples, SF) == kept
    assert samples[("calabi_exporter_purged_jobs_total", frozenset())] == 1
    store.close()


def test_a_name_with_a_leading_slash_is_forgotten_and_the_name_without_it_is_not(
    open_app: Callable[..., Flask],
) -> None:
    client = open_app(ingest_tokens=(TOKEN,)).test_client()
    post(
        client, job("l1", connection="lead", finished_at=FINISHED), job("l2", connection="/lead", finished_at=FINISHED)
    )

    encoded = client.delete("/api/v1/connections/%2Flead", headers=AUTH)
    again = client.delete("/api/v1/connections//lead", headers=AUTH)  # the same name, its slash sent as it is
    plain = client.delete("/api/v1/connections/lead", headers=AUTH)

    assert (encoded.status_code, encoded.get_json()) == (
        200,
        {"connection_name": "/lead", "forgotten": True, "jobs_kept": 1},
    )
    assert (again.status_code, again.get_json()) == (404, {"error": "no connection '/lead'", "field": "name"})
    assert (plain.status_code, plain.get_json()) == (
        200,
        {"connection_name": "lead", "forgotten": True, "jobs_kept": 1},
    )


@pytest.mark.parametrize(
    "path", ["/api//v1/jobs", "/api/v1//connections", "/api/v1/jobs/", "/metrics/", "/api/v1/jobs//logs"]
)
def test_no_path_is_redirected_and_an_unknown_one_is_a_json_404(open_app: Callable[..., Flask], path: str) -> None:
    client = open_app().test_client()

    response = client.get(path)

    assert (response.status_code, response.content_type) == (404, "application/json")
    assert response.get_json() == {"error": "no such route", "field": None}
