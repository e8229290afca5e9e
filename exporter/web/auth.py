"""Bearer tokens: ingest tokens on the write endpoints, read or ingest tokens on the read API,
metrics tokens on ``/metrics`` when any is set."""

from __future__ import annotations

import hashlib

from flask import request

from ..tokens import bearer, matches_any
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


def ingest_token_key() -> str:
    """Which ingest token a write carries, as a digest (never the token itself); "" without ingest tokens.

    The connections a request makes known count against it (``limits.new_connections_per_hour``),
    whichever way it came in: ``Authorization`` or the webhook URL's ``?token=``.
    """
    if not services().config.ingest_tokens:
        return ""
    return hashlib.sha256(_presented(allow_query_token=True)).hexdigest()[:32]


def _presented(*, allow_query_token: bool) -> bytes:
    """The bearer token of the request (or its ``?token=``, where allowed)."""
    presented = bearer(request.headers.get("Authorization"))
    if not presented and allow_query_token:
        return request.args.get("token", "").strip().encode()
    return presented


def _require(tokens: tuple[str, ...], *, allow_query_token: bool) -> None:
    if not tokens:
        return
    candidate = _presented(allow_query_token=allow_query_token)
    if not matches_any(candidate, tokens):
        raise ClientError(401, "missing or wrong bearer token", "Authorization")
