"""Log-derived metrics: lines by level, errors by kind, rate-limit usage."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from calabi_exporter.logsignals import StreamLine, classify_error, rate_limit_ratio, stream_result
from flask.testing import FlaskClient

from tests.support.jobs import job
from tests.support.samples import Samples

CLASSIFICATION = [
    ('Failed to refresh OAuth token for source "HubSpot Production"', "auth"),
    ('Response 401: {"error": "invalid_token"}', "auth"),
    ("Stream Account: 401 Unauthorized — token expired", "auth"),
    ("403 Forbidden: insufficient_scope for crm.objects.contacts.read", "auth"),
    ("invalid_grant: refresh token revoked", "auth"),
    ("Snowflake: Incorrect username or password was specified (authentication failed)", "auth"),
    ("Response 429: Too Many Requests", "rate_limit"),
    ("Salesforce API rate limit exceeded: REQUEST_LIMIT_EXCEEDED", "rate_limit"),
    ("Daily API quota exceeded for project 1234", "rate_limit"),
    ("Stream Opportunity: schema mismatch on column amount", "schema"),
    ("TypeError: expected NUMBER, got VARCHAR in column close_date", "schema"),
    ('column "discount_code" does not exist', "schema"),
    ("value too long for type character varying(255)", "schema"),
    ('null value in column "id" violates not-null constraint', "schema"),
    ("Read timed out after 60s", "network"),
    ("Connection reset by peer while reading from api.hubapi.com", "network"),
    ("Temporary failure in name resolution: db.internal", "network"),
    ("Response 503: Service Unavailable", "network"),
    ("SSL: CERTIFICATE_VERIFY_FAILED", "network"),
    ("Destination table is locked by another sync", "other"),
    ("Unexpected end of stream at offset 42", "other"),
]


@pytest.mark.parametrize(("text", "kind"), CLASSIFICATION)
def test_an_error_is_classified_by_what_it_says(text: str, kind: str) -> None:
    assert classify_error(text) == kind


@pytest.mark.parametrize(
    ("message", "ratio"),
    [
        ("Salesforce API rate limit at 85% — throttling requests", 0.85),
        ("HubSpot rate limit at 100% — waiting for the window to reset", 1.0),
        ("Rate-limit usage 42.5% of daily quota", 0.425),
        ("Syncing stream: Account", None),
        ("rate limit at 250% is impossible", None),
    ],
)
def test_rate_limit_usage_is_read_as_a_ratio(message: str, ratio: float | None) -> None:
    assert rate_limit_ratio(message) == ratio


@pytest.mark.parametrize(
    ("message", "result"),
    [
        ("Stream Account: 4,218 records synced in 18.2s", StreamLine("Account", 4218, 18.2)),
        ("Stream public.orders: 1 record synced in 3s", StreamLine("public.orders", 1, 3.0)),
        ("Stream Contact: 12 records synced", StreamLine("Contact", 12, None)),
        ("Stream Account: complete", None),
        ("Syncing stream: Account", None),
    ],
)
def test_a_stream_result_line_is_read(message: str, result: StreamLine | None) -> None:
    assert stream_result(message) == result


LOG = """\
2026-04-06T08:00:01Z INFO Syncing stream: Account
2026-04-06T08:00:19Z INFO Stream Account: 4,218 records synced in 18.2s
2026-04-06T08:00:20Z WARN Salesforce API rate limit at 85% — throttling requests
2026-04-06T08:00:50Z WARN Salesforce API rate limit at 60% — throttling requests
2026-04-06T08:01:00Z ERROR Response 429: Too Many Requests
2026-04-06T08:01:05Z ERROR Response 401: {"error": "invalid_token"}
2026-04-06T08:01:06Z ERROR Failed to refresh OAuth token for source "Salesforce"
2026-04-06T08:01:07Z DEBUG Connector internals
"""


def post_logs(client: FlaskClient, job_id: str, body: str) -> None:
    response = client.post(f"/api/v1/jobs/{job_id}/logs", data=body, content_type="text/plain")
    assert response.status_code == 200, response.get_json()


def test_lines_are_counted_by_level_and_errors_by_kind_once_each(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    assert client.post("/api/v1/jobs", json=job("job_1", "running")).status_code == 200

    post_logs(client, "job_1", LOG)
    post_logs(client, "job_1", LOG)  # the same timestamped lines again: stored and counted once

    samples = scrape()
    conn = "Salesforce → Snowflake"
    assert {
        level: samples.value("calabi_sync_log_lines_total", connection=conn, level=level)
        for level in ("info", "warn", "error", "debug")
    } == {"info": 2, "warn": 2, "error": 3, "debug": 1}
    assert {
        kind: samples.value("calabi_sync_errors_total", connection=conn, kind=kind)
        for kind in ("auth", "rate_limit", "schema", "network", "other")
    } == {"auth": 2, "rate_limit": 1, "schema": 0, "network": 0, "other": 0}


def test_rate_limit_usage_follows_the_latest_line_not_the_latest_arrival(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    assert client.post("/api/v1/jobs", json=job("job_1", "running")).status_code == 200

    post_logs(client, "job_1", "2026-04-06T09:00:00Z WARN API rate limit at 70%\n")
    post_logs(client, "job_1", "2026-04-06T08:00:00Z WARN API rate limit at 95%\n")  # older, arrives late

    assert scrape().value("calabi_sync_rate_limit_usage_ratio", connection="Salesforce → Snowflake") == 0.7


def test_within_one_batch_the_latest_rate_limit_line_wins_whatever_its_place(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    assert client.post("/api/v1/jobs", json=job("job_1", "running")).status_code == 200

    post_logs(
        client,
        "job_1",
        "2026-04-06T09:00:00Z WARN API rate limit at 70%\n2026-04-06T08:00:00Z WARN API rate limit at 95%\n",
    )

    assert scrape().value("calabi_sync_rate_limit_usage_ratio", connection="Salesforce → Snowflake") == 0.7


def test_a_connection_without_rate_limit_lines_has_no_usage_series(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    assert client.post("/api/v1/jobs", json=job("job_1", "succeeded")).status_code == 200

    samples = scrape()
    assert samples.family("calabi_sync_rate_limit_usage_ratio") == {}
    assert samples.value("calabi_sync_log_lines_total", connection="Salesforce → Snowflake", level="info") == 0


def test_a_failed_jobs_error_summary_counts_once_by_its_kind(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    failed = job("job_2", "failed", connection="Stripe → Postgres", error_summary="Read timed out after 60s")

    for _ in range(3):
        assert client.post("/api/v1/jobs", json=failed).status_code == 200
    # A summary that arrives only after the job was already failed counts too, once.
    assert client.post("/api/v1/jobs", json=job("job_3", "failed", connection="Stripe → Postgres")).status_code == 200
    late = job("job_3", "failed", connection="Stripe → Postgres", error_summary="column amount: type mismatch")
    assert client.post("/api/v1/jobs", json=late).status_code == 200
    assert client.post("/api/v1/jobs", json=late).status_code == 200

    samples = scrape()
    assert {
        kind: samples.value("calabi_sync_errors_total", connection="Stripe → Postgres", kind=kind)
        for kind in ("auth", "rate_limit", "schema", "network", "other")
    } == {"auth": 0, "rate_limit": 0, "schema": 1, "network": 1, "other": 0}


STREAM_LOG = """\
2026-04-06T08:00:01Z INFO Syncing stream: Account
2026-04-06T08:00:19Z INFO Stream Account: 4,218 records synced in 18.2s
2026-04-06T08:00:20Z INFO Syncing stream: Contact
2026-04-06T08:00:25Z INFO Stream Contact: 12 records synced in 5s
2026-04-06T08:00:26Z ERROR Stream Opportunity: schema mismatch on column amount
"""


def stream_samples(samples: Samples) -> dict[tuple[str, str], float]:
    records = samples.family("calabi_sync_stream_records_synced_total")
    return {(dict(labels)["stream"], "records"): value for labels, value in records.items()} | {
        (dict(labels)["stream"], dict(labels)["status"]): value
        for labels, value in samples.family("calabi_sync_stream_last_status").items()
        if value == 1
    }


EXPECTED_STREAMS = {
    ("Account", "records"): 4218,
    ("Contact", "records"): 12,
    ("Opportunity", "records"): 0,
    ("Account", "succeeded"): 1,
    ("Contact", "succeeded"): 1,
    ("Opportunity", "failed"): 1,
}


def test_a_job_without_streams_gets_them_from_lines_logged_before_it_finished(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    assert client.post("/api/v1/jobs", json=job("job_1", "running")).status_code == 200
    post_logs(client, "job_1", STREAM_LOG)
    assert (
        client.post("/api/v1/jobs", json=job("job_1", "failed", finished_at="2026-04-06T08:01:00Z")).status_code == 200
    )

    samples = scrape()
    assert stream_samples(samples) == EXPECTED_STREAMS
    conn = "Salesforce → Snowflake"
    assert samples.value("calabi_sync_streams_total", connection=conn, status="succeeded") == 2
    assert samples.value("calabi_sync_streams_total", connection=conn, status="failed") == 1
    assert samples.value("calabi_sync_records_synced_total", connection=conn) == 4230


def test_lines_that_arrive_after_the_job_finished_still_give_its_streams_once(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    assert (
        client.post("/api/v1/jobs", json=job("job_1", "failed", finished_at="2026-04-06T08:01:00Z")).status_code == 200
    )
    post_logs(client, "job_1", STREAM_LOG)
    post_logs(client, "job_1", STREAM_LOG)  # re-sent: nothing new
    post_logs(client, "job_1", "2026-04-06T08:02:00Z INFO Stream Late: 5 records synced in 1s\n")  # streams known

    samples = scrape()
    assert stream_samples(samples) == EXPECTED_STREAMS
    assert samples.value("calabi_sync_records_synced_total", connection="Salesforce → Snowflake") == 4230


def test_streams_reported_by_the_job_record_win_over_its_lines(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    assert client.post("/api/v1/jobs", json=job("job_1", "running")).status_code == 200
    post_logs(client, "job_1", STREAM_LOG)
    record = job("job_1", "succeeded", streams=[{"name": "Account", "status": "succeeded", "records_synced": 7}])
    assert client.post("/api/v1/jobs", json=record).status_code == 200

    assert stream_samples(scrape()) == {("Account", "records"): 7, ("Account", "succeeded"): 1}
