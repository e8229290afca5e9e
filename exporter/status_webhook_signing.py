"""Signatures of the status-change webhooks the exporter sends.

Every delivery carries ``Calabi-Signature: t=<unix seconds>,v1=<hex>``, where
``v1`` is HMAC-SHA256 with the endpoint's secret over ``"<t>.<raw body>"``.
Signing the timestamp with the body lets a receiver reject replays: a captured
request cannot be re-sent later with a fresh time without the secret.

>>> header = sign(b"s3cret", b'{"job_id": "j1"}', timestamp=1775462400)
>>> header
't=1775462400,v1=707fc101f0a6c871c99fd62cc96fbb5b0e9d981881bdf7481c67bd242c447825'
>>> verify(b"s3cret", header, b'{"job_id": "j1"}', now=1775462460)
True
>>> verify(b"s3cret", header, b'{"job_id": "j2"}', now=1775462460)
False
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

HEADER: Final = "Calabi-Signature"
TOLERANCE_SECONDS: Final = 300


def _digest(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, *, timestamp: int) -> str:
    """The ``Calabi-Signature`` header value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify(secret: bytes, header: str, body: bytes, *, now: float, tolerance: float = TOLERANCE_SECONDS) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and is at most ``tolerance`` seconds old."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(parts.get("v1", ""), _digest(secret, timestamp, body))
