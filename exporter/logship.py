"""Shipping job logs to Loki over OTLP/HTTP, durably.

Ingestion only writes lines (and finished jobs' summaries) to the store's
outbox and returns; this shipper, one per data directory whatever the number
of worker processes, reads the outbox in order, hands each batch to the
OpenTelemetry SDK's OTLP/HTTP log exporter, and moves the outbox cursor only
once the export succeeded. So Loki being slow or down never slows ingestion
and loses nothing: the batch stays in the outbox and is tried again with a
capped exponential backoff (or the server's ``Retry-After``).

Each request holds one connection's records (one Loki stream, whatever Loki's
OTLP mapping), oldest first, a job's summary after its lines. Loki refuses an
entry older than its stream's newest entry minus ``max_chunk_age / 2`` ("entry
too far behind"), which a backfill or a log uploaded after a long job meets all
the time. The stream's newest entry is never known for sure (other connections
share the stream under Loki's default mapping, Loki shards busy streams, the
exporter restarts), but it is seldom ahead of now. So a record older than five
sixths of ``log_out_of_order_window_seconds`` is sent at that age instead, a
nanosecond after the previous one so that order is kept and no two share a time,
with its true time in the ``log_time`` attribute, which the dashboards show.
Should Loki still refuse records as too far behind (its window is shorter, or
the stream holds entries from the future), its answer says how many and from
when it accepts: they are sent again from there, with ``log_time`` too.

A record refused for good (HTTP 400 for any other reason, 413) is narrowed down
by splitting the request in halves until it is alone; it goes to the dead
letters with the receiver's reason, the rest is shipped. Loki answers 400 for a
whole request when it rejects some of its lines while storing the others;
re-sending the stored ones does not duplicate them, as Loki drops an entry
identical to one it has (same stream, time and text). Lines older than
``log_max_age_seconds``, which Loki would refuse as too old
(``reject_old_samples_max_age``), are dead-lettered before sending so that a
backfill does not hold up the outbox.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import requests
from google.protobuf.message import DecodeError
from google.rpc.status_pb2 import Status
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from . import __version__
from .backoff import Backoff
from .config import Config
from .model import SUMMARY_FIELDS
from .redact import redact
from .refusal import CUTOFF_RESOLUTION, Refusal, read_refusal
from .singleton import SingletonWorker
from .store import OutboxEntry, Store, StoreError
from .store.database import RoleLock
from .store.records import SHIPPER_ROLE
from .timeutil import Clock, format_rfc3339, retry_after_seconds, system_clock

log = logging.getLogger(__name__)

SEVERITIES: Final = {
    "DEBUG": SeverityNumber.DEBUG,
    "INFO": SeverityNumber.INFO,
    "WARN": SeverityNumber.WARN,
    "ERROR": SeverityNumber.ERROR,
}
SUMMARY_SEVERITY: Final = {"succeeded": "INFO", "cancelled": "WARN", "failed": "ERROR"}
SCOPE: Final = InstrumentationScope("calabi_exporter", __version__)
REFUSED: Final = (400, 413)  # the receiver will never take this request as it is
MAX_MESSAGE: Final = 65_536
MAX_REASON: Final = 500  # characters of the receiver's message kept with a dead letter
#: Times a record refused for its place in the stream is sent again later before it is dead-lettered.
MAX_RETIMES: Final = 3
#: Records older than this part of Loki's out-of-order window are sent at that age: the stream's
#: newest entry may be a little ahead of this clock (another job's lines, clock skew).
LATE_FRACTION: Final = 5 / 6


def resource_for(config: Config, connection: str) -> Resource:
    """The resource of one connection's records.

    ``service.instance.id`` is stable so that a restart does not open new Loki
    streams. ``connection`` is a resource attribute as well as a record
    attribute because Loki makes index labels of resource attributes only.
    """
    attributes: dict[str, str] = {
        "service.name": config.service_name,
        "service.instance.id": config.service_instance_id or socket.gethostname(),
        "connection": connection,
    }
    if config.service_namespace:
        attributes["service.namespace"] = config.service_namespace
    if config.deployment_environment:
        attributes["deployment.environment"] = config.deployment_environment
    return Resource(attributes)


def to_log_record(entry: OutboxEntry, resource: Resource, *, at_ns: int | None = None) -> ReadableLogRecord:
    """One outbox entry as an OTLP log record: a job's log line, or its ``job_summary`` event.

    ``at_ns`` sends the record at another time than its own (Loki refused it at its
    own time); its true time then goes along as ``log_time``.
    """
    job = entry.job
    attributes: dict[str, Any] = {"job_id": job.job_id, "connection": job.connection_name}
    if job.connection_id:
        attributes["connection_id"] = job.connection_id
    line = entry.line
    if line is not None:
        level = line.level.upper()
        if line.stream:
            attributes["stream"] = line.stream
        attributes["event"] = "log"
        body = line.message
    else:
        level = SUMMARY_SEVERITY.get(job.status, "INFO")
        attributes["event"] = "job_summary"
        attributes["status"] = job.status
        for name in (*SUMMARY_FIELDS, "error_summary", "job_url"):
            value = getattr(job, name)
            if value is not None:
                attributes[name] = value
        for name in ("started_at", "finished_at"):
            moment = getattr(job, name)
            if moment is not None:
                attributes[name] = format_rfc3339(moment)
        body = _summary_text(entry)
    timestamp = nanos(moment_of(entry))
    if at_ns is not None and at_ns != timestamp:
        attributes["log_time"] = format_rfc3339(moment_of(entry))
        timestamp = at_ns
    record = LogRecord(
        timestamp=timestamp,
        observed_timestamp=nanos(entry.received_at),
        severity_text=level,
        severity_number=SEVERITIES.get(level, SeverityNumber.INFO),
        body=body,
        attributes=attributes,
    )
    return ReadableLogRecord(record, resource=resource, instrumentation_scope=SCOPE)


def moment_of(entry: OutboxEntry) -> float:
    """When a record happened: the line's own time, the job's finish, else when it was received."""
    line = entry.line
    if line is not None and line.timestamp is not None:
        return line.timestamp
    if line is None and entry.job.finished_at is not None:
        return entry.job.finished_at
    return entry.received_at


def shipping_order(entry: OutboxEntry) -> tuple[float, int, int]:
    """Oldest first; a job's summary after its lines of the same time; then as received."""
    return moment_of(entry), entry.line is None, entry.id


def nanos(seconds: float) -> int:
    """Epoch seconds as the integer nanoseconds of OTLP."""
    return round(seconds * 1e9)


def _summary_text(entry: OutboxEntry) -> str:
    job = entry.job
    parts = [f"Job {job.job_id} {job.status}"]
    if job.records_synced is not None:
        parts.append(f"records synced {job.records_synced}")
    if job.records_failed is not None:
        parts.append(f"records failed {job.records_failed}")
    if job.streams_succeeded is not None or job.streams_failed is not None:
        done = job.streams_succeeded or 0
        parts.append(f"streams succeeded {done} / {done + (job.streams_failed or 0)}")
    if job.error_summary:
        parts.append(job.error_summary)
    return "; ".join(parts)


class RecordingSession(requests.Session):
    """A requests session that remembers the last answer, which the SDK exporter does not return."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.last_status: int | None = None
        self.last_retry_after: float | None = None
        self.last_message = ""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.calls += 1
        self.last_status = None
        self.last_retry_after = None
        self.last_message = ""
        response = super().request(*args, **kwargs)
        self.last_status = response.status_code
        self.last_retry_after = retry_after_seconds(response.headers.get("Retry-After"), system_clock())
        if response.status_code >= 400:
            self.last_message = _error_message(response)
        return response


def _error_message(response: requests.Response) -> str:
    """What an OTLP receiver said was wrong: a protobuf ``google.rpc.Status`` (Loki) or text.

    Loki sends its Status as ``application/octet-stream``; kept whole (up to 64 KiB)
    because the shipper reads which records were refused from it.
    """
    body = response.content[:MAX_MESSAGE]
    content_type = response.headers.get("Content-Type", "")
    if "protobuf" in content_type or "octet-stream" in content_type:
        status = Status()
        try:
            status.ParseFromString(body)
        except DecodeError:
            pass
        else:
            if status.message:
                return str(status.message)
    return body.decode("utf-8", "replace").strip()


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one export went."""

    ok: bool
    status: int | None = None
    retry_after: float | None = None
    sent: bool = True
    message: str = ""

    @property
    def refused(self) -> bool:
        """The receiver will not take these records as they are (or they could not be sent at all)."""
        return not self.ok and (not self.sent or self.status in REFUSED)


class Exporter:
    """The SDK's OTLP/HTTP log exporter, and what its last request was answered."""

    def __init__(self, config: Config) -> None:
        self.session = RecordingSession()
        self._exporter = OTLPLogExporter(
            endpoint=config.otlp_logs_endpoint,
            headers=dict(config.otlp_headers),
            timeout=config.otlp_timeout_seconds,
            session=self.session,
        )

    def export(self, records: Sequence[ReadableLogRecord]) -> Attempt:
        calls = self.session.calls
        result = self._exporter.export(records)
        if result == LogRecordExportResult.SUCCESS:
            return Attempt(True, self.session.last_status)
        if self.session.calls == calls:  # refused before sending (e.g. larger than the request limit)
            return Attempt(False, sent=False)
        session = self.session
        return Attempt(False, session.last_status, session.last_retry_after, message=session.last_message)

    def shutdown(self) -> None:
        self._exporter.shutdown()  # type: ignore[no-untyped-call]


class LogShipper(SingletonWorker):
    """Moves the outbox to the OTLP receiver; see the module docstring for the rules."""

    NAME = "calabi-log-shipper"

    # A receiver's Retry-After is honoured up to five minutes (a day would stall shipping).
    BACKOFF: Final = Backoff(first=0.5, cap=30.0, retry_after_cap=300.0)
    IDLE_POLL: Final = 0.5

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        exporter: Exporter | None = None,
        clock: Clock = system_clock,
        lock: RoleLock | None = None,
        backoff: Backoff = BACKOFF,
    ) -> None:
        self._outbox = store.outbox
        self._backoff = backoff
        self._config = config
        self._exporter = exporter or Exporter(config)
        self._clock = clock
        super().__init__(lock or store.role_lock(SHIPPER_ROLE))
        self._resources: dict[str, Resource] = {}
        self._failures = 0  # failed attempts in a row
        self._healthy = False  # no export has got through yet
        self._retimed_until = 0  # the last time (ns) a record was sent at instead of its own
        self._placed: dict[int, int] = {}  # outbox id -> the time (ns) it went at, for records not yet done

    # ---------------------------------------------------------------- one step

    def ship_once(self) -> float:
        """Ship one batch if one is waiting; returns how long to wait before the next step."""
        # Until an export gets through (at start, and after a failure) only the oldest record goes
        # out: an outage then costs one small request per backoff period, not a batch encoded again
        # and again while ingestion needs the CPU.
        entries = self._outbox.read(self._config.otlp_batch_size if self._healthy else 1)
        if not entries:
            return self.IDLE_POLL
        oldest = self._clock() - self._config.log_max_age_seconds
        too_old = f"older than log_max_age_seconds ({self._config.log_max_age_seconds:g} s), which Loki refuses"
        shipment = _Shipment()
        streams: dict[str, list[OutboxEntry]] = {}
        for entry in entries:
            line = entry.line
            debug = line is not None and line.level.upper() == "DEBUG"
            if debug and not self._config.ships_debug(entry.job.connection_name):
                continue  # DEBUG lines of connections not in debug mode stay local
            if moment_of(entry) < oldest:
                shipment.dead.append((entry, too_old))
            else:
                streams.setdefault(entry.job.connection_name, []).append(entry)
        for connection, stream in streams.items():
            failure = self._deliver(connection, sorted(stream, key=shipping_order), shipment)
            if failure is not None:
                self._healthy = False
                waiting = sum(len(s) for s in streams.values())
                self._outbox.failed(waiting)
                self._failures += 1
                wait = self._backoff.wait(self._failures, failure.retry_after)
                log.warning(
                    "log export to %s failed (%s); %d records wait, retrying in %.1f s",
                    redact(self._config.otlp_logs_endpoint),
                    "no answer" if failure.status is None else f"HTTP {failure.status}",
                    waiting,
                    wait,
                )
                return wait
        self._failures = 0
        self._healthy = self._healthy or shipment.sent
        self._outbox.done(entries[-1].id, exported=shipment.exported, dead=shipment.dead)
        self._placed = {id_: at for id_, at in self._placed.items() if id_ > entries[-1].id}
        return 0.0

    def _deliver(self, connection: str, stream: list[OutboxEntry], shipment: _Shipment) -> Attempt | None:
        """Ship one connection's records (oldest first); returns the attempt that failed for now, if one did."""
        resource = self._resource(connection)
        horizon = self._clock() - self._config.log_out_of_order_window_seconds * LATE_FRACTION
        # A record of a batch tried again goes at the time it went at before, whatever it is now.
        late = [e for e in stream if e.id not in self._placed and moment_of(e) < horizon]
        self._retimed(late, horizon)
        for entry in stream:
            self._placed.setdefault(entry.id, nanos(moment_of(entry)))
        pending = _in_sent_order([(entry, self._placed[entry.id]) for entry in stream])
        for retime in range(MAX_RETIMES + 1):
            behind = _Behind()
            failure = self._send(resource, pending, shipment, behind)
            if failure is not None or not behind.entries:
                return failure
            if retime == MAX_RETIMES:
                shipment.dead += [(entry, _refusal(behind.attempt)) for entry in behind.entries]
                return None
            base = behind.cutoff + CUTOFF_RESOLUTION if behind.cutoff is not None else self._clock()
            pending = self._retimed(sorted(behind.entries, key=shipping_order), base, again=True)
        return None

    def _send(
        self,
        resource: Resource,
        pending: Sequence[tuple[OutboxEntry, int | None]],
        shipment: _Shipment,
        behind: _Behind,
    ) -> Attempt | None:
        """Export ``pending``, sorting what the receiver refuses: later in time (``behind``) or never (dead)."""
        records = [to_log_record(entry, resource, at_ns=at) for entry, at in pending]
        attempt = self._exporter.export(records)
        shipment.sent = shipment.sent or attempt.ok
        if attempt.ok:
            shipment.exported += len(pending)
            return None
        if not attempt.refused:
            return attempt
        shipment.sent = True  # the receiver answered: it is up
        refusal = read_refusal(attempt.message) if attempt.sent else None
        split = refusal.split([r.log_record.timestamp or 0 for r in records]) if refusal else None
        if refusal is not None and split is not None:  # the receiver said exactly which
            behind_end = split.unknown + split.behind
            behind.add([entry for entry, _ in pending[split.unknown : behind_end]], refusal, attempt)
            shipment.exported += len(pending) - behind_end
            # The oldest ones, dropped without a word: on their own they get an answer of their own.
            return self._send(resource, pending[: split.unknown], shipment, behind) if split.unknown else None
        if len(pending) == 1:
            if refusal is not None and refusal.behind:
                behind.add([pending[0][0]], refusal, attempt)
            else:
                shipment.dead.append((pending[0][0], _refusal(attempt)))
            return None
        middle = len(pending) // 2
        for half in (pending[:middle], pending[middle:]):
            failure = self._send(resource, half, shipment, behind)
            if failure is not None:
                return failure  # transient: the whole batch is tried again later
        return None

    def _retimed(
        self, entries: list[OutboxEntry], base: float, *, again: bool = False
    ) -> list[tuple[OutboxEntry, int | None]]:
        """``entries`` (oldest first) sent from ``base`` on, a nanosecond apart, in their order.

        Never earlier than the last record re-timed, so that two re-timed records never
        share a time and text (Loki would keep one of them). A record of a batch tried
        again after a failure keeps the time it was first sent at, so that Loki, which
        may have stored it then, sees the same entry and keeps one; ``again`` moves
        records Loki refused at that time.
        """
        placed: list[tuple[OutboxEntry, int | None]] = []
        for entry in entries:
            at = None if again else self._placed.get(entry.id)
            if at is None:
                at = self._retimed_until = max(nanos(base), self._retimed_until + 1)
                self._placed[entry.id] = at
            placed.append((entry, at))
        return placed

    def _resource(self, connection: str) -> Resource:
        resource = self._resources.get(connection)
        if resource is None:
            resource = self._resources[connection] = resource_for(self._config, connection)
        return resource

    # ---------------------------------------------------------------- the thread

    ERROR_WAIT = BACKOFF.cap

    def step(self) -> float:
        try:
            return self.ship_once()
        except StoreError as error:
            log.error("log shipper cannot read the store: %s", error)
            return self._backoff.cap

    def close(self) -> None:
        self._exporter.shutdown()


def _in_sent_order(pending: list[tuple[OutboxEntry, int | None]]) -> list[tuple[OutboxEntry, int | None]]:
    """Records by the time they are sent at: Loki's refusals are read as the oldest of a request."""
    return sorted(pending, key=lambda item: item[1] if item[1] is not None else nanos(moment_of(item[0])))


@dataclass(slots=True)
class _Shipment:
    """What one batch came to."""

    exported: int = 0
    dead: list[tuple[OutboxEntry, str]] = field(default_factory=list)
    sent: bool = False  # the receiver answered at least once


@dataclass(slots=True)
class _Behind:
    """Records refused for their place in the stream, to be sent again later in time."""

    entries: list[OutboxEntry] = field(default_factory=list)
    cutoff: float | None = None
    attempt: Attempt = field(default_factory=lambda: Attempt(False))

    def add(self, entries: list[OutboxEntry], refusal: Refusal, attempt: Attempt) -> None:
        if not entries:
            return
        self.entries += entries
        self.attempt = attempt
        if refusal.cutoff is not None:
            self.cutoff = refusal.cutoff if self.cutoff is None else max(self.cutoff, refusal.cutoff)


def _refusal(attempt: Attempt) -> str:
    if not attempt.sent:
        return "could not be sent (larger than the exporter's request limit)"
    reason = f"refused by the receiver (HTTP {attempt.status})"
    return f"{reason}: {attempt.message[:MAX_REASON]}" if attempt.message else reason
