"""The rules of ingestion as one pure function: the stored state and a batch in, a plan out.

A record is merged into the stored job (:func:`~.lifecycle.merge`), the
connection and stream aggregates take the change (:mod:`.aggregates`), and the
change is queued for whoever follows it: the log shipper's outbox, the webhook
endpoints whose filters it passes, an S3 batch to upload again. The planner
decides all of that without a database: it reads the state through
:class:`State` (the store answers from what it read ahead; a test from a few
dicts) and returns a frozen :class:`Plan` that the store applies in one
transaction, so a crash never leaves a counter or a queue that disagrees with
the jobs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Final, NotRequired, Protocol, Required, TypedDict

from .aggregates import ConnectionAgg, StreamAgg, apply_finished, apply_finished_streams, update_connection_metadata
from .detection import LEARN_JOBS, learn_schedule, learn_volume
from .documents import status_event, status_event_id
from .joblogs import LogLine
from .lifecycle import ACCEPTED, OUTCOMES, REJECTED, merge
from .logsignals import classify_error, rate_limit_ratio, stream_result
from .model import (
    ACTIVE_STATUSES,
    FAILED,
    MAX_STREAMS,
    OVERFLOW,
    PENDING,
    RESET,
    SUCCEEDED,
    Job,
    StreamResult,
    ValidationError,
    check_stream_count,
)

_POSITION: Final = re.compile(r"\[\d+\]")
_LINE: Final = re.compile(r"^line \d+\.?")


class NewConnectionRefused(ValidationError):
    """A record would make one more connection known than its ingest token may this hour.

    ``limits.new_connections_per_hour``: one request (or one leaked token) cannot take
    every place of the series budget with made-up names. ``retry_after``: seconds
    until the next clock hour, when the token may make connections known again.
    """

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            "connection_name",
            f"is a new connection, and this ingest token already made {limit} known this hour "
            f"(limits.new_connections_per_hour); retry in {retry_after} s",
        )
        self.retry_after = retry_after


class Limits(Protocol):
    """The series budget the planner admits connections and streams by (``SeriesLimits``)."""

    @property
    def max_connections(self) -> int: ...
    @property
    def max_streams_per_connection(self) -> int: ...
    @property
    def new_connections_per_hour(self) -> int: ...


class Route(Protocol):
    """A webhook endpoint's filters (``EventRoute``)."""

    @property
    def endpoint(self) -> str: ...
    def wants(self, job: Job) -> bool: ...


#: A successful job as the learning of a connection's usual schedule and volume reads it: (finished_at,
#: records_synced). A plain pair, so that reading a connection's fifty makes no object per job.
Success = tuple[float, int | None]


class State(Protocol):
    """What the planner reads of the store as it stood before the batch; none of it changes while planning."""

    def job(self, job_id: str) -> Job | None:
        """The stored job, with its streams."""
        ...

    def connection(self, name: str) -> ConnectionAgg | None:
        """The connection's stored aggregate: a new one at each call, the caller's to change."""
        ...

    def overflow(self) -> ConnectionAgg | None:
        """The stored counters of the connections beyond the budget, added up: a new aggregate at each call."""
        ...

    def stream(self, connection: str, stream: str) -> StreamAgg | None:
        """The stream's stored aggregate (``stream`` may be ``__overflow__``): a new one at each call."""
        ...

    def own_streams(self, connection: str) -> int:
        """How many of the connection's streams have series of their own."""
        ...

    def admitted_connections(self) -> int:
        """How many connections have series of their own."""
        ...

    def connections_made(self, token: str, hour: int) -> int:
        """How many connections the token made known in that clock hour (``now // 3600``)."""
        ...

    def forgotten_at(self, connection: str) -> float | None:
        """When the connection was last forgotten; None: never."""
        ...

    def failures_after(self, connection: str, moment: float) -> int:
        """The connection's stored failed jobs that finished after ``moment``."""
        ...

    def lines(self, job_id: str) -> Sequence[tuple[str, str, str | None]]:
        """The job's stored log lines as (level, message, stream), in the order received."""
        ...

    def successes(self, connections: Sequence[str], limit: int) -> Mapping[str, Sequence[Success]]:
        """Each connection's newest successful jobs that are not resets, as learned from before: at most
        ``limit``, any order."""
        ...


class RequestOptions(TypedDict, total=False):
    """How a request's records came: the ingest endpoint, what validation refused before them, who sent them."""

    endpoint: Required[str]
    rejected: NotRequired[int]  # records validation refused: counted with the others
    rejected_fields: NotRequired[Sequence[str]]  # the field each refused record's error names
    # Who sent them: the connections they make known count against it. None: a source the operator
    # configured (a poller), which new_connections_per_hour does not limit.
    token: NotRequired[str | None]
    notice: NotRequired[tuple[str, str]]  # a source's delivery they came in, (source, kind): counted with them


@dataclass(frozen=True, slots=True)
class JobsRequest:
    """One request's job records, and the records validation refused before them."""

    jobs: Sequence[Job]
    endpoint: str
    rejected: int = 0
    rejected_fields: Sequence[str] = ()
    token: str | None = ""  # a digest of the ingest token ("" on an exporter without tokens); None: a poller
    notice: tuple[str, str] | None = None  # the source's delivery they came in: (source, kind)


@dataclass(frozen=True, slots=True)
class Refusals:
    """What happened to each record of one request, in order; ``errors`` by place, for the ``rejected`` ones."""

    outcomes: tuple[str, ...]
    errors: Mapping[int, ValidationError]


@dataclass(frozen=True, slots=True)
class JobWrite:
    """A job to store, with the row's columns the job alone does not give."""

    job: Job
    active_since: float | None  # when a pending job was queued or a running job started
    job_time: float  # its place in listings; the row keeps the one it was first stored with


@dataclass(frozen=True, slots=True)
class Event:
    """A status change queued for one webhook endpoint."""

    endpoint: str
    job_id: str
    event_id: str
    payload: str  # the JSON body, fixed now


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The latest rate-limit usage a connection's lines report."""

    connection: str
    ratio: float
    seen_at: float


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one write changes, to be applied in one transaction.

    ``jobs`` are in the order the rules saved them; a job saved twice (named
    twice in a batch) appears twice, the later one wins. Counter maps hold what
    to add; ``admitted_connections`` what to set (None: unchanged).
    """

    now: float
    requests: tuple[Refusals, ...] = ()
    jobs: tuple[JobWrite, ...] = ()
    new_jobs: int = 0
    connections: tuple[ConnectionAgg, ...] = ()
    admitted_connections: int | None = None
    overflow: ConnectionAgg | None = None
    overflow_connection_jobs: int = 0  # jobs of connections beyond the budget, first seen now
    overflow_stream_jobs: int = 0  # jobs finished now with a stream beyond its connection's budget
    streams: tuple[StreamAgg, ...] = ()
    levels: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # series -> level -> lines
    errors: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # series -> error kind -> count
    connections_made: Mapping[tuple[str, int], int] = field(default_factory=dict)  # (token, hour) -> made
    ingest_counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # endpoint -> outcome -> records
    rejections: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # endpoint -> field -> records
    notices: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (source, kind) -> deliveries
    events: tuple[Event, ...] = ()
    outbox: tuple[tuple[str, int | None], ...] = ()  # (job id, line id; None: the job's summary)
    exports: tuple[str, ...] = ()  # jobs whose sealed export batch is uploaded again
    rate_limit: RateLimit | None = None
    # Connection -> its newest successes as learned now (what the next plan's State.successes gives).
    windows: Mapping[str, tuple[Success, ...]] = field(default_factory=dict)


def active_since(job: Job, now: float) -> float | None:
    """When a pending job was queued, or a running job started."""
    if job.status == PENDING:
        return job.created_at if job.created_at is not None else now
    if job.status in ACTIVE_STATUSES:
        return job.started_at if job.started_at is not None else now
    return None


def rejection_counts(fields: Sequence[str]) -> dict[str, int]:
    """Refused records by the field their error names, positions removed.

    >>> rejection_counts(["streams[3].name", "streams[0].name", "line 2. status", ""])
    {'streams[].name': 2, ' status': 1, 'record': 1}
    """
    counts: dict[str, int] = {}
    for name in fields:
        key = _POSITION.sub("[]", _LINE.sub("", name)) or "record"
        counts[key] = counts.get(key, 0) + 1
    return counts


def plan_jobs(
    state: State,
    requests: Sequence[JobsRequest],
    *,
    now: float,
    limits: Limits,
    outbox: bool,
    routes: Sequence[Route],
) -> Plan:
    """The requests' records applied in order, as one batch; one refused record leaves the others stored."""
    planner = _Planner(state, now, limits, outbox, routes)
    refusals = []
    for request in requests:
        planner.token = request.token
        outcomes: list[str] = []
        errors: dict[int, ValidationError] = {}
        for index, job in enumerate(request.jobs):
            try:
                outcomes.append(planner.apply(job))
            except ValidationError as error:  # raised before the record changed anything
                outcomes.append(REJECTED)
                errors[index] = error
        refusals.append(Refusals(tuple(outcomes), errors))
        counts = planner.ingest_counts.setdefault(request.endpoint, dict.fromkeys(OUTCOMES, 0))
        for outcome in outcomes:
            counts[outcome] += 1
        counts[REJECTED] += request.rejected
        refused = rejection_counts([*request.rejected_fields, *(error.field for error in errors.values())])
        into = planner.rejections.setdefault(request.endpoint, {})
        for name, n in refused.items():
            into[name] = into.get(name, 0) + n
        if request.notice is not None:
            planner.notices[request.notice] = planner.notices.get(request.notice, 0) + 1
    return planner.plan(tuple(refusals))


def plan_logs(
    state: State,
    job_id: str,
    lines: Sequence[tuple[int, LogLine]],
    *,
    unchanged: int,
    now: float,
    limits: Limits,
    outbox: bool,
    routes: Sequence[Route],
) -> Plan:
    """What a stored job's new log lines change; ``lines`` as (stored id, line), ``unchanged``: lines stored before."""
    job = state.job(job_id)
    assert job is not None, "the store refuses lines of a job it does not hold"
    planner = _Planner(state, now, limits, outbox, routes)
    planner.token = None  # log lines make no connection known against a token
    connection = job.connection_name
    levels: dict[str, int] = {}
    errors: dict[str, int] = {}
    rate_limit: tuple[float, float] | None = None
    for line_id, line in lines:
        if outbox:
            planner.outbox.append((job_id, line_id))
        level = line.level.lower()
        levels[level] = levels.get(level, 0) + 1
        if level == "error":
            kind = classify_error(line.message)
            errors[kind] = errors.get(kind, 0) + 1
        ratio = rate_limit_ratio(line.message) if level != "debug" else None
        if ratio is not None:
            seen_at = line.timestamp if line.timestamp is not None else now
            if rate_limit is None or seen_at >= rate_limit[1]:
                rate_limit = (ratio, seen_at)
    counted = not planner.from_before_forget(job)  # lines of a job from before a forget: stored, not counted
    admitted = counted and planner.connection(connection).admitted
    if counted:
        series = connection if admitted else OVERFLOW
        planner.add_counts(planner.levels, series, levels)
        planner.add_counts(planner.errors, series, errors)
    if rate_limit is not None and admitted:
        planner.rate_limit = RateLimit(connection, *rate_limit)
    if lines and job.finished:
        planner.exports.append(job_id)  # an exported batch holding the job is uploaded again
        if not job.streams:
            # Lines that arrive after a job finished without streams may still report them.
            with suppress(ValidationError):  # the lines' stream results would break a bound: left out
                planner.apply(Job(job_id=job_id, connection_name=connection, status=job.status))
    planner.ingest_counts["logs"] = {"accepted": len(lines), "unchanged": unchanged}
    return planner.plan(())


class _Planner:
    """The working state of one plan: the aggregates it changes and the jobs as saved so far.

    The aggregates are the plan's own: the state gives a new one at each call.
    """

    def __init__(self, state: State, now: float, limits: Limits, outbox: bool, routes: Sequence[Route]) -> None:
        self.state = state
        self.now = now
        self.limits = limits
        self.with_outbox = outbox
        self.routes = tuple(routes)
        self.token: str | None = None
        self.jobs: dict[str, Job] = {}  # as saved by this plan
        self.writes: list[JobWrite] = []
        self.new_jobs = 0
        self.connections: dict[str, ConnectionAgg] = {}
        self.admitted: int | None = None
        self.overflow: ConnectionAgg | None = None
        self.overflow_connection_jobs = 0
        self.overflow_stream_jobs = 0
        self.streams: dict[tuple[str, str], StreamAgg] = {}
        self.own_streams: dict[str, int] = {}
        self.levels: dict[str, dict[str, int]] = {}
        self.errors: dict[str, dict[str, int]] = {}
        self.made: dict[tuple[str, int], int] = {}
        self.ingest_counts: dict[str, dict[str, int]] = {}
        self.rejections: dict[str, dict[str, int]] = {}
        self.notices: dict[tuple[str, str], int] = {}
        self.events: list[Event] = []
        self.outbox: list[tuple[str, int | None]] = []
        self.exports: list[str] = []
        self.rate_limit: RateLimit | None = None
        self.successes: dict[str, dict[str, Success]] = {}  # connection -> job id -> a success this plan made

    def plan(self, requests: tuple[Refusals, ...]) -> Plan:
        windows: dict[str, tuple[Success, ...]] = {}
        if self.successes:
            stored = self.state.successes(list(self.successes), LEARN_JOBS)
            for name, made in self.successes.items():
                windows[name] = learn(self.connections[name], [*stored.get(name, ()), *made.values()])
        return Plan(
            now=self.now,
            requests=requests,
            jobs=tuple(self.writes),
            new_jobs=self.new_jobs,
            connections=tuple(self.connections.values()),
            admitted_connections=self.admitted,
            overflow=self.overflow,
            overflow_connection_jobs=self.overflow_connection_jobs,
            overflow_stream_jobs=self.overflow_stream_jobs,
            streams=tuple(self.streams.values()),
            levels=self.levels,
            errors=self.errors,
            connections_made=self.made,
            ingest_counts=self.ingest_counts,
            rejections=self.rejections,
            notices=self.notices,
            events=tuple(self.events),
            outbox=tuple(self.outbox),
            exports=tuple(self.exports),
            rate_limit=self.rate_limit,
            windows=windows,
        )

    def job(self, job_id: str) -> Job | None:
        return self.jobs[job_id] if job_id in self.jobs else self.state.job(job_id)

    def apply(self, job: Job) -> str:
        """Merge one record into the plan and its aggregates; returns the outcome.

        Raises ValidationError, having changed nothing, when the merged job
        would break a bound a record alone cannot (streams, totals), or would
        make one connection more known than the token may.
        """
        existing = self.job(job.job_id)
        if job.finished and not job.streams and (existing is None or not existing.streams):
            job = self.with_streams_from_lines(job)
        outcome, merged = merge(existing, job, self.now)
        if outcome != ACCEPTED:
            return outcome
        if existing is None or len(merged.streams) > len(existing.streams):
            check_stream_count(merged)
        name = merged.connection_name
        # A job from before its connection was forgotten is stored, not counted.
        agg = None if self.from_before_forget(merged) else self.connection(name)
        self.save(merged, is_new=existing is None)
        if existing is None or existing.status != merged.status:
            self.queue_events(merged, None if existing is None else existing.status)
        elif existing.finished:
            self.exports.append(merged.job_id)
        newly_finished = merged.finished and (existing is None or not existing.finished)
        if self.with_outbox and newly_finished:
            self.outbox.append((merged.job_id, None))
        if agg is None:
            return outcome
        if job.connection_name == name:
            update_connection_metadata(agg, job)
        if existing is None and not agg.admitted:
            self.overflow_connection_jobs += 1
        if merged.finished:
            apply_finished(agg, existing, merged, failures_after=lambda moment: self.failures_after(name, moment))
            if newly_finished and agg.admitted and merged.status == SUCCEEDED and merged.job_type != RESET:
                assert merged.finished_at is not None
                made = self.successes.setdefault(name, {})
                made[merged.job_id] = (merged.finished_at, merged.records_synced)
            if not agg.admitted:  # the same change to the added-up counters; its gauges are not shown
                apply_finished(self.overflow_agg(), existing, merged, failures_after=lambda _moment: 0)
            series = name if agg.admitted else OVERFLOW
            if _new_failure_summary(existing, merged):
                self.add_counts(self.errors, series, {classify_error(merged.error_summary or ""): 1})
            if merged.streams:
                if agg.admitted:
                    streams, folded = self.stream_aggs(name, [s.name for s in merged.streams])
                    if folded and newly_finished:
                        self.overflow_stream_jobs += 1
                else:
                    overflow = self.stream_agg(OVERFLOW, OVERFLOW)
                    streams = {s.name: overflow for s in merged.streams}
                apply_finished_streams(streams, existing, merged)
        return outcome

    def save(self, job: Job, *, is_new: bool) -> None:
        self.jobs[job.job_id] = job  # a record naming it again merges into this
        self.new_jobs += is_new
        # job_time, the job's place in listings, is set once (queued, else started, else finished).
        job_time = next((t for t in (job.created_at, job.started_at, job.finished_at) if t is not None), self.now)
        self.writes.append(JobWrite(job, active_since(job, self.now), job_time))

    def with_streams_from_lines(self, job: Job) -> Job:
        """A finished job without streams, given the stream results its log lines report.

        ``Stream X: N records synced in Ts`` makes X succeeded with N rows; an
        ERROR line about stream X makes it failed; the later line wins.
        """
        results: dict[str, StreamResult] = {}
        for level, message, stream in self.state.lines(job.job_id):
            line = stream_result(message)
            if line is not None:
                results[line.stream] = StreamResult(
                    line.stream, SUCCEEDED, records_synced=line.records_synced, duration_seconds=line.duration_seconds
                )
            elif level.upper() == "ERROR" and stream:
                results[stream] = StreamResult(stream, FAILED, error=message)
        if not results:
            return job
        try:
            return replace(job, streams=tuple(results.values())[:MAX_STREAMS]).with_derived_fields()
        except ValidationError:  # the lines' counts add up past the bound: the record stands without them
            return job

    def queue_events(self, job: Job, previous: str | None) -> None:
        """Queue the status change for every webhook endpoint whose filters it passes."""
        routes = [route for route in self.routes if route.wants(job)]
        if not routes:
            return
        event_id = status_event_id(job.job_id, job.status)
        payload = json.dumps(status_event(job, previous, event_id, self.now), ensure_ascii=False)
        self.events += [Event(route.endpoint, job.job_id, event_id, payload) for route in routes]

    def from_before_forget(self, job: Job) -> bool:
        """Whether ``job`` began before its connection was last forgotten.

        Such a job (a late record, or one still running at the forget) belongs to
        what was forgotten: it is stored and listed, but not counted into the
        aggregates the connection has made since.
        """
        forgotten_at = self.state.forgotten_at(job.connection_name)
        times = [t for t in (job.created_at, job.started_at, job.finished_at) if t is not None]
        return forgotten_at is not None and bool(times) and min(times) < forgotten_at

    def connection(self, name: str) -> ConnectionAgg:
        """The connection's aggregate; a new connection gets series of its own while the budget lasts."""
        agg = self.connections.get(name)
        if agg is None:
            stored = self.state.connection(name)
            if stored is None:
                self.count_new_connection()
                if self.admitted is None:
                    self.admitted = self.state.admitted_connections()
                admitted = self.admitted < self.limits.max_connections
                self.admitted += admitted
                agg = ConnectionAgg(connection=name, first_seen=self.now, admitted=admitted)
            else:
                agg = stored
            self.connections[name] = agg
        return agg

    def count_new_connection(self) -> None:
        """Count a connection made known by :attr:`token`; refuse it past ``new_connections_per_hour``."""
        limit = self.limits.new_connections_per_hour
        if not limit or self.token is None:
            return
        hour = int(self.now // 3600)
        made = self.made.get((self.token, hour), 0)
        if self.state.connections_made(self.token, hour) + made >= limit:
            raise NewConnectionRefused(limit, retry_after=3600 * (hour + 1) - int(self.now))
        self.made[(self.token, hour)] = made + 1

    def overflow_agg(self) -> ConnectionAgg:
        """The added-up counters of the connections beyond the budget."""
        if self.overflow is None:
            stored = self.state.overflow()
            self.overflow = ConnectionAgg(OVERFLOW, self.now) if stored is None else stored
        return self.overflow

    def stream_agg(self, connection: str, stream: str) -> StreamAgg:
        """The stream's aggregate as this plan changed it, or a new one."""
        pair = (connection, stream)
        if pair not in self.streams:
            stored = self.state.stream(connection, stream)
            self.streams[pair] = StreamAgg(connection, stream) if stored is None else stored
        return self.streams[pair]

    def stream_aggs(self, connection: str, names: Sequence[str]) -> tuple[dict[str, StreamAgg], bool]:
        """Each stream's aggregate, and whether any of them is folded into ``stream="__overflow__"``.

        A stream gets a series of its own while its connection has fewer than
        ``max_streams_per_connection``; a later one counts into the connection's overflow stream.
        """
        out: dict[str, StreamAgg] = {}
        folded = False
        for name in names:
            pair = (connection, name)
            if pair not in self.streams and (stored := self.state.stream(connection, name)) is not None:
                self.streams[pair] = stored
            if pair in self.streams:
                out[name] = self.streams[pair]
                continue
            if connection not in self.own_streams:
                self.own_streams[connection] = self.state.own_streams(connection)
            if self.own_streams[connection] < self.limits.max_streams_per_connection:
                self.own_streams[connection] += 1
                out[name] = self.stream_agg(connection, name)
            else:
                out[name], folded = self.stream_agg(connection, OVERFLOW), True
        return out, folded

    def failures_after(self, connection: str, moment: float) -> int:
        """The connection's failed jobs finished after ``moment``: those stored, and those this plan failed."""
        planned = 0
        for job in self.jobs.values():
            if job.connection_name == connection and job.status == FAILED and job.finished_at is not None:
                stored = self.state.job(job.job_id)
                planned += job.finished_at > moment and (stored is None or stored.status != FAILED)
        return self.state.failures_after(connection, moment) + planned

    @staticmethod
    def add_counts(into: dict[str, dict[str, int]], series: str, counts: Mapping[str, int]) -> None:
        if not counts:
            return
        target = into.setdefault(series, {})
        for key, n in counts.items():
            target[key] = target.get(key, 0) + n


def learn(agg: ConnectionAgg, successes: Sequence[Success]) -> tuple[Success, ...]:
    """Learn the connection's usual schedule and volume again from its successes; the newest of them, kept.

    Once per connection and plan, whatever the number of its jobs in the batch.
    """
    newest = tuple(sorted(successes, key=_finished_at)[-LEARN_JOBS:])
    schedule = learn_schedule([finished_at for finished_at, _ in newest])
    agg.interval_seconds = None if schedule is None else schedule.median
    agg.interval_spread_seconds = None if schedule is None else schedule.spread
    # The newest success is judged against the ones before it, never against itself.
    volume = learn_volume([records for _, records in newest[:-1] if records is not None])
    agg.last_success_records = newest[-1][1]
    agg.records_expected = None if volume is None else volume.median
    agg.records_spread = None if volume is None else volume.spread
    return newest


def _finished_at(success: Success) -> float:
    return success[0]


def _new_failure_summary(old: Job | None, new: Job) -> bool:
    """Whether ``new`` makes a failed job's error summary known for the first time."""
    if new.status != FAILED or not new.error_summary:
        return False
    return old is None or old.status != FAILED or not old.error_summary
