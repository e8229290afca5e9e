"""Time helpers: RFC 3339 parsing and an injectable clock.

Times are stored as float seconds since the Unix epoch (UTC). Parsing refuses
naive timestamps, because a sync job's time without an offset is ambiguous once
workers run in several regions.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final, Protocol

#: The timestamp grammar every input is read with; the OpenAPI document states the same pattern.
RFC3339_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_RFC3339 = re.compile(RFC3339_PATTERN)


#: The duration grammar of every input (configuration, read API, MCP tools, CLI): a whole number of
#: seconds, minutes, hours, days or weeks, up to twelve digits (any such age a float holds exactly).
DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION: Final = re.compile(r"^0*([0-9]{1,12})([smhdw])$")


def parse_duration(text: str) -> float:
    """A duration like ``30m``, ``24h``, ``7d`` or ``2w`` in seconds; ValueError if it is not one, or zero.

    >>> parse_duration("7d")
    604800.0
    >>> parse_duration("1.5h")
    Traceback (most recent call last):
    ...
    ValueError: must be a duration like 30m, 24h, 7d or 2w (got '1.5h')
    """
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"must be a duration like 30m, 24h, 7d or 2w (got {text!r})")
    return float(int(match.group(1)) * DURATION_UNITS[match.group(2)])


def format_duration(seconds: float) -> str:
    """``seconds`` in the largest unit of :data:`DURATION_UNITS` that holds it whole (as ``parse_duration`` reads it).

    >>> format_duration(259200), format_duration(601200), format_duration(90.5)
    ('3d', '167h', '90.5s')
    """
    for unit, size in sorted(DURATION_UNITS.items(), key=lambda item: -item[1]):
        if seconds >= size and float(seconds) % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class Clock(Protocol):
    """Anything that tells the current time in epoch seconds."""

    def __call__(self) -> float: ...


def system_clock() -> float:
    """The wall clock, as epoch seconds."""
    return time.time()


def parse_rfc3339(value: str) -> float:
    """Parse an RFC 3339 timestamp into epoch seconds.

    >>> parse_rfc3339("2026-04-06T08:03:17Z")
    1775462597.0
    >>> parse_rfc3339("2026-04-06T10:03:17.5+02:00")
    1775462597.5
    """
    if not _RFC3339.match(value):
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    text = value.replace("z", "Z").replace("t", "T")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python 3.11 reads at most 6 fractional digits; RFC 3339 allows more.
    match = re.match(r"^(.*\.\d{6})\d+(.*)$", text)
    if match:
        text = match.group(1) + match.group(2)
    return datetime.fromisoformat(text).timestamp()


#: The range RFC 3339 (four-digit years) can write; a time stored before values were bounded at the
#: door may lie outside it, and is written as the nearest end rather than failing a read.
_FIRST: Final = -62_135_596_800.0  # 0001-01-01T00:00:00Z
_LAST: Final = 253_402_300_799.0  # 9999-12-31T23:59:59Z


def format_rfc3339(epoch: float) -> str:
    """Format epoch seconds as RFC 3339 UTC with a ``Z``.

    >>> format_rfc3339(1775462597.0)
    '2026-04-06T08:03:17Z'
    >>> format_rfc3339(1775462597.25)
    '2026-04-06T08:03:17.25Z'
    >>> format_rfc3339(253402304399.0)
    '9999-12-31T23:59:59Z'
    >>> format_rfc3339(-59_023_123_200.0)  # four digits for the year, as RFC 3339 wants
    '0099-08-19T00:00:00Z'
    """
    moment = datetime.fromtimestamp(min(max(epoch, _FIRST), _LAST), tz=UTC)
    # isoformat, not strftime: glibc's %Y writes the year 95 as "95".
    text = moment.replace(tzinfo=None).isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    return (text.rstrip("0") if moment.microsecond else text) + "Z"


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """An HTTP ``Retry-After`` header (seconds or an HTTP date) as seconds from ``now``.

    >>> retry_after_seconds("30", 0.0)
    30.0
    >>> retry_after_seconds("Mon, 06 Apr 2026 08:00:10 GMT", 1775462400.0)
    10.0
    >>> retry_after_seconds("soon", 0.0) is None, retry_after_seconds("nan", 0.0) is None
    (True, True)
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None  # "nan" or "inf" is no wait
    try:
        return max(parsedate_to_datetime(value).timestamp() - now, 0.0)
    except (TypeError, ValueError):
        return None
