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

A URL is masked the same way wherever it appears (a log line, a stored
reason, ``check-config``): the password of its user information, up to the
last ``@`` before the host, whatever the scheme and whatever the password
holds; a user name alone when it looks like a token; and the value of every
query parameter whose name looks secret (:func:`secret_query_name`).

>>> redact("amqp://u:pa/ss@mq redis://:pw@cache https://hooks.example.com/in?sig=9f8e&id=3")
'amqp://u:[REDACTED]@mq redis://:[REDACTED]@cache https://hooks.example.com/in?sig=[REDACTED]&id=3'
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
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

# A user name that is a token: a credential-looking word without the slash a path would have.
_TOKEN_USER: Final = r"(?=[A-Za-z0-9\-._~+]*[0-9._~+-])[A-Za-z0-9\-._~+]{8,}"

# Between a name and its value: = or :, also URL-encoded (%3D, %3A).
_ASSIGN: Final = r"\s*(?:[=:]|%3[dDaA])\s*"

# Query parameter names that carry a credential; a harmless name that matches is masked too, which
# costs nothing: sig and auth as whole words only (not "design", "author").
_SECRET_QUERY_NAME: Final = re.compile(
    r"(?i)token|secret|passw|pwd|passphrase|key|credential|signature|session|(?:^|[_.-])(?:sig|auth)(?:$|[_.-])"
)


def secret_query_name(name: str) -> bool:
    """Whether a URL query parameter called ``name`` holds a secret.

    >>> [secret_query_name(n) for n in ("token", "X-Amz-Signature", "sig", "api-key", "design", "limit")]
    [True, True, True, True, False, False]
    """
    return bool(_SECRET_QUERY_NAME.search(name))


def _query_parameter(match: re.Match[str]) -> str:
    """A query parameter with its value masked if its name looks secret; punctuation after it is prose."""
    name, value = match.group(1), match.group(2)
    kept = value.rstrip(":,.)")
    if not kept or kept == REDACTED or not secret_query_name(name):
        return match.group(0)
    return f"{name}={REDACTED}{value[len(kept) :]}"


_USER_END: Final = re.compile(r"[/?#:@\[\]]")
_PORT: Final = re.compile(r"\d*(?:[/?#]|$)")


def _user_information(rest: str) -> str:
    """``rest`` (a URL after ``scheme://``) with the credentials of its user information masked.

    >>> _user_information("u:se@cret@db/sales"), _user_information("host:8443/x?mail=a@b.com")
    ('u:[REDACTED]@db/sales', 'host:8443/x?mail=a@b.com')
    """
    span = _credential_span(rest)
    return rest if span is None else f"{rest[: span[0]]}{REDACTED}{rest[span[1] :]}"


def _credential_span(rest: str) -> tuple[int, int] | None:
    """Where the credential of a URL's user information is in ``rest`` (the URL after ``scheme://``).

    The user name (maybe empty) is not; the password runs to the LAST ``@``, so
    that one holding ``@``, ``/`` or ``?`` unencoded is masked whole; digits
    then ``/``, ``?`` or the end after the colon are a port, not a password. A
    user name alone is the credential when it looks like a token. One pass over
    the URL: linear whatever the text.
    """
    found = _USER_END.search(rest)
    if found is None:
        return None
    end = found.start()
    if found.group() == ":":
        at = rest.rfind("@")
        if at > end and not _PORT.match(rest, end + 1) and rest[end + 1 : at] != REDACTED:
            return end + 1, at
    elif found.group() == "@" and re.fullmatch(_TOKEN_USER, rest[:end]):
        return 0, end
    return None


_PATTERNS: Final[tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...]] = (
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
    # key=value and key: value, in query strings, env dumps and prose (a colon or full stop after it is prose).
    (
        re.compile(
            rf"""(?i)(?<![a-z0-9])({_SECRET_NAMES})({_ASSIGN})(?!\[REDACTED\])[^\s&,;"'<>)\]}}]*[^\s&,;"'<>)\]}}:.]"""
        ),
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
    # Credentials in the user information of URLs, any scheme (:func:`_user_information`).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s\"'<>]*)"), lambda m: m.group(1) + _user_information(m.group(2))),
    # Query parameters whose names look secret: ?sig=..., &X-Amz-Signature=..., &api-key=...
    (re.compile(r"(?<=[?&;])([^=&#\s\"'<>?;]+)=([^&#\s\"'<>;]+)"), _query_parameter),
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


def url_secrets(url: str) -> list[str]:
    """The secrets a configured URL holds, as they may appear elsewhere (a client's error quoting it).

    Its password (up to the last ``@``, as :func:`redact` reads it), a user name
    that looks like a token, and the values of its secret-looking query parameters,
    as written and decoded.

    >>> url_secrets("https://ops:p@ss/w0rd@hooks.example.com/in?token=t%2Fk-123&id=7")
    ['p@ss/w0rd', 't%2Fk-123', 't/k-123']
    """
    found: list[str] = []
    _scheme, separator, rest = url.partition("://")
    span = _credential_span(rest) if separator else None
    if span is not None:
        found.append(rest[span[0] : span[1]])
    query = urllib.parse.urlsplit(url).query
    for name, value in re.findall(r"([^=&;]+)=([^&;#]*)", query):
        if secret_query_name(urllib.parse.unquote(name)) and value:
            found.extend(dict.fromkeys([value, urllib.parse.unquote_plus(value)]))
    return [secret for secret in found if secret]
