"""Secrets out of free text, before it is stored or leaves the exporter.

Connector logs and error summaries quote what went wrong, and what went wrong
is often a credential: a refresh token in a failed OAuth call, a password in a
connection URL, an API key in a query string. Everything free-form that the
exporter accepts (log messages, ``error_summary``, stream errors, job URLs)
passes through :func:`redact` on the way in, so neither the store nor Loki
ever holds the secret. The name of the secret stays (``password=[REDACTED]``)
so that the line still says what went wrong.

>>> redact("GET /v1/charges?api_key=sk_live_4eC39HqLyjWDarjtT1zdp7dc&limit=3 failed")
'GET /v1/charges?api_key=[REDACTED]&limit=3 failed'
>>> redact("Authorization: Bearer ya29.a0AfH6SMBx-token")
'Authorization: Bearer [REDACTED]'
>>> redact("could not connect to postgres://etl:hunter2@db.internal:5432/sales")
'could not connect to postgres://etl:[REDACTED]@db.internal:5432/sales'
>>> redact("INFO Stream Account: 4,218 records synced in 18.2s")
'INFO Stream Account: 4,218 records synced in 18.2s'
"""

from __future__ import annotations

import re
from typing import Final

REDACTED: Final = "[REDACTED]"

# Names whose value is a secret, in key=value, key: value and JSON forms.
# A prefix may stand with or without a separator: ``client_secret``, ``PGPASSWORD``.
_SECRET_NAMES: Final = (
    r"(?:[a-z0-9]+[_-]?)?(?:api[_-]?key|apikey|access[_-]?key|secret[_-]?(?:access[_-]?)?key|private[_-]?key|"
    r"access[_-]?token|refresh[_-]?token|id[_-]?token|auth[_-]?token|session[_-]?token|bearer[_-]?token|"
    r"client[_-]?secret|secret|token|password|passwd|passphrase|pwd)"
)
# A credential-looking word: long enough, and not a plain English word.
_CREDENTIAL: Final = r"(?=[A-Za-z0-9\-._~+/]*[0-9._~+/-])[A-Za-z0-9\-._~+/]{8,}=*"

# Between a name and its value: = or :, also URL-encoded (%3D, %3A).
_ASSIGN: Final = r"\s*(?:[=:]|%3[dDaA])\s*"

_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # JSON or quoted: "refresh_token": "1//0gXyz"  ->  "refresh_token": "[REDACTED]"
    (
        re.compile(rf"""(?i)(["'])({_SECRET_NAMES})\1(\s*[:=]\s*)(["'])(?:\\.|(?!\4).)*\4"""),
        rf"\1\2\1\3\4{REDACTED}\4",
    ),
    # JSON escaped inside a string: {\"client_secret\":\"x\"}
    (
        re.compile(rf"""(?i)(\\["'])({_SECRET_NAMES})\1(\s*[:=]\s*)(\\["'])(?:(?!\4).)*\4"""),
        rf"\1\2\1\3\4{REDACTED}\4",
    ),
    # A quoted value after a bare name: password="x y", password='x'
    (
        re.compile(rf"""(?i)(?<![a-z0-9])({_SECRET_NAMES})({_ASSIGN})(["'])(?!\[REDACTED\])(?:\\.|(?!\3).)*\3"""),
        rf"\1\2\3{REDACTED}\3",
    ),
    # Authorization headers, whatever the scheme.
    (
        re.compile(r"(?i)\b(authorization\s*[:=]\s*(?:(?:bearer|basic|token|digest)\s+)?+)(?!\[REDACTED\])[^\s\"',;]+"),
        rf"\1{REDACTED}",
    ),
    # key=value and key: value, in query strings, env dumps and prose.
    (
        re.compile(rf"""(?i)(?<![a-z0-9])({_SECRET_NAMES})({_ASSIGN})(?!\[REDACTED\])([^\s&,;"'<>)\]}}]+)"""),
        rf"\1\2{REDACTED}",
    ),
    # "Bearer <token>" in prose: a credential-looking word, or 16 letters and more.
    (
        re.compile(rf"(?i)\b(bearer)(\s+)(?!\[REDACTED\])(?:{_CREDENTIAL}|[A-Za-z]{{16,}}\b)"),
        rf"\1\2{REDACTED}",
    ),
    # "Basic <base64 user:password>" in prose.
    (
        re.compile(r"\b(Basic)(\s+)(?!\[REDACTED\])(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{8,}={0,2}"),
        rf"\1\2{REDACTED}",
    ),
    # user:password@host in URLs (the user name stays); the password may hold an @ itself.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s]+@"), rf"\1{REDACTED}@"),
    # JSON Web Tokens.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    # AWS access key ids (secret keys next to their name are caught above).
    (re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AROA|AIDA)[0-9A-Z]{16}\b"), REDACTED),
    # Well-known token shapes: Stripe, Slack, GitHub, Google API keys, HubSpot private apps.
    (re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}\b"), REDACTED),
    (re.compile(r"\bxox[abprs]-[0-9A-Za-z-]{10,}\b"), REDACTED),
    (re.compile(r"\b(?:gh[pousr]|github_pat)_[0-9A-Za-z_]{30,}\b"), REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), REDACTED),
    (re.compile(r"\bpat-(?:na|eu)[0-9]-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), REDACTED),
)


def redact(text: str) -> str:
    """``text`` with every secret it quotes replaced by ``[REDACTED]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_optional(text: str | None) -> str | None:
    return None if text is None else redact(text)
