"""Shipping job logs to Loki over OTLP/HTTP, durably.

Ingestion only writes lines (and finished jobs' summaries) to the store's
outbox and returns; this shipper, one per data directory whatever the number
of worker processes, reads the outbox in order, POSTs each batch encoded by
the OpenTelemetry SDK (OTLP/HTTP, protobuf), and moves the outbox cursor only
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

Requests are bounded in bytes (``otlp_max_request_bytes``, under Loki's 4 MiB
gRPC limit): a connection's records that do not fit in one request wait for
the next step, and meanwhile the records of other connections queued behind
them are read past them and shipped, so one connection's backlog never holds
up the others. A request the receiver finds too large anyway (HTTP 413, or a
5xx saying ``ResourceExhausted`` / "larger than max") is split in halves.

A record refused for good is narrowed down by splitting the request in halves
until it is alone; it goes to the dead letters with the receiver's reason, the
rest is shipped. Only refusals the receiver explains are for good: Loki's 400
naming why (too old, too far behind, line too long, invalid). Any other 4xx
(a proxy's 400, 401, 403, 404) is retried like an outage for
``log_refused_retry_seconds``, then treated as a refusal. Loki answers 400 for a
whole request when it rejects some of its lines while storing the others;
re-sending the stored ones does not duplicate them, as Loki drops an entry
identical to one it has (same stream, time and text). A 2xx answer whose OTLP
``partial_success`` counts rejected records is narrowed down the same way, the
receiver's ``error_message`` as the reason. Lines older than
``log_max_age_seconds``, which Loki would refuse as too old
(``reject_old_samples_max_age``), are dead-lettered before sending so that a
backfill does not hold up the outbox. Dead letters go back to the outbox with
``calabi-exporter redrive-dead-letters`` or ``POST /api/v1/logs/dead-letters/redrive``.

Every request, answer included, is bounded by ``otlp_timeout_seconds`` in all
and reads at most 64 KiB of the answer (:mod:`.bounded_http`).
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeAlias

import requests
from google.protobuf.json_format import Parse, ParseError
from google.protobuf.message import DecodeError
from google.rpc.status_pb2 import Status
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from . import __version__
from .backoff import Backoff
from .bounded_http import Answer, bounded_session, post
from .config import Config
from .documents import summary_attributes
from .joblogs import LEVELS
from .model import CANCELLED, FAILED, SUCCEEDED
from .redact import redact
from .refusal import CUTOFF_RESOLUTION, Refusal, read_refusal
from .singleton import SingletonWorker
from .store import OutboxEntry, Store, StoreError
from .store.database import RoleLock
from .store.records import SHIPPER_ROLE
from .timeutil import Clock, format_rfc3339, retry_after_seconds, system_clock

#: A record and the time (ns) it goes at in its stream; None: its own time.
_Placed: TypeAlias = tuple[OutboxEntry, int | None]

log = logging.getLogger(__name__)

#: OpenTelemetry names its severities as the product names its levels.
SEVERITIES: Final = {level: SeverityNumber[level] for level in LEVELS}
SUMMARY_SEVERITY: Final = {SUCCEEDED: "INFO", CANCELLED: "WARN", FAILED: "ERROR"}
SCOPE: Final = InstrumentationScope("calabi_exporter", __version__)
MAX_REASON: Final = 500  # characters of the receiver's message kept with a dead letter
#: Times a record refused for its place in the stream is sent again later before it is dead-lettered.
MAX_RETIMES: Final = 3
#: Records older than this part of Loki's out-of-order window are sent at that age: the stream's
#: newest entry may be a little ahead of this clock (another job's lines, clock skew).
LATE_FRACTION: Final = 5 / 6
#: Room left in a request for what the estimate of each record's size leaves out (resource, scope).
REQUEST_OVERHEAD: Final = 4096
#: 4xx answers that mean "later", never "never".
BUSY_4XX: Final = frozenset({408, 429})
#: Why Loki refuses an entry for good (or for its place in the stream), as its 400 answers word it
#: (pkg/validation and the ingester): too old or too new, too far behind, too long, invalid.
EXPLAINED: Final = re.compile(
    r"entry too far behind|entry out of order|timestamp too (?:old|new)|greater_than_max_sample_age"
    r"|too_far_in_future|line too long|line_too_long|max entry size|structured metadata|invalid|error parsing"
    r"|no labels|missing labels|duplicate label",
    re.IGNORECASE,
)
#: A request larger than the receiver takes: Loki's distributor forwards it over gRPC, whose 4 MiB
#: limit answers 503 "grpc: received message larger than max" (code ResourceExhausted).
TOO_LARGE: Final = re.compile(r"larger than max|ResourceExhausted|message too large", re.IGNORECASE)
SIZE_REFUSAL: Final = re.compile(r"larger than max|message too large", re.IGNORECASE)


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
        attributes.update(summary_attributes(job))
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


def _error_message(answer: Answer) -> str:
    """What an OTLP receiver said was wrong: a protobuf ``google.rpc.Status`` (Loki) or text.

    Loki sends its Status as ``application/octet-stream``; the shipper reads which
    records were refused from it.
    """
    content_type = answer.headers.get("Content-Type", "")
    if "protobuf" in content_type or "octet-stream" in content_type:
        status = Status()
        try:
            status.ParseFromString(answer.body)
        except DecodeError:
            pass
        else:
            if status.message:
                return str(status.message)
    return answer.text()


def _partial_success(answer: Answer) -> tuple[int, str]:
    """Records a 2xx answer says were rejected, and why: OTLP's ``partial_success`` (protobuf or JSON)."""
    if not answer.body or answer.truncated:
        return 0, ""
    response = ExportLogsServiceResponse()
    try:
        if "json" in answer.headers.get("Content-Type", ""):
            Parse(answer.body, response, ignore_unknown_fields=True)
        else:
            response.ParseFromString(answer.body)
    except (DecodeError, ParseError, ValueError):
        return 0, ""
    partial = response.partial_success
    return max(int(partial.rejected_log_records), 0), str(partial.error_message)


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one export went."""

    ok: bool
    status: int | None = None
    retry_after: float | None = None
    message: str = ""
    rejected: int = 0  # records a 2xx answer says the receiver rejected (OTLP partial success)

    @property
    def too_large(self) -> bool:
        """The receiver could not take a request this large: smaller ones may go through."""
        status = self.status or 0
        return status == 413 or (status >= 500 and TOO_LARGE.search(self.message) is not None)

    @property
    def size_refusal(self) -> bool:
        """The receiver said the request was too large in so many words (not only ``ResourceExhausted``)."""
        return self.status == 413 or (self.too_large and SIZE_REFUSAL.search(self.message) is not None)

    @property
    def refusal(self) -> bool:
        """A 4xx that is not "busy": the receiver (or a proxy before it) will not take these records as they are."""
        status = self.status or 0
        return 400 <= status < 500 and status not in BUSY_4XX and status != 413

    @property
    def explained(self) -> bool:
        """A refusal that says why in Loki's words: final, sending again gets the same answer."""
        return self.refusal and EXPLAINED.search(self.message) is not None


class Exporter:
    """POSTs encoded OTLP log requests, bounded in time and in what is read of the answer."""

    def __init__(self, config: Config, *, session: requests.Session | None = None) -> None:
        self._session = session or bounded_session()
        self._url = config.otlp_logs_endpoint
        self._timeout = config.otlp_timeout_seconds
        self._headers = {
            **dict(config.otlp_headers),
            "Content-Type": "application/x-protobuf",
            "User-Agent": f"calabi-exporter/{__version__}",
        }

    @staticmethod
    def encode(records: Sequence[ReadableLogRecord]) -> bytes:
        """The request body of ``records``: an OTLP ``ExportLogsServiceRequest``."""
        data: bytes = encode_logs(records).SerializeToString()
        return data

    def export(self, data: bytes) -> Attempt:
        """Send one encoded request; the answer read, never raised."""
        try:
            answer = post(self._session, self._url, data=data, headers=self._headers, timeout=self._timeout)
        except requests.RequestException as error:
            return Attempt(False, message=redact(f"{type(error).__name__}: {error}")[:MAX_REASON])
        if 200 <= answer.status < 300:
            rejected, why = _partial_success(answer)
            return Attempt(True, answer.status, rejected=rejected, message=why)
        retry_after = retry_after_seconds(answer.headers.get("Retry-After"), system_clock())
        return Attempt(False, answer.status, retry_after, _error_message(answer))

    def shutdown(self) -> None:
        self._session.close()


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
        self._refused_since: float | None = None  # unexplained 4xx answers since then, none got through since
        self._retimed_until = 0  # the last time (ns) a record was sent at instead of its own
        self._placed: dict[int, int] = {}  # outbox id -> the time (ns) it went at, for records not yet done

    # ---------------------------------------------------------------- one step

    def ship_once(self) -> float:
        """Ship one step's records if some are waiting; returns how long to wait before the next step."""
        # Until an export gets through (at start, and after a failure) only the oldest record goes
        # out: an outage then costs one small request per backoff period, not a batch encoded again
        # and again while ingestion needs the CPU.
        limit = self._config.otlp_batch_size if self._healthy else 1
        entries = self._outbox.read(limit)
        if not entries:
            return self.IDLE_POLL
        step = _Step()
        streams = self._streams(entries, step)
        if streams.full and len(entries) == limit:
            # One connection's backlog fills the window: read past it, so that the others ship now.
            full_jobs = sorted({e.job.job_id for e in entries if e.job.connection_name in streams.full})
            self._streams(self._outbox.read(limit, after=entries[-1].id, skip_jobs=full_jobs), step, streams)
        failure: Attempt | None = None
        for connection, chunk in streams.in_turn():
            shipment = _Shipment()
            failure = self._deliver(connection, chunk, shipment)
            if failure is not None:
                step.waiting = sum(len(c) for c in streams.chunks.values()) - len(step.shipped)
                break
            step.add(chunk, shipment)
        self._commit(entries, step)
        if failure is not None:
            return self._failed(failure, step.waiting)
        self._failures = 0
        self._healthy = self._healthy or step.sent
        return 0.0

    def _streams(self, entries: Sequence[OutboxEntry], step: _Step, streams: _Streams | None = None) -> _Streams:
        """``entries`` by connection, each cut to one request's worth; the rest waits for the next step."""
        streams = streams or _Streams()
        oldest = self._clock() - self._config.log_max_age_seconds
        too_old = f"older than log_max_age_seconds ({self._config.log_max_age_seconds:g} s), which Loki refuses"
        for entry in entries:
            connection = entry.job.connection_name
            if connection in streams.full:
                continue  # its first request's worth is already chosen; the rest waits, in order
            line = entry.line
            debug = line is not None and line.level.upper() == "DEBUG"
            if debug and not self._config.ships_debug(connection):
                step.skipped.append(entry.id)  # DEBUG lines of connections not in debug mode stay local
            elif moment_of(entry) < oldest:
                step.dead.append((entry, too_old))
            else:
                streams.queued.setdefault(connection, []).append(entry)
        budget = self._config.otlp_max_request_bytes - REQUEST_OVERHEAD
        for connection, queued in list(streams.queued.items()):
            chunk = streams.chunks.setdefault(connection, [])
            queued.sort(key=shipping_order)
            size = sum(_estimated_size(e) for e in chunk)
            for taken, entry in enumerate(queued):
                size += _estimated_size(entry)
                if chunk and size > budget:
                    streams.full.add(connection)
                    del queued[:taken]
                    break
                chunk.append(entry)
            else:
                queued.clear()
        return streams

    def _commit(self, entries: Sequence[OutboxEntry], step: _Step) -> None:
        """Store what this step came to: the outbox moves past every record done, the rest waits."""
        done = step.done_ids()
        if not done:
            return
        upto = 0  # every record of the window up to here is done (the outbox cursor)
        for entry in entries:
            if entry.id not in done:
                break
            upto = entry.id
        beyond = sorted(i for i in done if i > upto)
        dead = [(entry, redact(reason)) for entry, reason in step.dead]  # a receiver may quote a credential
        self._outbox.done(upto, exported=step.exported, dead=dead, also=beyond)
        self._placed = {id_: at for id_, at in self._placed.items() if id_ > upto and id_ not in done}

    def _failed(self, failure: Attempt, waiting: int) -> float:
        self._healthy = False
        self._outbox.failed(waiting)
        self._failures += 1
        if failure.refusal and self._refused_since is None:
            self._refused_since = self._clock()
        wait = self._backoff.wait(self._failures, failure.retry_after)
        log.warning(
            "log export to %s failed (%s); %d records wait, retrying in %.1f s",
            redact(self._config.otlp_logs_endpoint),
            "no answer" if failure.status is None else f"HTTP {failure.status}",
            waiting,
            wait,
        )
        return wait

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
            failure = self._send(_Pass(resource, shipment, behind), pending)
            if failure is not None or not behind.entries:
                return failure
            if retime == MAX_RETIMES:
                shipment.dead += [(entry, _refusal(behind.attempt)) for entry in behind.entries]
                return None
            base = behind.cutoff + CUTOFF_RESOLUTION if behind.cutoff is not None else self._clock()
            pending = self._retimed(sorted(behind.entries, key=shipping_order), base, again=True)
        return None

    def _send(self, this: _Pass, pending: Sequence[_Placed]) -> Attempt | None:
        """Export ``pending``, sorting what the receiver refuses: later in time (``behind``) or never (dead)."""
        records = [to_log_record(entry, this.resource, at_ns=at) for entry, at in pending]
        data = self._exporter.encode(records)
        limit = self._config.otlp_max_request_bytes
        if len(data) > limit:
            if len(pending) == 1:
                reason = f"larger than otlp_max_request_bytes ({len(data)} > {limit} bytes encoded)"
                this.shipment.dead.append((pending[0][0], reason))
                return None
            return self._halves(this, pending)
        attempt = self._exporter.export(data)
        if attempt.ok:
            this.shipment.sent = True
            self._refused_since = None
            return self._accepted(this, pending, attempt)
        if attempt.too_large:
            this.shipment.sent = True  # the receiver answered: it is up
            if len(pending) > 1:
                return self._halves(this, pending)
            if not attempt.size_refusal:
                return attempt  # ResourceExhausted for one record: the receiver is short of something else
            this.shipment.dead.append((pending[0][0], _refusal(attempt)))
            return None
        if not (attempt.explained or (attempt.refusal and self._refusals_expired())):
            return attempt
        this.shipment.sent = True
        refusal = read_refusal(attempt.message)
        split = refusal.split([r.log_record.timestamp or 0 for r in records])
        if split is not None:  # the receiver said exactly which
            behind_end = split.unknown + split.behind
            this.behind.add([entry for entry, _ in pending[split.unknown : behind_end]], refusal, attempt)
            this.shipment.exported += len(pending) - behind_end
            # The oldest ones, dropped without a word: on their own they get an answer of their own.
            return self._send(this, pending[: split.unknown]) if split.unknown else None
        if len(pending) == 1:
            if refusal.behind:
                this.behind.add([pending[0][0]], refusal, attempt)
            else:
                this.shipment.dead.append((pending[0][0], self._refusal(attempt)))
            return None
        return self._halves(this, pending)

    def _accepted(self, this: _Pass, pending: Sequence[_Placed], attempt: Attempt) -> Attempt | None:
        """A 2xx: all exported, or (partial success) the rejected ones narrowed down and dead-lettered.

        OTLP says how many were rejected, not which: halves are sent again until each
        rejected record is alone (Loki keeps one of identical entries sent twice).
        """
        if attempt.rejected == 0:
            this.shipment.exported += len(pending)
            return None
        if attempt.rejected >= len(pending):
            reason = f"rejected by the receiver (partial success): {attempt.message}".rstrip(": ")[:MAX_REASON]
            this.shipment.dead += [(entry, reason) for entry, _ in pending]
            return None
        return self._halves(this, pending)

    def _halves(self, this: _Pass, pending: Sequence[_Placed]) -> Attempt | None:
        """Send the two halves of ``pending`` apart: narrows a refusal down to the records it concerns."""
        middle = len(pending) // 2
        for half in (pending[:middle], pending[middle:]):
            failure = self._send(this, half)
            if failure is not None:
                return failure  # transient: the whole batch is tried again later
        return None

    def _refusals_expired(self) -> bool:
        """Unexplained 4xx answers have come for longer than ``log_refused_retry_seconds``: they count as refusals."""
        since = self._refused_since
        return since is not None and self._clock() - since >= self._config.log_refused_retry_seconds

    def _refusal(self, attempt: Attempt) -> str:
        reason = _refusal(attempt)
        if attempt.explained:
            return reason
        return reason.replace(
            f"(HTTP {attempt.status})", f"(HTTP {attempt.status}, for {self._config.log_refused_retry_seconds:g} s)", 1
        )

    def _retimed(self, entries: list[OutboxEntry], base: float, *, again: bool = False) -> list[_Placed]:
        """``entries`` (oldest first) sent from ``base`` on, a nanosecond apart, in their order.

        Never earlier than the last record re-timed, so that two re-timed records never
        share a time and text (Loki would keep one of them). A record of a batch tried
        again after a failure keeps the time it was first sent at, so that Loki, which
        may have stored it then, sees the same entry and keeps one; ``again`` moves
        records Loki refused at that time.
        """
        placed: list[_Placed] = []
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


def _in_sent_order(pending: list[_Placed]) -> list[_Placed]:
    """Records by the time they are sent at: Loki's refusals are read as the oldest of a request."""
    return sorted(pending, key=lambda item: item[1] if item[1] is not None else nanos(moment_of(item[0])))


def _estimated_size(entry: OutboxEntry) -> int:
    """About the bytes ``entry`` adds to an encoded request (on the high side); what budgets a request."""
    job = entry.job
    size = 200 + len(job.job_id) + len(job.connection_name) + len(job.connection_id or "")
    line = entry.line
    if line is not None:
        return size + len(line.message.encode()) + len((line.stream or "").encode())
    return size + 1024 + 2 * len((job.error_summary or "").encode()) + len((job.job_url or "").encode())


@dataclass(slots=True)
class _Shipment:
    """What one connection's records came to."""

    exported: int = 0
    dead: list[tuple[OutboxEntry, str]] = field(default_factory=list)
    sent: bool = False  # the receiver answered at least once


@dataclass(slots=True)
class _Streams:
    """One step's records by connection: the chunk shipped now, and whose records do not all fit."""

    queued: dict[str, list[OutboxEntry]] = field(default_factory=dict)
    chunks: dict[str, list[OutboxEntry]] = field(default_factory=dict)
    full: set[str] = field(default_factory=set)

    def in_turn(self) -> Iterable[tuple[str, list[OutboxEntry]]]:
        """Connections with little waiting first: a transient failure of the large one cannot hold them up."""
        ordered = sorted(self.chunks.items(), key=lambda item: item[0] in self.full)
        return [(connection, chunk) for connection, chunk in ordered if chunk]


@dataclass(slots=True)
class _Step:
    """What one step came to, over every connection whose records were all handled."""

    exported: int = 0
    dead: list[tuple[OutboxEntry, str]] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    shipped: list[int] = field(default_factory=list)
    sent: bool = False
    waiting: int = 0

    def add(self, chunk: Sequence[OutboxEntry], shipment: _Shipment) -> None:
        self.exported += shipment.exported
        self.dead += shipment.dead
        self.shipped += [entry.id for entry in chunk]
        self.sent = self.sent or shipment.sent

    def done_ids(self) -> set[int]:
        """Outbox ids done with: shipped, dead, or not to be shipped."""
        return {*self.shipped, *self.skipped, *(entry.id for entry, _ in self.dead)}


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


class _Pass(NamedTuple):
    """One pass over a connection's records: their resource, what they came to, what waits for a later time."""

    resource: Resource
    shipment: _Shipment
    behind: _Behind


def _refusal(attempt: Attempt) -> str:
    reason = f"refused by the receiver (HTTP {attempt.status})"
    return f"{reason}: {attempt.message[:MAX_REASON]}" if attempt.message else reason
