"""The rules of ingestion without Flask or a database: stored state and a batch in, a plan out."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest
from calabi_exporter.aggregates import ConnectionAgg, Histogram, StreamAgg
from calabi_exporter.documents import status_event_id
from calabi_exporter.ingest_plan import (
    JobsRequest,
    NewConnectionRefused,
    Plan,
    RateLimit,
    Success,
    plan_jobs,
    plan_logs,
    rejection_counts,
)
from calabi_exporter.joblogs import LogLine
from calabi_exporter.model import FAILED, MAX_STREAMS, OVERFLOW, SUCCEEDED, Job, StreamResult
from calabi_exporter.store.records import EventRoute, SeriesLimits

SF = "Salesforce → Snowflake"
STRIPE = "Stripe → Postgres"
T0 = 1775462400.0  # 2026-04-06T08:00:00Z
NOW = T0 + 86400.0
HOUR = 3600.0
LIMITS = SeriesLimits()


def done(job_id: str, status: str = "succeeded", at: float = T0, connection: str = SF, **fields: object) -> Job:
    """A finished job record, as validation hands it over (derived fields filled)."""
    return Job(job_id=job_id, connection_name=connection, status=status, finished_at=at, **fields).with_derived_fields()  # type: ignore[arg-type]


def active(job_id: str, status: str = "running", connection: str = SF, **fields: object) -> Job:
    return Job(job_id=job_id, connection_name=connection, status=status, **fields)  # type: ignore[arg-type]


@dataclass
class Memory:
    """The stored state as a few dicts (protocol ``ingest_plan.State``); :meth:`apply` stores a plan."""

    jobs: dict[str, Job] = field(default_factory=dict)
    connections: dict[str, ConnectionAgg] = field(default_factory=dict)
    streams: dict[tuple[str, str], StreamAgg] = field(default_factory=dict)
    overflow_agg: ConnectionAgg | None = None
    forgotten: dict[str, float] = field(default_factory=dict)
    made: dict[tuple[str, int], int] = field(default_factory=dict)
    log_lines: dict[str, list[tuple[str, str, str | None]]] = field(default_factory=dict)
    success_reads: list[tuple[str, ...]] = field(default_factory=list)  # the connections of each successes() call

    def job(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def connection(self, name: str) -> ConnectionAgg | None:
        stored = self.connections.get(name)
        return None if stored is None else copy.deepcopy(stored)

    def overflow(self) -> ConnectionAgg | None:
        return None if self.overflow_agg is None else copy.deepcopy(self.overflow_agg)

    def stream(self, connection: str, stream: str) -> StreamAgg | None:
        stored = self.streams.get((connection, stream))
        return None if stored is None else copy.deepcopy(stored)

    def own_streams(self, connection: str) -> int:
        return sum(c == connection and s != OVERFLOW for c, s in self.streams)

    def admitted_connections(self) -> int:
        return sum(agg.admitted for agg in self.connections.values())

    def connections_made(self, token: str, hour: int) -> int:
        return self.made.get((token, hour), 0)

    def forgotten_at(self, connection: str) -> float | None:
        return self.forgotten.get(connection)

    def failures_after(self, connection: str, moment: float) -> int:
        return sum(
            job.connection_name == connection and job.status == FAILED and (job.finished_at or 0) > moment
            for job in self.jobs.values()
        )

    def lines(self, job_id: str) -> Sequence[tuple[str, str, str | None]]:
        return self.log_lines.get(job_id, [])

    def successes(self, connections: Sequence[str], limit: int) -> dict[str, list[Success]]:
        self.success_reads.append(tuple(connections))
        found: dict[str, list[Success]] = {name: [] for name in connections}
        for job in self.jobs.values():
            if job.connection_name in found and job.status == SUCCEEDED and job.job_type != "reset":
                assert job.finished_at is not None
                found[job.connection_name].append((job.finished_at, job.records_synced))
        return {name: sorted(jobs, key=lambda s: s[0])[-limit:] for name, jobs in found.items()}

    def apply(self, plan: Plan) -> Plan:
        for write in plan.jobs:
            self.jobs[write.job.job_id] = write.job
        self.connections.update((agg.connection, agg) for agg in plan.connections)
        self.streams.update(((agg.connection, agg.stream), agg) for agg in plan.streams)
        self.overflow_agg = plan.overflow or self.overflow_agg
        for key, n in plan.connections_made.items():
            self.made[key] = self.made.get(key, 0) + n
        return plan


def ingest(
    state: Memory,
    *jobs: Job,
    limits: SeriesLimits = LIMITS,
    routes: Sequence[EventRoute] = (),
    token: str = "",
    now: float = NOW,
) -> Plan:
    """One request's records planned against ``state``, and the plan stored into it."""
    request = JobsRequest(jobs, "jobs", token=token)
    return state.apply(plan_jobs(state, [request], now=now, limits=limits, outbox=True, routes=routes))


def lines_for(state: Memory, job_id: str, *lines: LogLine, first_id: int = 1) -> Plan:
    """Lines newly stored for a job (ids from ``first_id``), planned against ``state`` and stored into it."""
    stored = [(first_id + n, line) for n, line in enumerate(lines)]
    state.log_lines.setdefault(job_id, []).extend((line.level, line.message, line.stream) for line in lines)
    plan = plan_logs(state, job_id, stored, unchanged=0, now=NOW, limits=LIMITS, outbox=True, routes=())
    return state.apply(plan)


def outcomes(plan: Plan) -> tuple[str, ...]:
    return plan.requests[0].outcomes


# Merging: what a record does to the job stored before it.
@pytest.mark.parametrize(
    ("stored", "record", "outcome", "expected"),
    [
        pytest.param(
            done("j1", records_synced=100),
            active("j1", "running", started_at=T0 - 100),
            "ignored",
            done("j1", records_synced=100),
            id="a late running record of a succeeded job is ignored",
        ),
        pytest.param(
            done("j1", "failed"),
            done("j1", "succeeded", at=T0 + 300),
            "ignored",
            done("j1", "failed"),
            id="a finished job keeps its status when another final status arrives",
        ),
        pytest.param(
            done("j1", "failed", started_at=T0 - 196, error_summary="401"),
            Job(
                "j1",
                SF,
                "failed",
                streams=(StreamResult("Account", "failed", 0), StreamResult("Contact", "succeeded", 80)),
            ).with_derived_fields(),
            "accepted",
            done(
                "j1",
                "failed",
                started_at=T0 - 196,
                error_summary="401",
                streams=(StreamResult("Account", "failed", 0), StreamResult("Contact", "succeeded", 80)),
            ),
            id="a later record of a finished job fills what the earlier one did not say",
        ),
        pytest.param(
            done("j1", "failed", records_failed=7),
            done("j1", "failed", at=T0 + 60, records_failed=9, error_summary="timeout"),
            "accepted",
            done("j1", "failed", records_failed=7, error_summary="timeout"),
            id="a finished job's known values never change",
        ),
        pytest.param(
            active("j1", "running", started_at=T0, records_synced=5),
            active("j1", "running", started_at=T0, records_synced=50),
            "accepted",
            active("j1", "running", started_at=T0, records_synced=50),
            id="a running job takes the newest values it is sent",
        ),
        pytest.param(
            active("j1", "running", started_at=T0),
            done("j1", connection=STRIPE, records_synced=3),
            "accepted",
            done("j1", started_at=T0, records_synced=3),
            id="a job stays with the connection it was first seen with",
        ),
        pytest.param(
            done("j1", records_synced=3),
            done("j1", records_synced=3),
            "unchanged",
            done("j1", records_synced=3),
            id="the same record sent again changes nothing",
        ),
    ],
)
def test_merging_a_record_into_the_stored_job(stored: Job, record: Job, outcome: str, expected: Job) -> None:
    state = Memory(jobs={"j1": stored})

    plan = ingest(state, record)

    assert outcomes(plan) == (outcome,)
    assert state.jobs["j1"] == expected
    assert [write.job for write in plan.jobs] == ([expected] if outcome == "accepted" else [])


def test_records_of_one_job_out_of_order_in_one_batch_end_at_the_furthest_status() -> None:
    state = Memory()

    plan = ingest(
        state,
        active("j1", "pending", created_at=T0 - 60),
        done("j1", at=T0 + 100, records_synced=12),
        active("j1", "running", started_at=T0),
    )

    assert outcomes(plan) == ("accepted", "accepted", "ignored")
    assert state.jobs["j1"] == done("j1", at=T0 + 100, created_at=T0 - 60, records_synced=12)
    assert [(w.job.status, w.active_since, w.job_time) for w in plan.jobs] == [
        ("pending", T0 - 60, T0 - 60),
        ("succeeded", None, T0 - 60),
    ]
    assert plan.new_jobs == 1


def test_a_finished_job_without_a_finish_time_finishes_when_received() -> None:
    state = Memory()

    ingest(state, active("j1", "succeeded"))

    assert state.jobs["j1"].finished_at == NOW
    assert state.connections[SF].last_success_at == NOW


# Aggregates: what finished jobs, batch after batch, leave in their connection's aggregate.
@pytest.mark.parametrize(
    ("batches", "streaks", "last"),
    [
        pytest.param(
            [[done("f1", "failed", T0)], [done("f2", "failed", T0 + HOUR)], [done("s1", at=T0 + 2 * HOUR)]],
            [1, 2, 0],
            ("s1", "succeeded", T0 + 2 * HOUR, T0 + HOUR),
            id="consecutive failures count one two and return to zero on a success",
        ),
        pytest.param(
            [[done("f1", "failed", T0)], [done("c1", "cancelled", T0 + 1800)], [done("f2", "failed", T0 + HOUR)]],
            [1, 1, 2],
            ("f2", "failed", None, T0 + HOUR),
            id="a cancelled job neither adds to nor resets the failure streak",
        ),
        pytest.param(
            [[done("new", "failed", T0 + 2 * HOUR)], [done("old", at=T0)]],
            [1, 1],
            ("new", "failed", T0, T0 + 2 * HOUR),
            id="a late record of an older job is counted but does not become the latest",
        ),
        pytest.param(
            [
                [done("f1", "failed", T0), done("f2", "failed", T0 + HOUR)],
                [done("f3", "failed", T0 + 2 * HOUR)],
                [done("s1", at=T0 + 1800)],
            ],
            [2, 3, 2],
            ("f3", "failed", T0 + 1800, T0 + 2 * HOUR),
            id="a late success between stored failures leaves only the later failures in the streak",
        ),
        pytest.param(
            [[done("f1", "failed", T0), done("f2", "failed", T0 + HOUR), done("s1", at=T0 + 1800)]],
            [1],
            ("f2", "failed", T0 + 1800, T0 + HOUR),
            id="a late success between failures of the same batch counts the failures the batch stored",
        ),
        pytest.param(
            [[done("a", at=T0)], [done("b", "failed", T0)]],
            [0, 0],
            ("b", "failed", T0, T0),
            id="of two jobs finished in one second the greater id is the latest, the failure not after the success",
        ),
    ],
)
def test_finished_jobs_change_their_connections_streak_and_latest_job(
    batches: list[list[Job]], streaks: list[int], last: tuple[str, str, float | None, float | None]
) -> None:
    state = Memory()

    seen = []
    for batch in batches:
        ingest(state, *batch)
        seen.append(state.connections[SF].consecutive_failures)

    agg = state.connections[SF]
    assert seen == streaks
    assert (agg.last_job_id, agg.last_job_status, agg.last_success_at, agg.last_failure_at) == last


def test_a_finished_job_is_counted_once_with_its_duration_in_the_histogram() -> None:
    state = Memory()
    record = done("j1", at=T0 + 100, started_at=T0, records_synced=12847, bytes_synced=3_200_000)

    first = ingest(state, record)
    again = ingest(state, record)

    agg = state.connections[SF]
    assert outcomes(again) == ("unchanged",)
    assert again.connections == ()
    assert first.connections == (agg,)
    assert agg.jobs == {"succeeded": 1, "failed": 0, "cancelled": 0}
    assert (agg.records_synced, agg.bytes_synced, agg.last_job_duration_seconds) == (12847, 3_200_000, 100.0)
    assert agg.durations == {"succeeded": Histogram([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], 100.0)}


def test_records_of_one_connection_in_a_plan_change_the_one_aggregate_it_was_given() -> None:
    # The state gives a new aggregate at each call: asked again, it would forget the first record.
    state = Memory(connections={SF: ConnectionAgg(SF, first_seen=T0)})

    plan = plan_jobs(
        state,
        [JobsRequest([done("j1")], "jobs"), JobsRequest([done("j2"), done("j3", "failed")], "jobs")],
        now=NOW,
        limits=SeriesLimits(),
        outbox=False,
        routes=(),
    )

    assert [agg.jobs for agg in plan.connections] == [{"succeeded": 2, "failed": 1, "cancelled": 0}]


def test_a_failure_summary_made_known_later_is_counted_once_by_its_kind() -> None:
    state = Memory()

    first = ingest(state, done("j1", "failed"))
    later = ingest(state, done("j1", "failed", error_summary="401 Unauthorized: token expired"))
    again = ingest(state, done("j1", "failed", error_summary="Read timed out"))

    assert (first.errors, later.errors, again.errors) == ({}, {SF: {"auth": 1}}, {})


# Streams: what finished jobs leave in their streams' aggregates.
@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        pytest.param(
            [
                done("new", at=T0 + HOUR, streams=(StreamResult("Lead", "succeeded", 5),)),
                done("old", "failed", at=T0, streams=(StreamResult("Lead", "failed", 2),)),
            ],
            {"Lead": StreamAgg(SF, "Lead", 7, "succeeded", T0 + HOUR)},
            id="a stream's last status follows the latest job by finish time and its records add up",
        ),
        pytest.param(
            [done("j1", streams=(StreamResult("A", "succeeded", 1), StreamResult("B", "succeeded", 2)))],
            {"A": StreamAgg(SF, "A", 1, "succeeded", T0), OVERFLOW: StreamAgg(SF, OVERFLOW, 2, "succeeded", T0)},
            id="a stream beyond its connection's budget counts into the overflow stream",
        ),
    ],
)
def test_finished_jobs_change_their_streams(jobs: list[Job], expected: dict[str, StreamAgg]) -> None:
    state = Memory()

    for record in jobs:
        ingest(state, record, limits=SeriesLimits(max_streams_per_connection=1))

    assert {stream: agg for (_, stream), agg in state.streams.items()} == expected


def test_a_job_with_a_stream_beyond_the_budget_is_counted_once_as_overflowing() -> None:
    state = Memory()
    streams = (StreamResult("A", "succeeded", 1), StreamResult("B", "succeeded", 2))

    plan = ingest(state, done("j1", streams=streams), done("j2", streams=streams), limits=SeriesLimits(1, 1))

    assert plan.overflow_stream_jobs == 2
    assert plan.overflow_connection_jobs == 0


# Log signals: what a job's new log lines change.
def test_log_lines_are_counted_by_level_and_error_kind_and_queued() -> None:
    state = Memory(jobs={"j1": active("j1")})

    plan = lines_for(
        state,
        "j1",
        LogLine("ERROR", "401 Unauthorized"),
        LogLine("ERROR", "Read timed out after 60s"),
        LogLine("INFO", "Syncing stream: Account"),
    )

    assert plan.levels == {SF: {"error": 2, "info": 1}}
    assert plan.errors == {SF: {"auth": 1, "network": 1}}
    assert plan.outbox == (("j1", 1), ("j1", 2), ("j1", 3))
    assert plan.ingest_counts == {"logs": {"accepted": 3, "unchanged": 0}}
    assert plan.exports == ()


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(
            [LogLine("WARN", "API rate limit at 85% — throttling", T0), LogLine("INFO", "rate limit at 40%", T0 - 60)],
            RateLimit(SF, 0.85, T0),
            id="the latest line by its timestamp gives the rate limit usage",
        ),
        pytest.param(
            [LogLine("INFO", "rate limit at 40%", T0), LogLine("INFO", "rate limit at 60%")],
            RateLimit(SF, 0.6, NOW),
            id="a line without a timestamp reports the usage now",
        ),
        pytest.param(
            [LogLine("DEBUG", "rate limit at 99%", T0)],
            None,
            id="a debug line does not report the rate limit usage",
        ),
        pytest.param(
            [LogLine("INFO", "rate limit at 140%", T0)],
            None,
            id="a usage above one hundred percent is not believed",
        ),
    ],
)
def test_log_lines_report_the_rate_limit_usage(lines: list[LogLine], expected: RateLimit | None) -> None:
    state = Memory(jobs={"j1": active("j1")})

    assert lines_for(state, "j1", *lines).rate_limit == expected


def test_lines_after_a_job_finished_without_streams_give_it_their_stream_results() -> None:
    state = Memory()
    ingest(state, done("j1"))

    plan = lines_for(
        state,
        "j1",
        LogLine("INFO", "Stream Account: 4,218 records synced in 18.2s"),
        LogLine("ERROR", "Stream Contact: 401", stream="Contact"),
    )

    assert state.jobs["j1"].streams == (
        StreamResult("Account", "succeeded", records_synced=4218, duration_seconds=18.2),
        StreamResult("Contact", "failed", error="Stream Contact: 401"),
    )
    assert (state.jobs["j1"].records_synced, state.jobs["j1"].streams_failed) == (4218, 1)
    assert plan.exports == ("j1", "j1")  # the lines, then the job's new streams
    assert state.streams[(SF, "Account")] == StreamAgg(SF, "Account", 4218, "succeeded", T0)


def test_a_finished_record_takes_the_stream_results_of_lines_stored_before_it() -> None:
    state = Memory(jobs={"j1": active("j1")})
    lines_for(state, "j1", LogLine("INFO", "Stream Account: 12 records synced"))

    ingest(state, done("j1"))

    assert state.jobs["j1"].streams == (StreamResult("Account", "succeeded", records_synced=12),)
    assert state.connections[SF].records_synced == 12


# Status changes: one event per status reached, for the endpoints that want it.
def test_each_status_a_job_reaches_is_one_event_per_endpoint_that_wants_it() -> None:
    state = Memory()
    routes = [
        EventRoute("all"),
        EventRoute("failures", statuses=frozenset({"failed"})),
        EventRoute("stripe-only", connections=frozenset({STRIPE})),
    ]

    plan = ingest(
        state,
        active("j1", "pending"),
        active("j1", "running", started_at=T0),
        active("j1", "running", started_at=T0, records_synced=5),
        done("j1", "failed", at=T0 + 60),
        routes=routes,
    )

    assert [(e.endpoint, e.event_id) for e in plan.events] == [
        ("all", status_event_id("j1", "pending")),
        ("all", status_event_id("j1", "running")),
        ("all", status_event_id("j1", "failed")),
        ("failures", status_event_id("j1", "failed")),
    ]
    body = json.loads(plan.events[-1].payload)
    assert {
        key: body[key] for key in ("event_id", "event_type", "timestamp", "previous_status", "job_id", "status")
    } == {
        "event_id": status_event_id("j1", "failed"),
        "event_type": "job.status_changed",
        "timestamp": "2026-04-07T08:00:00Z",
        "previous_status": "running",
        "job_id": "j1",
        "status": "failed",
    }


# Queues: the log shipper's outbox and the S3 export.
@pytest.mark.parametrize(
    ("stored", "record", "outbox", "exports"),
    [
        pytest.param(None, done("j1"), (("j1", None),), (), id="a job finished now queues its summary"),
        pytest.param(
            active("j1"), done("j1"), (("j1", None),), (), id="a running job that finishes queues its summary"
        ),
        pytest.param(None, active("j1"), (), (), id="an unfinished job queues nothing"),
        pytest.param(
            done("j1", "failed"),
            done("j1", "failed", error_summary="timeout"),
            (),
            ("j1",),
            id="a finished job that learns more is exported again and not shipped twice",
        ),
    ],
)
def test_what_a_record_queues(
    stored: Job | None, record: Job, outbox: tuple[tuple[str, None], ...], exports: tuple[str, ...]
) -> None:
    state = Memory(jobs={} if stored is None else {"j1": stored})

    plan = ingest(state, record)

    assert (plan.outbox, plan.exports) == (outbox, exports)


# Refusals: one bad record is refused, the rest of its batch stored.
def test_a_record_taking_its_job_past_the_stream_bound_is_refused_and_the_rest_stored() -> None:
    many = tuple(StreamResult(f"s{n}") for n in range(MAX_STREAMS))
    state = Memory(jobs={"big": active("big", streams=many)})

    plan = ingest(state, active("big", streams=(StreamResult("one-more"),)), done("small"))

    assert outcomes(plan) == ("rejected", "accepted")
    assert plan.requests[0].errors[0].field == "streams"
    assert [write.job.job_id for write in plan.jobs] == ["small"]
    assert plan.ingest_counts == {"jobs": {"accepted": 1, "unchanged": 0, "ignored": 0, "rejected": 1}}
    assert plan.rejections == {"jobs": {"streams": 1}}


def test_a_token_past_its_new_connections_this_hour_is_refused_them_until_the_next_hour() -> None:
    state = Memory(made={("t", int(NOW // 3600)): 1})
    limits = SeriesLimits(new_connections_per_hour=2)

    plan = ingest(
        state,
        done("a", connection="A"),
        done("b", connection="B"),
        done("a2", connection="A"),
        token="t",
        limits=limits,
    )

    assert outcomes(plan) == ("accepted", "rejected", "accepted")
    error = plan.requests[0].errors[1]
    assert isinstance(error, NewConnectionRefused) and error.retry_after == 3600
    assert plan.connections_made == {("t", int(NOW // 3600)): 1}
    assert [agg.connection for agg in plan.connections] == ["A"]


def test_requests_planned_together_keep_their_own_outcomes_and_count_what_validation_refused() -> None:
    state = Memory()
    requests = [
        JobsRequest([done("j1")], "jobs", rejected=2, rejected_fields=["status", "streams[4].name"]),
        JobsRequest([done("j1"), active("j2")], "webhook", rejected=1, rejected_fields=["status"]),
    ]

    plan = plan_jobs(state, requests, now=NOW, limits=LIMITS, outbox=False, routes=())

    assert [request.outcomes for request in plan.requests] == [("accepted",), ("unchanged", "accepted")]
    assert plan.ingest_counts == {
        "jobs": {"accepted": 1, "unchanged": 0, "ignored": 0, "rejected": 2},
        "webhook": {"accepted": 1, "unchanged": 1, "ignored": 0, "rejected": 1},
    }
    assert plan.rejections == {"jobs": {"status": 1, "streams[].name": 1}, "webhook": {"status": 1}}
    assert (plan.new_jobs, plan.outbox) == (2, ())


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(["streams[3].name", "streams[12].name"], {"streams[].name": 2}, id="positions are removed"),
        pytest.param(["line 4. status"], {" status": 1}, id="an NDJSON line number is removed"),
        pytest.param([""], {"record": 1}, id="an error naming no field counts as the record"),
    ],
)
def test_refused_records_are_counted_by_the_field_they_name(fields: list[str], expected: dict[str, int]) -> None:
    assert rejection_counts(fields) == expected


# Forgotten connections and the series budget.
@pytest.mark.parametrize(
    ("record", "counted"),
    [
        pytest.param(
            done("late", at=T0 - 60), False, id="a job that began before its connection was forgotten is not counted"
        ),
        pytest.param(done("new", at=T0 + 60), True, id="a job that began after the forget is counted"),
        pytest.param(
            done("long", at=T0 + 60, started_at=T0 - 60),
            False,
            id="a job running when its connection was forgotten is not counted",
        ),
    ],
)
def test_the_forgotten_connection_rule(record: Job, counted: bool) -> None:
    state = Memory(forgotten={SF: T0})

    plan = ingest(state, record)

    assert [write.job.job_id for write in plan.jobs] == [record.job_id]
    assert [agg.jobs["succeeded"] for agg in plan.connections] == ([1] if counted else [])


def test_a_connection_beyond_the_series_budget_counts_into_the_overflow() -> None:
    state = Memory(connections={SF: ConnectionAgg(SF, T0)})

    plan = ingest(
        state,
        done("j1", "failed", connection=STRIPE, records_failed=3, error_summary="429 Too Many Requests"),
        limits=SeriesLimits(max_connections=1),
    )

    stripe = state.connections[STRIPE]
    assert (stripe.admitted, stripe.jobs["failed"], stripe.consecutive_failures) == (False, 1, 1)
    assert plan.overflow is not None and (plan.overflow.jobs["failed"], plan.overflow.records_failed) == (1, 3)
    assert (plan.overflow_connection_jobs, plan.admitted_connections) == (1, 1)
    assert plan.errors == {OVERFLOW: {"rate_limit": 1}}


def test_connections_within_the_budget_take_its_places_in_order() -> None:
    state = Memory()

    plan = ingest(state, done("a", connection="A"), done("b", connection="B"), limits=SeriesLimits(max_connections=1))

    assert [(agg.connection, agg.admitted) for agg in plan.connections] == [("A", True), ("B", False)]
    assert plan.admitted_connections == 1


def test_lines_of_a_connection_beyond_the_budget_are_counted_in_the_overflow_without_a_rate_limit() -> None:
    state = Memory(jobs={"j1": active("j1")}, connections={SF: replace(ConnectionAgg(SF, T0), admitted=False)})

    plan = lines_for(state, "j1", LogLine("WARN", "rate limit at 50%", T0))

    assert (plan.levels, plan.rate_limit) == ({OVERFLOW: {"warn": 1}}, None)


# Learning: what a connection usually does, from its successes.


def hourly(job_id: str, hour: int, connection: str = SF, records: int = 1000, **fields: object) -> Job:
    return done(job_id, at=T0 + hour * HOUR, connection=connection, records_synced=records, **fields)


def test_a_batch_learns_each_connection_once_from_its_stored_and_its_new_successes() -> None:
    state = Memory()
    ingest(state, *(hourly(f"a{h}", h) for h in range(4)))
    plan = ingest(
        state,
        *(hourly(f"a{h}", h, records=10 if h == 9 else 1000) for h in range(4, 10)),
        *(hourly(f"b{h}", h, connection="B", records=0) for h in range(3)),
        done("c1", "failed", at=NOW - 60, connection="C"),
    )

    assert state.success_reads == [(SF,), (SF, "B")]  # one read per batch, only of connections with a new success
    learned = {agg.connection: agg for agg in plan.connections}
    assert (learned[SF].interval_seconds, learned[SF].interval_spread_seconds) == (3600.0, 0.0)
    assert (learned[SF].last_success_records, learned[SF].records_expected) == (10, None)  # 9 earlier: too few
    assert (learned["B"].interval_seconds, learned["B"].last_success_records) == (None, 0)
    assert learned["C"].last_success_records is None


def test_a_reset_is_neither_learned_from_nor_judged() -> None:
    state = Memory()
    ingest(state, *(hourly(f"a{h}", h) for h in range(11)))
    plan = ingest(state, hourly("reset", 12, records=0, job_type="reset"))

    assert state.success_reads == [(SF,)]
    assert plan.connections[0].last_success_records == 1000
    assert plan.connections[0].records_expected == 1000.0
