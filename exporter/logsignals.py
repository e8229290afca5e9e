"""What a job's log lines say beyond their text: error kinds, rate-limit usage, stream results.

The product's connectors write free text, so these are pattern rules over the
lines they actually produce (see the product's log reference):

>>> classify_error('Failed to refresh OAuth token for source "HubSpot Production"')
'auth'
>>> classify_error("Response 429: Too Many Requests")
'rate_limit'
>>> classify_error("Stream Account: schema mismatch on column amount (expected NUMBER, got VARCHAR)")
'schema'
>>> classify_error("Read timed out after 60s")
'network'
>>> rate_limit_ratio("Salesforce API rate limit at 85% — throttling requests")
0.85
>>> stream_result("Stream Account: 4,218 records synced in 18.2s")
StreamLine(stream='Account', records_synced=4218, duration_seconds=18.2)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .model import MAX_COUNT, MAX_SECONDS

AUTH: Final = "auth"
RATE_LIMIT: Final = "rate_limit"
SCHEMA: Final = "schema"
NETWORK: Final = "network"
OTHER: Final = "other"
ERROR_KINDS: Final = (AUTH, RATE_LIMIT, SCHEMA, NETWORK, OTHER)

# First match wins: an expired token answered with 429 is still an auth problem
# to fix by hand, and a rate limit is more specific than the timeout it causes.
_RULES: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    (
        AUTH,
        re.compile(
            r"(?i)\b(?:401|403)\b|unauthori[sz]ed|forbidden|invalid[_ ](?:token|grant|client|credentials?)"
            r"|(?:token|credentials?|password|session)\W+(?:\w+\W+)?(?:expired|revoked|invalid)"
            r"|expired\W+(?:\w+\W+)?(?:token|credentials?)|oauth|authenticat|permission denied|access denied"
            r"|insufficient[_ ]scope"
        ),
    ),
    (
        RATE_LIMIT,
        re.compile(r"(?i)\b429\b|rate[- ]?limit|too many requests|quota (?:exceeded|exhausted)|throttl"),
    ),
    (
        SCHEMA,
        re.compile(
            r"(?i)schema|type (?:error|mismatch)|typeerror|cannot (?:cast|convert|coerce)|invalid (?:input )?syntax for"
            r"|column .*(?:does not exist|not found|mismatch)|unknown (?:column|field)|data type"
            r"|(?:value|string) too long|numeric (?:field )?overflow|not-null constraint|violates .*constraint"
        ),
    ),
    (
        NETWORK,
        re.compile(
            r"(?i)time[d ]?\s?out|timeout|connection (?:reset|refused|aborted|closed)|reset by peer|broken pipe"
            r"|name or service not known|temporary failure in name resolution|\bdns\b|getaddrinfo|nodename nor"
            r"|network is unreachable|no route to host|\bssl\b|tls handshake|\b(?:502|503|504)\b|econn\w+"
        ),
    ),
)

_RATE_LIMIT_AT: Final = re.compile(r"(?i)rate[- ]?limit\D{0,40}?(\d{1,3}(?:\.\d+)?)\s?%")
_STREAM_SYNCED: Final = re.compile(
    r"^Stream (?P<stream>.+?): (?P<records>\d[\d,]*) records? synced(?: in (?P<seconds>\d+(?:\.\d+)?)\s?s)?\b"
)


def classify_error(text: str) -> str:
    """The kind of an error line or error summary: auth, rate_limit, schema, network or other."""
    for kind, pattern in _RULES:
        if pattern.search(text):
            return kind
    return OTHER


def rate_limit_ratio(message: str) -> float | None:
    """The share of an API rate limit a line says is used (``at 85%`` → 0.85), if it says one."""
    match = _RATE_LIMIT_AT.search(message)
    if match is None:
        return None
    percent = float(match.group(1))
    return percent / 100 if percent <= 100 else None


@dataclass(frozen=True, slots=True)
class StreamLine:
    """A stream's result as an INFO line reports it."""

    stream: str
    records_synced: int
    duration_seconds: float | None


def stream_result(message: str) -> StreamLine | None:
    """``Stream X: N records synced in Ts`` as a stream result, if the line is one.

    Counts and durations past what a record may carry are not believed: the line
    is then not a stream result (a log line must never fail the job it belongs to).

    >>> stream_result("Stream Account: 99999999999999999999 records synced in 1s") is None
    True
    """
    match = _STREAM_SYNCED.match(message)
    if match is None:
        return None
    records = int(match.group("records").replace(",", ""))
    seconds = float(match.group("seconds")) if match.group("seconds") else None
    if records > MAX_COUNT or (seconds is not None and not seconds < MAX_SECONDS):
        return None
    return StreamLine(match.group("stream"), records, seconds)
