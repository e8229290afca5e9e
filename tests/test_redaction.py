"""Secrets never reach the store: a table of real-looking secrets and of lines that must stay as they are."""

from __future__ import annotations

import pytest
from calabi_exporter.redact import redact
from calabi_exporter.store import Store
from flask.testing import FlaskClient

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"

SECRETS = [
    # (text as a connector logs it, the secret in it, what remains)
    (
        "Authorization: Bearer ya29.a0AfH6SMBxQ3-kL9",
        "ya29.a0AfH6SMBxQ3-kL9",
        "Authorization: Bearer [REDACTED]",
    ),
    (
        "retrying with bearer 9f8e7d6c5b4a39281706",
        "9f8e7d6c5b4a39281706",
        "retrying with bearer [REDACTED]",
    ),
    (
        "Authorization: Basic ZXRsOmh1bnRlcjI=",
        "ZXRsOmh1bnRlcjI=",
        "Authorization: Basic [REDACTED]",
    ),
    (
        'ERROR token refresh failed: {"refresh_token": "1//0gXyZ-abc_DEF", "grant_type": "refresh_token"}',
        "1//0gXyZ-abc_DEF",
        'ERROR token refresh failed: {"refresh_token": "[REDACTED]", "grant_type": "refresh_token"}',
    ),
    (
        "GET https://api.stripe.com/v1/charges?api_key=sk_live_4eC39HqLyjWDarjtT1zdp7dc&limit=100",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "GET https://api.stripe.com/v1/charges?api_key=[REDACTED]&limit=100",
    ),
    (
        "webhook https://hooks.example.com/in?token=a1b2c3d4e5f6",
        "a1b2c3d4e5f6",
        "webhook https://hooks.example.com/in?token=[REDACTED]",
    ),
    (
        "connecting with password=Sup3r-Secret!",
        "Sup3r-Secret!",
        "connecting with password=[REDACTED]",
    ),
    (
        "could not connect to postgres://etl:hunter2@db.internal:5432/sales",
        "hunter2",
        "could not connect to postgres://etl:[REDACTED]@db.internal:5432/sales",
    ),
    (
        "aws_access_key_id=AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_access_key_id=[REDACTED] aws_secret_access_key=[REDACTED]",
    ),
    (
        "S3 upload as AKIAIOSFODNN7EXAMPLE denied",
        "AKIAIOSFODNN7EXAMPLE",
        "S3 upload as [REDACTED] denied",
    ),
    (
        "id token " + JWT + " rejected",
        JWT,
        "id token [REDACTED] rejected",
    ),
    (
        "HubSpot private app pat-na1-0a1b2c3d-4e5f-6789-abcd-ef0123456789 lacks scope crm.objects.contacts.read",
        "pat-na1-0a1b2c3d-4e5f-6789-abcd-ef0123456789",
        "HubSpot private app [REDACTED] lacks scope crm.objects.contacts.read",
    ),
    (
        "slack notify failed for xoxb-2048-4096-AbCdEfGhIjKlMnOp",
        "xoxb-2048-4096-AbCdEfGhIjKlMnOp",
        "slack notify failed for [REDACTED]",
    ),
    (
        "client_secret: 7Fjfp0ZBr1KtDRbnfVdmIw",
        "7Fjfp0ZBr1KtDRbnfVdmIw",
        "client_secret: [REDACTED]",
    ),
    ('connect(password="Pa55 w0rd!x")', "Pa55 w0rd!x", 'connect(password="[REDACTED]")'),
    ("connect(password='Qq9 pass#x')", "Qq9 pass#x", "connect(password='[REDACTED]')"),
    (
        "login rejected for Basic ZXRsOmh1bnRlcjI9 credentials",
        "ZXRsOmh1bnRlcjI9",
        "login rejected for Basic [REDACTED] credentials",
    ),
    (
        "retrying with Bearer QwErTyUiOpAsDfGhJkLzXcVbNm",
        "QwErTyUiOpAsDfGhJkLzXcVbNm",
        "retrying with Bearer [REDACTED]",
    ),
    (
        'body was {\\"client_secret\\":\\"cs-9Xy8Wv7\\",\\"grant\\":\\"x\\"}',
        "cs-9Xy8Wv7",
        'body was {\\"client_secret\\":\\"[REDACTED]\\",\\"grant\\":\\"x\\"}',
    ),
    (
        "could not connect to mysql://etl:p@ss@w0rd@db.internal/sales",
        "p@ss@w0rd",
        "could not connect to mysql://etl:[REDACTED]@db.internal/sales",
    ),
    ("env: PGPASSWORD=Hunt3r2-pg PGUSER=etl", "Hunt3r2-pg", "env: PGPASSWORD=[REDACTED] PGUSER=etl"),
    (
        "redirect to /callback?state=1&token%3Dt0k-9Zq81x&next=%2F",
        "t0k-9Zq81x",
        "redirect to /callback?state=1&token%3D[REDACTED]&next=%2F",
    ),
]

UNTOUCHED = [
    "INFO Syncing stream: Account",
    "INFO Stream Account: 4,218 records synced in 18.2s",
    "WARN Salesforce API rate limit at 85% — throttling requests",
    'ERROR Failed to refresh OAuth token for source "HubSpot Production"',
    'ERROR Response 401: {"error": "invalid_token"}',
    "Stream contacts: 401 Unauthorized — token expired",
    "Basic authentication failed for user etl",
    "Invalid credentials: check the API key in the source settings",
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
