"""Bearer tokens: read from a header and compared without telling which one nearly matched."""

from __future__ import annotations

import hmac
from collections.abc import Iterable


def bearer(header: str | None) -> bytes:
    """The token of an ``Authorization: Bearer <token>`` header; empty for any other scheme.

    >>> bearer("Bearer  abc "), bearer("Basic abc"), bearer(None)
    (b'abc', b'', b'')
    """
    scheme, _, presented = (header or "").partition(" ")
    return presented.strip().encode() if scheme.lower() == "bearer" else b""


def matches_any(candidate: bytes, tokens: Iterable[str]) -> bool:
    """Whether ``candidate`` is one of ``tokens``, comparing with every one in constant time.

    >>> matches_any(b"b", ["a", "b"]), matches_any(b"", ["a"])
    (True, False)
    """
    matched = False
    for token in tokens:  # every token, so the time taken does not tell which one nearly matched
        matched |= hmac.compare_digest(candidate, token.encode())
    return matched
