"""Job log lines: the product's log format and its JSON form.

The product prints one line per event, prefixed with a level::

    INFO Syncing stream: Account
    2026-04-06T08:00:03Z WARN Salesforce API rate limit at 85% — throttling requests

Lines are kept in the order they were received; ``stream`` is read from the
product's stream messages so the log viewer can filter on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from . import records
from .model import LATEST_TIME, MAX_STREAM_NAME, ValidationError, bounded_time, check_text
from .records import text, time
from .redact import redact

#: The product's log levels, as stored and shipped; ``calabi_sync_log_lines_total``'s ``level`` label is
#: each lower-cased (:data:`LEVEL_LABELS`).
LEVELS: Final = ("DEBUG", "INFO", "WARN", "ERROR")
LEVEL_LABELS: Final = tuple(level.lower() for level in LEVELS)
#: Spellings other tools use for the product's four levels.
LEVEL_ALIASES: Final = {"WARNING": "WARN", "ERR": "ERROR", "FATAL": "ERROR", "TRACE": "DEBUG"}
MAX_MESSAGE: Final = 32_768
MAX_LINES: Final = 50_000

_TEXT_LINE = re.compile(
    r"^(?:(?P<ts>\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2}))\s+)?"
    r"(?P<level>[A-Za-z]+)\s+(?P<message>.*)$"
)
_LOOKS_DATED = re.compile(r"^\d{4}-\d{2}-\d{2}")
# "Syncing stream: Account", "Stream Account: complete", "Stream Account: 4,218 records synced in 18.2s"
_STREAM_PATTERNS: Final = (
    re.compile(r"^Syncing stream:\s*(?P<stream>[^\s:][^:]*?)\s*$"),
    re.compile(r"^Stream (?P<stream>[^\s:][^:]*?):"),
)


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a job's execution trace."""

    level: str = records.level("How severe the event is", LEVELS)
    message: str = text(
        "What happened, as the product printed it",
        max_length=MAX_MESSAGE,
        required=True,
        blank=True,
        redacted=True,
    )
    timestamp: float | None = time("When it happened, if the line says; lines sent again with it are stored once")
    stream: str | None = text(
        "The stream it is about: as sent, else read from the product's stream messages", max_length=MAX_STREAM_NAME
    )


#: The fields a JSON log line may carry.
LINE_FIELDS: Final = frozenset(records.names(LogLine))


def _level(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(where, f"must be one of {', '.join(LEVELS)}")
    level = value.upper()
    level = LEVEL_ALIASES.get(level, level)
    if level not in LEVELS:
        raise ValidationError(where, f"must be one of {', '.join(LEVELS)} (got {value!r})")
    return level


def stream_of(message: str) -> str | None:
    """The stream a product log message is about, if any.

    >>> stream_of("Syncing stream: Account")
    'Account'
    >>> stream_of("Stream Account: 4,218 records synced in 18.2s")
    'Account'
    >>> stream_of("Retrying after 30s backoff") is None
    True
    """
    for pattern in _STREAM_PATTERNS:
        match = pattern.match(message)
        if match:
            return match.group("stream")
    return None


def _message(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(where, "must be a string")
    check_text(value, where)
    if len(value) > MAX_MESSAGE:
        raise ValidationError(where, f"must be at most {MAX_MESSAGE} characters")
    return redact(value)


def parse_text(body: str, *, latest: float = LATEST_TIME) -> list[LogLine]:
    r"""Parse ``text/plain`` lines in the product's format; blank lines are skipped.

    A line ends at ``\n`` (or ``\r\n``) and nowhere else: U+2028, a form feed
    or NEL inside a message stays in it, so a message cannot forge a line of
    its own. Line times must lie between 2000 and ``latest``, as a job record's do.

    >>> [line.message for line in parse_text("INFO a\u2028ERROR b\r\nWARN c\x0cd\n")]
    ['a\u2028ERROR b', 'c\x0cd']
    """
    lines: list[LogLine] = []
    for number, raw in enumerate(body.split("\n"), start=1):
        text = raw.rstrip("\r")
        if not text.strip():
            continue
        where = f"line {number}"
        match = _TEXT_LINE.match(text)
        if not match:
            if _LOOKS_DATED.match(text):
                raise ValidationError(f"{where}.timestamp", "must be an RFC 3339 timestamp with an offset, e.g. ...Z")
            raise ValidationError(where, "must be '[timestamp] LEVEL message'")
        level = _level(match.group("level"), f"{where}.level")
        message = _message(match.group("message"), f"{where}.message")
        timestamp = None
        if match.group("ts"):
            timestamp = bounded_time(match.group("ts"), f"{where}.timestamp", latest)
        lines.append(LogLine(level, message, timestamp, stream_of(message)))
        if len(lines) > MAX_LINES:
            raise ValidationError("lines", f"at most {MAX_LINES} lines per request")
    return lines


def parse_json(data: Any, *, latest: float = LATEST_TIME) -> list[LogLine]:
    """Parse a JSON list of ``{timestamp, level, message, stream}`` objects (times bounded as in :func:`parse_text`)."""
    if isinstance(data, dict) and "lines" in data:
        data = data["lines"]
    if not isinstance(data, list):
        raise ValidationError("lines", "must be a JSON list of log lines")
    if len(data) > MAX_LINES:
        raise ValidationError("lines", f"at most {MAX_LINES} lines per request")
    lines: list[LogLine] = []
    for index, item in enumerate(data):
        where = f"lines[{index}]"
        if not isinstance(item, dict):
            raise ValidationError(where, "must be an object")
        unknown = sorted(set(item) - LINE_FIELDS)
        if unknown:
            raise ValidationError(f"{where}.{unknown[0]}", "is not a log line field")
        if "level" not in item:
            raise ValidationError(f"{where}.level", "is required")
        if "message" not in item:
            raise ValidationError(f"{where}.message", "is required")
        level = _level(item["level"], f"{where}.level")
        message = _message(item["message"], f"{where}.message")
        timestamp = None
        if item.get("timestamp") is not None:
            value = item["timestamp"]
            if not isinstance(value, str):
                raise ValidationError(f"{where}.timestamp", "must be an RFC 3339 timestamp string")
            timestamp = bounded_time(value, f"{where}.timestamp", latest)
        stream = item.get("stream")
        if stream is not None and (not isinstance(stream, str) or len(stream) > MAX_STREAM_NAME):
            raise ValidationError(f"{where}.stream", f"must be a string of at most {MAX_STREAM_NAME} characters")
        if stream is not None:
            check_text(stream, f"{where}.stream")
        lines.append(LogLine(level, message, timestamp, stream or stream_of(message)))
    return lines
