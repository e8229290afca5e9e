"""Shipping job logs to Loki over OTLP/HTTP, durably.

Ingestion only writes lines (and finished jobs' summaries) to the store's
outbox and returns; this shipper, one per data directory whatever the number
of worker processes, reads the outbox in order, hands each batch to the
OpenTelemetry SDK's OTLP/HTTP log exporter, and moves the outbox cursor only
once the export succeeded. So Loki being slow or down never slows ingestion
and loses nothing: the batch stays in the outbox and is tried again with a
capped exponential backoff (or the server's ``Retry-After``).

A batch the receiver refuses for good (HTTP 400, 413) is split in halves until
the refused records are alone; those go to the dead letters, the rest is
shipped. Loki answers 400 for a whole request when it rejects some of its
lines while storing the others; re-sending the stored ones does not duplicate
them, as Loki drops an entry identical to one it has (same stream, time and
text). Lines older than ``log_max_age_seconds``, which Loki would reject that
way, are dead-lettered before sending so that a backfill does not hold up the
outbox.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
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
from .config import Config
from .model import SUMMARY_FIELDS
from .singleton import DirectoryLock, SingletonWorker
from .store import OutboxEntry, Store, StoreError
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
LOCK_FILENAME: Final = "calabi-exporter-shipper.lock"
REFUSED: Final = (400, 413)  # the receiver will never take this request as it is


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


def _nanos(seconds: float) -> int:
    return round(seconds * 1e9)


def to_log_record(entry: OutboxEntry, resource: Resource) -> ReadableLogRecord:
    """One outbox entry as an OTLP log record: a job's log line, or its ``job_summary`` event."""
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
        timestamp = line.timestamp if line.timestamp is not None else entry.received_at
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
        timestamp = job.finished_at if job.finished_at is not None else entry.received_at
        body = _summary_text(entry)
    record = LogRecord(
        timestamp=_nanos(timestamp),
        observed_timestamp=_nanos(entry.received_at),
        severity_text=level,
        severity_number=SEVERITIES.get(level, SeverityNumber.INFO),
        body=body,
        attributes=attributes,
    )
    return ReadableLogRecord(record, resource=resource, instrumentation_scope=SCOPE)


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
    """What an OTLP receiver said was wrong: a protobuf ``google.rpc.Status`` (Loki) or text."""
    body = response.content[:65536]
    if "protobuf" in response.headers.get("Content-Type", ""):
        status = Status()
        try:
            status.ParseFromString(body)
        except DecodeError:
            pass
        else:
            return str(status.message)[:500]
    return body.decode("utf-8", "replace").strip()[:500]


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

    MIN_BACKOFF: Final = 0.5
    MAX_BACKOFF: Final = 30.0
    IDLE_POLL: Final = 0.5

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        exporter: Exporter | None = None,
        clock: Clock = system_clock,
        lock: DirectoryLock | None = None,
    ) -> None:
        self._store = store
        self._config = config
        self._exporter = exporter or Exporter(config)
        self._clock = clock
        super().__init__(lock or DirectoryLock(config.data_path, LOCK_FILENAME))
        self._resources: dict[str, Resource] = {}
        self._backoff = 0.0
        self._healthy = False  # no export has got through yet

    # ---------------------------------------------------------------- one step

    def ship_once(self) -> float:
        """Ship one batch if one is waiting; returns how long to wait before the next step."""
        # Until an export gets through (at start, and after a failure) only the oldest record goes
        # out: an outage then costs one small request per backoff period, not a batch encoded again
        # and again while ingestion needs the CPU.
        entries = self._store.outbox_read(self._config.otlp_batch_size if self._healthy else 1)
        if not entries:
            return self.IDLE_POLL
        oldest = self._clock() - self._config.log_max_age_seconds
        dead: list[tuple[OutboxEntry, str]] = []
        send: list[OutboxEntry] = []
        for entry in entries:
            line = entry.line
            debug = line is not None and line.level.upper() == "DEBUG"
            if debug and not self._config.ships_debug(entry.job.connection_name):
                continue  # DEBUG lines of connections not in debug mode stay local
            moment = _moment(entry)
            if moment < oldest:
                dead.append((entry, f"older than log_max_age_seconds ({self._config.log_max_age_seconds:g} s)"))
            else:
                send.append(entry)
        exported, refused, attempt = self._ship(send)
        if attempt is not None and not attempt.ok and not attempt.refused:
            self._healthy = False
            self._store.outbox_failed(len(send))
            self._backoff = min(self.MAX_BACKOFF, max(self.MIN_BACKOFF, self._backoff * 2))
            wait = max(self._backoff, attempt.retry_after or 0.0)
            log.warning(
                "log export failed (HTTP %s); %d records wait, retrying in %.1f s", attempt.status, len(send), wait
            )
            return wait
        self._backoff = 0.0
        self._healthy = (attempt is not None and attempt.ok) or self._healthy
        dead += [(entry, _refusal(attempt)) for entry, attempt in refused]
        self._store.outbox_done(entries[-1].id, exported=exported, dead=dead)
        return 0.0

    def _ship(self, entries: Sequence[OutboxEntry]) -> tuple[int, list[tuple[OutboxEntry, Attempt]], Attempt | None]:
        """Export ``entries``, splitting refused batches; a transient failure stops everything."""
        if not entries:
            return 0, [], None
        attempt = self._exporter.export([to_log_record(e, self._resource(e.job.connection_name)) for e in entries])
        if attempt.ok:
            return len(entries), [], attempt
        if not attempt.refused:
            return 0, [], attempt
        if len(entries) == 1:
            return 0, [(entries[0], attempt)], attempt
        middle = len(entries) // 2
        exported, refused = 0, []
        for half in (entries[:middle], entries[middle:]):
            n, bad, last = self._ship(half)
            if last is not None and not last.ok and not last.refused:
                return 0, [], last  # transient: the whole batch is tried again later
            exported += n
            refused += bad
        return exported, refused, Attempt(True, attempt.status)

    def _resource(self, connection: str) -> Resource:
        resource = self._resources.get(connection)
        if resource is None:
            resource = self._resources[connection] = resource_for(self._config, connection)
        return resource

    # ---------------------------------------------------------------- the thread

    ERROR_WAIT = MAX_BACKOFF

    def step(self) -> float:
        try:
            return self.ship_once()
        except StoreError as error:
            log.error("log shipper cannot read the store: %s", error)
            return self.MAX_BACKOFF

    def close(self) -> None:
        self._exporter.shutdown()


def _refusal(attempt: Attempt) -> str:
    if not attempt.sent:
        return "could not be sent (larger than the exporter's request limit)"
    reason = f"refused by the receiver (HTTP {attempt.status})"
    return f"{reason}: {attempt.message}" if attempt.message else reason


def _moment(entry: OutboxEntry) -> float:
    line = entry.line
    if line is not None and line.timestamp is not None:
        return line.timestamp
    if line is None and entry.job.finished_at is not None:
        return entry.job.finished_at
    return entry.received_at
