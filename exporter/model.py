"""Sync job records: the shape the exporter accepts, and its validation.

A record is validated as a whole before anything is stored, so a rejected
record never leaves a partial job behind. Every error names the field that was
wrong, using a JSON-path-like name (``streams[3].records_synced``) so that a
client can find it in a batch of hundreds.

Each field of :class:`Job` and :class:`StreamResult` is declared with its kind,
meaning and bounds (:mod:`.records`); :func:`parse_job` reads every field by its
kind and keeps only the rules between fields as code of its own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, Final, Literal, get_args

from .records import Meaning, choice, count, names, records, scalars, seconds, status, table, text, time
from .redact import redact
from .timeutil import format_rfc3339, parse_rfc3339

PENDING: Final = "pending"
RUNNING: Final = "running"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"

#: A job's (and a stream's) statuses, as the type of a parameter that takes one (the MCP tools');
#: :data:`STATUSES` and :data:`FINISHED_STATUSES` are their values, in this order.
Status = Literal["pending", "running", "succeeded", "failed", "cancelled"]
FinishedStatus = Literal["succeeded", "failed", "cancelled"]
STATUSES: Final[tuple[str, ...]] = get_args(Status)
ACTIVE_STATUSES: Final = (PENDING, RUNNING)
FINISHED_STATUSES: Final[tuple[str, ...]] = get_args(FinishedStatus)
#: A job that clears the destination (and re-syncs from scratch): no measure of a usual sync.
RESET: Final = "reset"
JOB_TYPES: Final = ("sync", RESET)
#: The platforms whose jobs come in (the product's own, and the sources of :mod:`.sources`).
PLATFORMS: Final = ("calabi", "airbyte", "fivetran")
#: A job that does not say which platform ran it came from the product itself.
DEFAULT_PLATFORM: Final = PLATFORMS[0]

#: Where a status stands in the lifecycle; a record never moves a job backwards.
STATUS_RANK: Final = {PENDING: 0, RUNNING: 1, SUCCEEDED: 2, FAILED: 2, CANCELLED: 2}

JOB_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9_\-.:]{1,128}$")
MAX_CONNECTION_NAME: Final = 200
MAX_TEXT: Final = 4096
MAX_STREAMS: Final = 10_000
MAX_STREAM_NAME: Final = 256
#: The series label value that stands for every connection (or stream) beyond the series budget;
#: no connection or stream may carry it as its own name.
OVERFLOW: Final = "__overflow__"
#: Largest count or byte total a record may carry, given or added up from its streams: 2^53 - 1,
#: the largest integer a float (and so Prometheus, JSON readers, Grafana) holds exactly.
MAX_COUNT: Final = 2**53 - 1
#: Longest duration a record may carry (about 31 years): seconds, not milliseconds by mistake.
MAX_SECONDS: Final = 10**9
#: Earliest time a record may carry (2000-01-01T00:00:00Z): no sync job is older, and a typo such
#: as ``0095-…`` is refused rather than stored.
EARLIEST_TIME: Final = 946_684_800.0
#: Latest time a record may carry when the caller has no clock (2100-01-01T00:00:00Z). Ingestion
#: passes its own: now plus ``max_clock_skew_seconds``.
LATEST_TIME: Final = 4_102_444_800.0


class ValidationError(ValueError):
    """A record (or a part of one) that cannot be accepted.

    ``field`` names the offending field so the HTTP layer can report it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class StreamResult:
    """One stream's outcome within a job."""

    name: str = text(
        "The stream's name (a table or object of the source); the stream label of its metrics",
        max_length=MAX_STREAM_NAME,
        required=True,
        rule=f"each name once in a job; `{OVERFLOW}` is reserved for the streams beyond the series budget",
    )
    status: str | None = status("How the stream ended (or where it stands)", STATUSES)
    records_synced: int | None = count("Rows of the stream written to the destination")
    records_failed: int | None = count("Rows of the stream that could not be written")
    bytes_synced: int | None = count("Bytes of the stream written to the destination")
    duration_seconds: float | None = seconds("How long the stream took")
    error: str | None = text("Why the stream failed, as the product words it", max_length=MAX_TEXT, redacted=True)


@dataclass(frozen=True, slots=True)
class Job:
    """A validated, normalised sync job record.

    Times are epoch seconds. ``None`` means "not told", which matters for the
    merge rules: a later record may fill in what an earlier one did not say.
    """

    job_id: str = text(
        "The product's id of the job: records with the same id are one job, filled in and advanced",
        max_length=128,
        required=True,
        pattern=JOB_ID_PATTERN.pattern,
        pattern_rule="1-128 characters of letters, digits, _ - . :",
    )
    connection_name: str = text(
        "The connection the job ran for, as the product names it, in any Unicode; "
        "the connection label of its metrics; a job keeps the connection it was first seen with",
        max_length=MAX_CONNECTION_NAME,
        required=True,
        rule=f"`{OVERFLOW}` is reserved for the connections beyond the series budget",
    )
    status: str = status(
        "Where the job stands: pending → running → succeeded | failed | cancelled; a finished job's status is final",
        STATUSES,
        required=True,
    )
    connection_id: str | None = text("The product's id of the connection (calabi_sync_connection_info)", max_length=256)
    source: str | None = text("The connection's source (calabi_sync_connection_info)", max_length=MAX_CONNECTION_NAME)
    destination: str | None = text(
        "The connection's destination (calabi_sync_connection_info)", max_length=MAX_CONNECTION_NAME
    )
    platform: str | None = choice(
        "The platform that ran the job (calabi_sync_connection_info); calabi when not sent", PLATFORMS
    )
    job_type: str | None = choice("What the job did: sync copies data, reset clears the destination", JOB_TYPES)
    attempt: int | None = count("Which attempt at the job this is")
    created_at: float | None = time("When the job was queued")
    started_at: float | None = time("When the job started", shipped=True)
    finished_at: float | None = time(
        "When the job finished; a finished job without it finishes when the exporter receives its final status",
        shipped=True,
        rule="only on a finished job, not before started_at",
    )
    records_synced: int | None = count(
        "Rows written to the destination", summary=True, rule="added up from the streams when not sent"
    )
    records_failed: int | None = count(
        "Rows that could not be written", summary=True, rule="added up from the streams when not sent"
    )
    bytes_synced: int | None = count(
        "Bytes written to the destination", summary=True, rule="added up from the streams when not sent"
    )
    duration_seconds: float | None = seconds(
        "How long the job ran", summary=True, rule="finished_at - started_at when not sent"
    )
    streams_succeeded: int | None = count(
        "Streams that succeeded", summary=True, rule="counted from the streams when not sent"
    )
    streams_failed: int | None = count(
        "Streams that failed", summary=True, rule="counted from the streams when not sent"
    )
    error_summary: str | None = text(
        "Why the job failed, as the product words it; shown in alerts",
        max_length=MAX_TEXT,
        redacted=True,
        shipped=True,
    )
    job_url: str | None = text(
        "The job's page in the product; linked from alerts", max_length=2048, redacted=True, shipped=True
    )
    streams: tuple[StreamResult, ...] = records(
        "The job's streams",
        max_items=MAX_STREAMS,
        rule=f"each name once; a job holds at most {MAX_STREAMS:,} streams over all its records",
    )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def with_derived_fields(self) -> Job:
        """This job with the totals and duration it did not tell filled in (:func:`derived_fields`)."""
        changes = derived_fields({name: getattr(self, name) for name in _DERIVED_FROM}, self.streams)
        return replace(self, **changes) if changes else self


#: The fields :func:`derived_fields` reads: those it may fill, and the times a duration comes from.
_DERIVED_FROM: Final = (
    "records_synced",
    "records_failed",
    "bytes_synced",
    "streams_succeeded",
    "streams_failed",
    "duration_seconds",
    "started_at",
    "finished_at",
)


def derived_fields(values: dict[str, Any], streams: tuple[StreamResult, ...]) -> dict[str, Any]:
    """The fields of a job not told but known from the rest: totals from the streams, the duration from the times.

    ``values`` holds the job's fields by name (one missing is not told). Values
    given on the job win: a connector's own totals may include rows outside any
    stream. A total added up from the streams is held to the bound of a given one
    (:data:`MAX_COUNT`), or the job is refused naming the total: two streams at
    the bound would otherwise store a job total no reader holds exactly, and
    enough of them one the store cannot hold.

    >>> derived_fields({"started_at": 100.0, "finished_at": 160.0}, ())
    {'duration_seconds': 60.0}
    """
    changes: dict[str, Any] = {}
    if streams:
        for name in ("records_synced", "records_failed", "bytes_synced"):
            if values.get(name) is None:
                given = [v for s in streams if (v := getattr(s, name)) is not None]
                if given:
                    changes[name] = _stream_total(name, given)
        statuses = [s.status for s in streams]
        if any(s is not None for s in statuses):
            if values.get("streams_succeeded") is None:
                changes["streams_succeeded"] = statuses.count(SUCCEEDED)
            if values.get("streams_failed") is None:
                changes["streams_failed"] = statuses.count(FAILED)
    started_at, finished_at = values.get("started_at"), values.get("finished_at")
    if (
        values.get("duration_seconds") is None
        and started_at is not None
        and finished_at is not None
        and finished_at >= started_at
    ):
        changes["duration_seconds"] = finished_at - started_at
    return changes


def _stream_total(name: str, values: list[int]) -> int:
    """The streams' ``name`` added up, or a ValidationError naming the job's ``name`` past :data:`MAX_COUNT`.

    >>> _stream_total("records_synced", [MAX_COUNT, 0])
    9007199254740991
    >>> _stream_total("bytes_synced", [MAX_COUNT, 1])
    Traceback (most recent call last):
    ...
    calabi_exporter.model.ValidationError: bytes_synced (added up from the streams) must be at most 9007199254740991
    """
    total = sum(values)
    if total > MAX_COUNT:
        raise ValidationError(name, f"(added up from the streams) must be at most {MAX_COUNT}")
    return total


def check_stream_count(job: Job) -> None:
    """Refuse a job with more streams than :data:`MAX_STREAMS`, counting every record of it.

    A finished job may still be sent streams it did not report; each record is
    within the bound, so the bound must also hold for the job they make together.
    """
    if len(job.streams) > MAX_STREAMS:
        raise ValidationError(
            "streams", f"would give job {job.job_id!r} {len(job.streams)} streams; a job holds at most {MAX_STREAMS}"
        )


#: A job's Summary, as the product shows it: the fields declared ``summary=True``.
SUMMARY_FIELDS: Final = tuple(name for name, m in table(Job) if m.summary)
#: The product's name for a failed job's finish time: accepted as ``finished_at`` on a failed job,
#: and written next to it in a failed job's documents. Not a field of its own.
FAILED_AT: Final = "failed_at"
FAILED_AT_MEANING: Final = Meaning(
    "time",
    "The product's name for a failed job's finish time",
    rule="only on a failed job, equal to finished_at when both are sent",
)
JOB_FIELDS: Final = frozenset((*names(Job), FAILED_AT))
STREAM_FIELDS: Final = frozenset(names(StreamResult))
#: The product's "Webhook (custom)" payload carries exactly these fields, in this order.
WEBHOOK_PAYLOAD: Final = ("connection_name", "job_id", "status", "started_at", FAILED_AT, "error_summary", "job_url")
WEBHOOK_FIELDS: Final = frozenset(WEBHOOK_PAYLOAD)


def check_text(value: str, name: str) -> None:
    """Refuse text that not every backend can store, the same way on all of them.

    Lone surrogates (``"\\ud800"``) and NUL (``"\\u0000"``) are valid JSON, but
    PostgreSQL refuses NUL in text where SQLite keeps it: refused here, a record
    gets the same 400 on either backend instead of a 503 that clients retry for ever.
    """
    if "\x00" in value:
        raise ValidationError(name, "must not contain NUL characters (\\u0000)")
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(name, "must be valid Unicode text") from None


def bounded_time(value: str, name: str, latest: float) -> float:
    """An RFC 3339 time between :data:`EARLIEST_TIME` and ``latest``, or a ValidationError naming ``name``.

    >>> bounded_time("2026-04-06T08:00:01Z", "started_at", LATEST_TIME)
    1775462401.0
    >>> bounded_time("9999-12-31T23:59:59-01:00", "finished_at", LATEST_TIME)
    Traceback (most recent call last):
    ...
    calabi_exporter.model.ValidationError: finished_at must be between 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z
    """
    try:
        moment = parse_rfc3339(value)
    except (ValueError, OverflowError):
        raise ValidationError(
            name, f"must be an RFC 3339 timestamp with an offset, e.g. 2026-04-06T08:00:01Z (got {value!r})"
        ) from None
    if not EARLIEST_TIME <= moment <= latest:
        raise ValidationError(
            name, f"must be between {format_rfc3339(EARLIEST_TIME)} and {format_rfc3339(math.floor(latest))}"
        )
    return moment


#: Reads one present (not null) field of a record from JSON, given the latest time a record may carry.
Reader = Callable[[Any, float], Any]


def field_reader(name: str, meaning: Meaning) -> Reader:
    """The reader of one field: its kind and bounds looked at once, here, not again for every record.

    Validation runs for every job and stream of every request; deciding by kind
    for each of them was most of its cost. A missing or null field is not read
    (:func:`_read_all` tells a required one).

    >>> field_reader("attempt", Meaning("count", "Which attempt"))(2.0, LATEST_TIME)
    2
    >>> field_reader("job_type", Meaning("choice", "What", choices=("sync", "reset")))("SYNC", LATEST_TIME)
    'sync'
    """
    kind = meaning.kind
    if kind == "text":
        return _text_reader(name, meaning)
    if kind in ("status", "choice"):
        return _choice_reader(name, meaning.choices)
    if kind == "count":
        return _count_reader(name)
    if kind == "seconds":
        return _seconds_reader(name)
    if kind == "time":
        return _time_reader(name)
    raise TypeError(f"{name}: a {kind} field is read by its record's own code")


def _text_reader(name: str, meaning: Meaning) -> Reader:
    assert meaning.max_length is not None
    max_length, redacted = meaning.max_length, meaning.redacted
    not_blank = meaning.required and not meaning.blank
    match = re.compile(meaning.pattern).match if meaning.pattern is not None else None

    def read(value: Any, latest: float) -> str:
        if not isinstance(value, str):
            raise ValidationError(name, "must be a string")
        check_text(value, name)
        if not_blank and not value.strip():
            raise ValidationError(name, "must not be empty")
        if len(value) > max_length:
            raise ValidationError(name, f"must be at most {max_length} characters")
        if match is not None and not match(value):
            raise ValidationError(name, f"must be {meaning.pattern_rule}")
        return redact(value) if redacted else value

    return read


def _choice_reader(name: str, choices: tuple[str, ...]) -> Reader:
    def read(value: Any, latest: float) -> str:
        if not isinstance(value, str) or (lowered := value.lower()) not in choices:
            raise ValidationError(name, f"must be one of {', '.join(choices)} (got {value!r})")
        return lowered

    return read


def _count_reader(name: str) -> Reader:
    def read(value: Any, latest: float) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 829.0 is the integer 829 to JSON (and to JavaScript senders)
        # bool is an int in Python; a JSON true is never a row count.
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
            raise ValidationError(name, f"must be an integer from 0 to {MAX_COUNT}")
        return value

    return read


def _seconds_reader(name: str) -> Reader:
    def read(value: Any, latest: float) -> float:
        # bool is a number in Python; ``not 0 <= value`` also refuses NaN.
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < MAX_SECONDS:
            raise ValidationError(name, "must be a number >= 0")
        return float(value)

    return read


def _time_reader(name: str) -> Reader:
    def read(value: Any, latest: float) -> float:
        if not isinstance(value, str):
            raise ValidationError(name, "must be an RFC 3339 timestamp string")
        return bounded_time(value, name, latest)

    return read


@cache
def readers(record: type) -> tuple[tuple[str, Reader, bool], ...]:
    """Each scalar field of ``record`` in declaration order, with its reader and whether it is required.

    Made once per record type.
    """
    return tuple((name, field_reader(name, m), m.required) for name, m in scalars(record))


def _read_all(record: type, data: dict[str, Any], latest: float) -> dict[str, Any]:
    """The scalar fields of ``record`` that ``data`` holds, read by name in declaration order.

    A field missing or null is left out (the record's default, ``None``) unless
    it is required. Fields are read in declaration order so that a record with
    several faults is refused for the same one every time.
    """
    values: dict[str, Any] = {}
    for name, read, required in readers(record):
        value = data.get(name)
        if value is not None:
            values[name] = read(value, latest)
        elif required:
            raise ValidationError(name, "is required")
    return values


def _prefixed(error: ValidationError, prefix: str) -> ValidationError:
    return ValidationError(f"{prefix}.{error.field}", error.message)


def _stream(data: Any, index: int, latest: float) -> StreamResult:
    where = f"streams[{index}]"
    if not isinstance(data, dict):
        raise ValidationError(where, "must be an object")
    unknown = sorted(set(data) - STREAM_FIELDS)
    if unknown:
        raise ValidationError(f"{where}.{unknown[0]}", "is not a stream field")
    try:
        stream = StreamResult(**_read_all(StreamResult, data, latest))
        if stream.name == OVERFLOW:
            raise ValidationError("name", f"{OVERFLOW} is reserved for the streams beyond the series budget")
        return stream
    except ValidationError as error:
        raise _prefixed(error, where) from None


def _streams(data: dict[str, Any], latest: float) -> tuple[StreamResult, ...]:
    streams_data = data.get("streams")
    if streams_data is None:
        return ()
    if not isinstance(streams_data, list):
        raise ValidationError("streams", "must be a list")
    if len(streams_data) > MAX_STREAMS:
        raise ValidationError("streams", f"must hold at most {MAX_STREAMS} streams")
    streams = tuple(_stream(item, i, latest) for i, item in enumerate(streams_data))
    names = [s.name for s in streams]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ValidationError("streams", f"names a stream twice: {duplicate!r}")
    return streams


_READ_FAILED_AT: Final = field_reader(FAILED_AT, FAILED_AT_MEANING)


def parse_job(
    data: Any, *, allowed_fields: frozenset[str] = JOB_FIELDS, strict: bool = True, latest: float = LATEST_TIME
) -> Job:
    """Validate one JSON job record and return it normalised.

    Each field is read by the kind it is declared with (:mod:`.records`); the
    rules between fields are below. ``strict`` rejects fields outside
    ``allowed_fields`` (a typo such as ``record_synced`` would otherwise be
    silently dropped); the product's webhook is parsed leniently so that a new
    field there cannot stop alerts. Times must lie between :data:`EARLIEST_TIME`
    and ``latest``: a job finished in the year 9000 would stay the connection's
    latest for ever.
    """
    if not isinstance(data, dict):
        raise ValidationError("record", "must be a JSON object")
    unknown = sorted(set(data) - allowed_fields)
    if unknown and strict:
        raise ValidationError(unknown[0], "is not a job field")
    if unknown:
        data = {key: value for key, value in data.items() if key in allowed_fields}
    values = _read_all(Job, data, latest)
    values.setdefault("platform", DEFAULT_PLATFORM)  # a record that does not say comes from the product
    if values["connection_name"] == OVERFLOW:
        raise ValidationError("connection_name", f"{OVERFLOW} is reserved for the connections beyond the series budget")
    status = values["status"]
    finished_at = values.get("finished_at")
    failed_at = None if data.get(FAILED_AT) is None else _READ_FAILED_AT(data[FAILED_AT], latest)
    if failed_at is not None:
        if status != FAILED:
            raise ValidationError(FAILED_AT, "is only allowed on a failed job")
        if finished_at is not None and finished_at != failed_at:
            raise ValidationError(FAILED_AT, "differs from finished_at")
        finished_at = values["finished_at"] = failed_at
    if finished_at is not None and status not in FINISHED_STATUSES:
        raise ValidationError("finished_at", f"is only allowed on a finished job (status is {status})")
    started_at = values.get("started_at")
    if started_at is not None and finished_at is not None and finished_at < started_at:
        raise ValidationError("finished_at", "must not be before started_at")
    streams = _streams(data, latest)
    return Job(**values, **derived_fields(values, streams), streams=streams)


def parse_webhook(data: Any, *, latest: float = LATEST_TIME) -> Job:
    """Read the product's status-change webhook as a job record."""
    return parse_job(data, allowed_fields=WEBHOOK_FIELDS, strict=False, latest=latest)
