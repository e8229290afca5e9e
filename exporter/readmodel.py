"""The read side: job listings, one job with its logs, connection health, as JSON documents.

One implementation serves the HTTP read API and the MCP tools: both hand in
query parameters (a mapping of name to values, repeatable names allowed) and
get the same document back, or :class:`BadParameter` naming what was wrong.

Times in parameters are RFC 3339 or an age before now (``30m``, ``24h``,
``7d``, ``2w``). A job's place in listings is its ``job_time``: when it was
queued, else started, else finished, fixed when the exporter first hears of
it, so pages stay stable while jobs progress and new ones arrive.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Final

from . import timeutil
from .aggregates import ConnectionAgg
from .documents import job_document, stored_line_document
from .joblogs import LEVEL_ALIASES, LEVELS
from .model import (
    DEFAULT_PLATFORM,
    FAILED,
    FINISHED_STATUSES,
    JOB_ID_PATTERN,
    JOB_TYPES,
    STATUSES,
    SUCCEEDED,
)
from .store import JobFilter, JobReads, StoredLine
from .timeutil import format_rfc3339, parse_rfc3339

Params = Mapping[str, Sequence[str]]

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
DEFAULT_LOG_LIMIT: Final = 200
MAX_LOG_LIMIT: Final = 5000
DEFAULT_WINDOW: Final = "7d"
MAX_WINDOW_SECONDS: Final = 366 * 86400
#: Longest cursor text read: the API's own are under 200 characters.
MAX_CURSOR: Final = 1024
#: Bounds of what a cursor may hold: a job time in epoch seconds as a float holds it (times are
#: bounded well within at ingestion), and a log line id as the store keeps it (a signed 64-bit integer).
MAX_CURSOR_TIME: Final = 2.0**53
MAX_LINE_ID: Final = 2**63 - 1


class BadParameter(ValueError):
    """A query parameter that cannot be used; ``name`` is the parameter."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def parse_age(name: str, text: str) -> float:
    """An age like ``24h`` or ``7d`` given as the query parameter ``name``, in seconds.

    A bad one raises :class:`BadParameter` naming ``name``, which the read API and the MCP
    tools answer as such; :func:`.timeutil.parse_duration` is the grammar underneath.

    >>> parse_age("window", "7d")
    604800.0
    >>> parse_age("window", "a week")
    Traceback (most recent call last):
    ...
    calabi_exporter.readmodel.BadParameter: window: must be a duration like 30m, 24h, 7d or 2w (got 'a week')
    """
    try:
        return timeutil.parse_duration(text)
    except ValueError as error:
        raise BadParameter(name, str(error)) from None


def parse_moment(name: str, text: str, now: float) -> float:
    """RFC 3339, or an age before ``now`` (``24h``).

    >>> parse_moment("since", "24h", 1775462400.0) == 1775462400.0 - 86400
    True
    >>> parse_moment("since", "2026-04-06T08:00:00Z", 0.0)
    1775462400.0
    """
    with suppress(ValueError):
        return now - timeutil.parse_duration(text)
    try:
        return parse_rfc3339(text.strip())
    except ValueError:
        raise BadParameter(
            name, f"must be RFC 3339 (2026-04-06T08:00:00Z) or an age like 24h or 7d (got {text!r})"
        ) from None


class _Args:
    """Query parameters of one request: each read at most once, unknown names refused."""

    def __init__(self, params: Params, allowed: Sequence[str]) -> None:
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise BadParameter(unknown[0], f"unknown parameter; use {', '.join(allowed)}")
        for name, values in params.items():
            for value in values:
                _check_text(name, value)
        self._params = params

    def many(self, name: str, *, commas: bool = True) -> list[str]:
        """Every value of a repeatable parameter; ``commas``: ``a,b`` counts as two (not for names)."""
        given = self._params.get(name, ())
        values = [v for value in given for v in value.split(",")] if commas else list(given)
        if any(not v.strip() for v in values):
            raise BadParameter(name, "must not be empty")
        return [v.strip() for v in values]

    def one(self, name: str) -> str | None:
        values = list(self._params.get(name, ()))
        if len(values) > 1:
            raise BadParameter(name, "may be given once")
        if values and not values[0].strip():
            raise BadParameter(name, "must not be empty")
        return values[0].strip() if values else None

    def limit(self, default: int, maximum: int, name: str = "limit") -> int:
        text = self.one(name)
        if text is None:
            return default
        if not text.isdigit() or not 1 <= int(text) <= maximum:
            raise BadParameter(name, f"must be an integer from 1 to {maximum} (got {text!r})")
        return int(text)

    def statuses(self, name: str = "status") -> tuple[str, ...]:
        values = [v.lower() for v in self.many(name)]
        for value in values:
            if value not in STATUSES:
                raise BadParameter(name, f"must be one of {', '.join(STATUSES)} (got {value!r})")
        return tuple(dict.fromkeys(values))


def _check_text(name: str, value: str) -> None:
    """Refuse a NUL in a parameter: no stored text holds one, and PostgreSQL refuses it in a query."""
    if "\x00" in value:
        raise BadParameter(name, "must not contain NUL characters (%00)")


def _check_job_id(job_id: str) -> str:
    """A job id as records carry them; any other text names no job and is refused before it reaches a query."""
    if not JOB_ID_PATTERN.match(job_id):
        raise BadParameter("job_id", "must be 1-128 characters of letters, digits, _ - . :")
    return job_id


def _encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(text: str) -> Any:
    if len(text) > MAX_CURSOR:
        raise _not_a_cursor()
    try:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        raise _not_a_cursor() from None


def _not_a_cursor() -> BadParameter:
    return BadParameter("cursor", "is not a cursor this API returned")


def _jobs_cursor(text: str) -> tuple[float, str]:
    """A job listing's cursor: the last job's place (a finite time, as stored) and its id.

    >>> _jobs_cursor(_encode_cursor([1775462400.5, "j-1"]))
    (1775462400.5, 'j-1')
    >>> _jobs_cursor(_encode_cursor([int("9" * 400), "j-1"]))
    Traceback (most recent call last):
    ...
    calabi_exporter.readmodel.BadParameter: cursor: is not a cursor this API returned
    """
    decoded = _decode_cursor(text)
    if not (isinstance(decoded, list) and len(decoded) == 2 and isinstance(decoded[1], str)):
        raise _not_a_cursor()
    moment, job_id = decoded
    if isinstance(moment, bool) or not isinstance(moment, int | float) or not abs(moment) <= MAX_CURSOR_TIME:
        raise _not_a_cursor()  # also NaN and infinity, which json reads
    if not JOB_ID_PATTERN.match(job_id):
        raise _not_a_cursor()
    return float(moment), job_id


def _log_cursor(text: str) -> int:
    """A log page's cursor: the last line's id, which the store keeps in a signed 64-bit integer.

    >>> _log_cursor(_encode_cursor(2**63 - 1))
    9223372036854775807
    >>> _log_cursor(_encode_cursor(2**63))
    Traceback (most recent call last):
    ...
    calabi_exporter.readmodel.BadParameter: cursor: is not a cursor this API returned
    """
    decoded = _decode_cursor(text)
    if not isinstance(decoded, int) or isinstance(decoded, bool) or not 0 <= decoded <= MAX_LINE_ID:
        raise _not_a_cursor()
    return decoded


def _resolve_connections(store: JobReads, wanted: Sequence[str]) -> tuple[str, ...] | None:
    """Connection names for names, ids, or (failing both) case-insensitive parts of names.

    ``()`` when nothing was asked for; None when nothing asked for is known.
    """
    if not wanted:
        return ()
    known = sorted(store.connection_names())
    names = [name for name, _ in known]
    by_id = {connection_id: name for name, connection_id in known if connection_id}
    found: list[str] = []
    for text in wanted:
        if text in names:
            found.append(text)
        elif text in by_id:
            found.append(by_id[text])
        else:
            part = text.casefold()
            found += [name for name in names if part in name.casefold()]
    return tuple(dict.fromkeys(found)) or None


@dataclass(frozen=True, slots=True)
class JobsQuery:
    where: JobFilter
    limit: int
    after: tuple[float, str] | None


JOBS_PARAMETERS: Final = ("connection", "status", "since", "until", "job_type", "limit", "cursor")


def list_jobs(store: JobReads, params: Params, now: float) -> dict[str, Any]:
    """``GET /api/v1/jobs``: newest first, one page, and the cursor of the next (null on the last page)."""
    args = _Args(params, JOBS_PARAMETERS)
    statuses = args.statuses()
    since_text, until_text = args.one("since"), args.one("until")
    since = None if since_text is None else parse_moment("since", since_text, now)
    until = None if until_text is None else parse_moment("until", until_text, now)
    if since is not None and until is not None and until <= since:
        raise BadParameter("until", "must be after since")
    job_type = args.one("job_type")
    if job_type is not None and job_type not in JOB_TYPES:
        raise BadParameter("job_type", f"must be one of {', '.join(JOB_TYPES)} (got {job_type!r})")
    limit = args.limit(DEFAULT_LIMIT, MAX_LIMIT)
    cursor = args.one("cursor")
    after = None if cursor is None else _jobs_cursor(cursor)
    connections = _resolve_connections(store, args.many("connection", commas=False))
    if connections is None:
        return {"jobs": [], "next_cursor": None}
    where = JobFilter(connections=connections, statuses=statuses, since=since, until=until, job_type=job_type)
    rows = store.jobs(where, limit + 1, after)
    page = rows[:limit]
    next_cursor = _encode_cursor([page[-1][0], page[-1][1].job_id]) if len(rows) > limit else None
    return {
        "jobs": [{**job_document(job, streams=False), "job_time": format_rfc3339(t)} for t, job in page],
        "next_cursor": next_cursor,
    }


JOB_PARAMETERS: Final = ("level", "search", "limit", "cursor")


def _line_document(stored: StoredLine) -> dict[str, Any]:
    return stored_line_document(stored.id, stored.line, stored.received_at)


def get_job(store: JobReads, job_id: str, params: Params) -> dict[str, Any] | None:
    """``GET /api/v1/jobs/<job_id>``: the job with its streams and one page of its log lines; None if unknown."""
    _check_job_id(job_id)
    args = _Args(params, JOB_PARAMETERS)
    levels = []
    for value in args.many("level"):
        level = LEVEL_ALIASES.get(value.upper(), value.upper())
        if level not in LEVELS:
            raise BadParameter("level", f"must be one of {', '.join(LEVELS)} (got {value!r})")
        levels.append(level)
    search = args.one("search") or ""
    limit = args.limit(DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT)
    cursor = args.one("cursor")
    after_id = 0 if cursor is None else _log_cursor(cursor)
    job = store.job(job_id)
    if job is None:
        return None
    lines = store.log_page(job_id, levels=levels, search=search, after_id=after_id, limit=limit + 1)
    page = lines[:limit]
    return {
        **job_document(job),
        "logs": {
            "lines": [_line_document(stored) for stored in page],
            "next_cursor": _encode_cursor(page[-1].id) if len(lines) > limit else None,
        },
    }


CONNECTIONS_PARAMETERS: Final = ("connection", "window", "stale_for", "last_status")


def _time(value: float | None) -> str | None:
    return None if value is None else format_rfc3339(value)


def connection_document(
    agg: ConnectionAgg, stats: dict[str, int], avg: float | None, window: str, now: float
) -> dict[str, Any]:
    succeeded, failed = stats.get(SUCCEEDED, 0), stats.get(FAILED, 0)
    latest = None
    if agg.last_job_id is not None:
        latest = {
            "job_id": agg.last_job_id,
            "status": agg.last_job_status,
            "finished_at": _time(agg.last_job_finished_at),
            "error_summary": agg.last_job_error_summary,
            "job_url": agg.last_job_url,
        }
    return {
        "connection_name": agg.connection,
        "connection_id": agg.connection_id,
        "source": agg.source,
        "destination": agg.destination,
        "platform": agg.platform or DEFAULT_PLATFORM,
        "first_seen": format_rfc3339(agg.first_seen),
        "latest_job": latest,
        "last_status": agg.last_job_status,
        "last_success_at": _time(agg.last_success_at),
        "last_failure_at": _time(agg.last_failure_at),
        "seconds_since_success": None if agg.last_success_at is None else max(now - agg.last_success_at, 0.0),
        "consecutive_failures": agg.consecutive_failures,
        "window": window,
        "jobs": {status: stats.get(status, 0) for status in FINISHED_STATUSES},
        # Cancelled jobs left out, as in the connection:calabi_sync_success_ratio recording rules.
        "success_ratio": succeeded / (succeeded + failed) if succeeded + failed else None,
        "avg_duration_seconds": avg,
    }


def list_connections(store: JobReads, params: Params, now: float) -> dict[str, Any]:
    """``GET /api/v1/connections``: every known connection with its health and its jobs over ``window``.

    ``stale_for``: only connections without a success for that long, counting a
    connection that never succeeded from when it was first seen (as the
    ``connection:calabi_sync_seconds_since_success:over3d`` recording rule does).
    """
    args = _Args(params, CONNECTIONS_PARAMETERS)
    window = args.one("window") or DEFAULT_WINDOW
    window_seconds = parse_age("window", window)
    if window_seconds > MAX_WINDOW_SECONDS:
        raise BadParameter("window", "must be at most 366d")
    stale_text = args.one("stale_for")
    stale_for = None if stale_text is None else parse_age("stale_for", stale_text)
    last_status = args.statuses("last_status")
    for status in last_status:
        if status not in FINISHED_STATUSES:
            raise BadParameter("last_status", f"must be one of {', '.join(FINISHED_STATUSES)} (got {status!r})")
    wanted = _resolve_connections(store, args.many("connection", commas=False))
    aggregates = [] if wanted is None else store.connection_aggregates()
    stats = store.window_stats(now - window_seconds)
    out = []
    for agg in sorted(aggregates, key=lambda a: a.connection):
        if wanted and agg.connection not in wanted:
            continue
        if last_status and agg.last_job_status not in last_status:
            continue
        if stale_for is not None:
            since = agg.last_success_at if agg.last_success_at is not None else agg.first_seen
            if now - since <= stale_for:
                continue
        window_stats = stats.get(agg.connection)
        counts = window_stats.jobs if window_stats else {}
        avg = (
            window_stats.duration_sum / window_stats.duration_count
            if window_stats and window_stats.duration_count
            else None
        )
        out.append(connection_document(agg, counts, avg, window, now))
    return {"connections": out}
