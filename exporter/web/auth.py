"""Bearer tokens on the write endpoints."""

from __future__ import annotations

import hmac

from flask import request

from .errors import ClientError
from .services import services


def require_ingest_token(*, allow_query_token: bool = False) -> None:
    """Refuse the request with 401 unless it carries a configured token.

    Tokens are compared in constant time. ``allow_query_token`` accepts
    ``?token=`` for senders that can only be given a URL (the product's custom
    webhook has no header settings).
    """
    tokens = services().config.ingest_tokens
    if not tokens:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        presented = request.args.get("token", "") if allow_query_token else ""
    candidate = presented.strip().encode()
    # Check every token so the time taken does not tell which one nearly matched.
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(candidate, token.encode())
    if not matched:
        raise ClientError(401, "missing or wrong bearer token", "Authorization")
