"""Secrets as connectors log them: the redaction tests and the log-shipping tests check each is masked."""

from __future__ import annotations

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
    # URLs, any scheme: the password up to the LAST @, whatever it holds; an empty user name.
    (
        "cache at redis://:r3dis-Pw@cache:6379/0 refused",
        "r3dis-Pw",
        "cache at redis://:[REDACTED]@cache:6379/0 refused",
    ),
    ("broker amqp://etl:pa/ss-w0rd@mq/vhost closed", "pa/ss-w0rd", "broker amqp://etl:[REDACTED]@mq/vhost closed"),
    (
        "dsn postgresql://u:se@cret-HUNTER2@db/sales invalid",
        "cret-HUNTER2",
        "dsn postgresql://u:[REDACTED]@db/sales invalid",
    ),
    (
        "git clone https://ghp1x2y3z4w5v6u7t8s9@git.example.com/etl.git failed",
        "ghp1x2y3z4w5v6u7t8s9",
        "git clone https://[REDACTED]@git.example.com/etl.git failed",
    ),
    # Query parameters whose names look secret, whatever the rest of the line.
    (
        "POST https://hooks.example.com/in?sig=9f8e7d6c&id=42 failed",
        "9f8e7d6c",
        "POST https://hooks.example.com/in?sig=[REDACTED]&id=42 failed",
    ),
    (
        "GET /bucket/a.json?X-Amz-Credential=AKIDEXAMPLE%2F20260406&X-Amz-Signature=fe5f80f77d5fa3be",
        "fe5f80f77d5fa3be",
        "GET /bucket/a.json?X-Amz-Credential=[REDACTED]&X-Amz-Signature=[REDACTED]",
    ),
    (
        "Max retries exceeded with url: /in?api-key=k3y-0123-abcd (Caused by NewConnectionError)",
        "k3y-0123-abcd",
        "Max retries exceeded with url: /in?api-key=[REDACTED] (Caused by NewConnectionError)",
    ),
]
