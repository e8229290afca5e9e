"""Bearer tokens: ingest tokens on the write endpoints, read or ingest tokens on the read API,
metrics tokens on ``/metrics`` when any is set."""

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
    _require(services().config.ingest_tokens, allow_query_token=allow_query_token)


def require_read_token() -> None:
    """Refuse the request with 401 unless it carries a read or an ingest token (when any is configured)."""
    config = services().config
    _require(config.read_tokens + config.ingest_tokens, allow_query_token=False)


def require_metrics_token() -> None:
    """Refuse a scrape with 401 unless it carries a metrics token (when any is configured)."""
    _require(services().config.metrics_tokens, allow_query_token=False)


def _require(tokens: tuple[str, ...], *, allow_query_token: bool) -> None:
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
