"""Webhook signatures: a fresh signature verifies; a tampered body, another secret or an old one does not."""

from __future__ import annotations

import time

from calabi_exporter.status_webhook_signing import sign, verify

SECRET = b"whsec-0123456789abcdef"
BODY = b'{"connection_name": "Salesforce \\u2192 Snowflake", "job_id": "job_1", "status": "failed"}'


def test_a_fresh_signature_verifies_and_tampering_or_age_does_not() -> None:
    now = int(time.time())
    header = sign(SECRET, BODY, timestamp=now)

    assert verify(SECRET, header, BODY, now=now)
    assert not verify(SECRET, header, BODY.replace(b"failed", b"succeeded"), now=now)  # tampered body
    assert not verify(b"another-secret", header, BODY, now=now)
    assert not verify(SECRET, header, BODY, now=now + 301)  # a replay, more than 5 minutes later
    assert not verify(SECRET, header.replace("v1=", "v1=0"), BODY, now=now)
    assert not verify(SECRET, "garbage", BODY, now=now)
