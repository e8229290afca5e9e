"""Every metric family of ``/metrics``, declared once: name, type, help, labels and how its samples are made.

The scrape writes its text from this table (:mod:`.scrape`), the library
collector the tests hold it to is built from it (:mod:`.collector`), and
``docs/metrics-reference.md`` is generated from it (:mod:`.metrics_reference`). Adding a
family is one :class:`Family` in the right tuple plus its sample producer.

Values come from the store's aggregates at each scrape (never long-lived
counter objects): every worker process reports the same truth, a restart
changes nothing, and series of forgotten connections vanish by themselves.

Label bounds: ``connection`` is bounded by ``limits.max_connections`` (the
others add up under ``connection="__overflow__"``), ``stream`` by
``limits.max_streams_per_connection`` per connection, ``status`` by the five
job statuses, ``level`` and ``kind`` by fixed lists. A job id appears only on
``calabi_sync_last_job_info``, one series per connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Generic, Literal, TypeVar

from . import __version__
from .config import Config
from .connection_parts import ConnectionPart
from .detection import Usual, overdue_threshold, score
from .joblogs import LEVEL_LABELS
from .lifecycle import OUTCOMES
from .logsignals import ERROR_KINDS
from .model import ACTIVE_STATUSES, DEFAULT_PLATFORM, FAILED, FINISHED_STATUSES, OVERFLOW, SUCCEEDED
from .sources import POLL_OUTCOMES, airbyte, fivetran, fivetran_api
from .store import MetricsSnapshot
from .store.records import ERROR_FAMILY, LEVEL_FAMILY, OVERFLOW_KINDS, ReplicaView
from .timeutil import Clock, system_clock

INGEST_ENDPOINTS: Final = ("jobs", "logs", "webhook", "airbyte", "fivetran")
#: The kinds of delivery each source's webhook counts.
SOURCE_NOTICE_KINDS: Final = {airbyte.PLATFORM: airbyte.KINDS, fivetran.PLATFORM: fivetran.KINDS}
WEBHOOK_OUTCOMES: Final = ("delivered", "failed", "dead_lettered")

#: A sample: the suffix added to the family's name (``_bucket``, ``_count``, ``_sum`` of a
#: histogram, else ""), its label values in the family's label order (a bucket adds ``le``), its value.
Row = tuple[str, tuple[str, ...], float]
Kind = Literal["counter", "gauge", "histogram"]
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Alerting thresholds per connection, from the configuration; exposed as gauges for the alert rules."""

    failure_threshold: int
    freshness_threshold_seconds: float
    stuck_floor_seconds: float
    pending_threshold_seconds: float
    expected_interval_seconds: float = 0.0  # 0: the platform's schedule, else the learned one
    slo_objective: float = 0.99
    overrides: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> Thresholds:
        """The configured thresholds, with each connection's overrides (defaults live in the configuration)."""
        overrides = {
            name: {key: value for key in THRESHOLD_KEYS if (value := getattr(settings, key)) is not None}
            for name, settings in config.connections.items()
        }
        return cls(
            failure_threshold=config.failure_threshold,
            freshness_threshold_seconds=config.freshness_threshold_seconds,
            stuck_floor_seconds=config.stuck_floor_seconds,
            pending_threshold_seconds=config.pending_threshold_seconds,
            expected_interval_seconds=config.expected_interval_seconds,
            slo_objective=config.slo_objective,
            overrides=overrides,
        )

    def for_connection(self, connection: str) -> dict[str, float]:
        """Every threshold of the connection: its own where the configuration gives one, else the default."""
        return {key: self.value(connection, key) for key in THRESHOLD_KEYS}

    def value(self, connection: str, key: str) -> float:
        """One threshold of the connection, looked up without building the others: a scrape asks for it
        once per connection beyond the series budget, tens of thousands of times."""
        own = self.overrides.get(connection)
        if own is not None and key in own:
            return own[key]
        value: float = getattr(self, key)
        return value


THRESHOLD_KEYS: Final = (
    "failure_threshold",
    "freshness_threshold_seconds",
    "stuck_floor_seconds",
    "pending_threshold_seconds",
    "expected_interval_seconds",
    "slo_objective",
)


@dataclass(frozen=True, slots=True)
class ScrapeSettings:
    """What the configuration decides about the samples: thresholds, the features shown, per-stream series."""

    thresholds: Thresholds
    clock: Clock = system_clock
    s3_export: bool = False
    webhook_endpoints: tuple[str, ...] = ()
    streams_exposed: Callable[[str], bool] = lambda _connection: True
    pollers: tuple[str, ...] = ()  # the sources whose API is polled


@dataclass(frozen=True, slots=True)
class Family(Generic[S]):
    """One metric family; ``samples(source, settings)`` yields its rows, or returns None when it is not shown.

    ``name`` is the name queries use: a counter's ends in ``_total``. ``source`` is
    a :class:`ConnectionPart` (:data:`CONNECTION_FAMILIES`), the :class:`ReplicaView`
    (:data:`REPLICA_FAMILIES`) or the :class:`MetricsSnapshot` (:data:`STORE_FAMILIES`).
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    samples: Callable[[S, ScrapeSettings], Iterable[Row] | None] = field(repr=False, compare=False)

    @property
    def base_name(self) -> str:
        """The name without a counter's ``_total``: what prometheus_client and ``# TYPE`` in OpenMetrics call it."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    def sample_labels(self, suffix: str) -> tuple[str, ...]:
        return (*self.labels, "le") if suffix == "_bucket" else self.labels


def _one(value: float | None, *labels: str) -> Iterator[Row]:
    """The one sample of a family, when there is a value."""
    if value is not None:
        yield "", labels, value


# Per-connection families. ``part.agg`` is None for a part with only jobs in progress or log lines;
# the overflow part gets only what adds up over connections (counters, jobs in progress).


def _admitted(part: ConnectionPart) -> bool:
    return part.agg is not None and part.name != OVERFLOW


def _jobs(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
    if part.agg is not None:
        for status in FINISHED_STATUSES:
            yield "", (part.name, status), part.agg.jobs[status]


def _in_progress(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
    for status in ACTIVE_STATUSES:
        entry = part.active.get(status)
        yield "", (part.name, status), entry[0] if entry else 0


def _oldest_active(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
    for status in ACTIVE_STATUSES:
        entry = part.active.get(status)
        if entry is not None:
            yield "", (part.name, status), entry[1]


def _durations(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
    if part.agg is None:
        return
    for status in FINISHED_STATUSES:
        histogram = part.agg.durations.get(status)
        if histogram is not None:
            buckets = histogram.cumulative()
            for edge, count in buckets:
                yield "_bucket", (part.name, status, edge), count
            yield "_count", (part.name, status), buckets[-1][1]
            yield "_sum", (part.name, status), histogram.total


def _streams(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
    if part.agg is not None:
        yield "", (part.name, SUCCEEDED), part.agg.streams_succeeded
        yield "", (part.name, FAILED), part.agg.streams_failed


def _stream_records(part: ConnectionPart, settings: ScrapeSettings) -> Iterator[Row]:
    if settings.streams_exposed(part.name):
        for s in part.streams:
            yield "", (part.name, s.stream), s.records_synced


def _stream_last_status(part: ConnectionPart, settings: ScrapeSettings) -> Iterator[Row]:
    if settings.streams_exposed(part.name):
        for s in part.streams:
            if s.last_status is not None and s.stream != OVERFLOW:  # no one latest status for many streams
                for status in FINISHED_STATUSES:
                    yield "", (part.name, s.stream, status), 1.0 if s.last_status == status else 0.0


def _last_job_status(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
    if _admitted(part) and part.agg is not None and part.agg.last_job_status is not None:
        for status in FINISHED_STATUSES:
            yield "", (part.name, status), 1.0 if part.agg.last_job_status == status else 0.0


def _last_job_info(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
    c = part.agg
    if _admitted(part) and c is not None and c.last_job_status is not None:
        labels = (
            part.name,
            c.last_job_id or "",
            c.last_job_status,
            c.last_job_error_summary or "",
            c.last_job_url or "",
        )
        yield "", labels, 1.0


def _connection_info(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
    c = part.agg
    if _admitted(part) and c is not None:
        labels = (part.name, c.connection_id or "", c.source or "", c.destination or "", c.platform or DEFAULT_PLATFORM)
        yield "", labels, 1.0


def _log_counts(family_name: str, keys: tuple[str, ...]) -> Callable[[ConnectionPart, ScrapeSettings], Iterator[Row]]:
    def samples(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
        if part.agg is not None or part.log_counts:
            for key in keys:
                yield "", (part.name, key), part.log_counts.get((family_name, key), 0)

    return samples


def _counter(attribute: str) -> Callable[[ConnectionPart, ScrapeSettings], Iterator[Row]]:
    """A per-connection counter of the aggregate (the overflow's included: counters add up)."""

    def samples(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
        if part.agg is not None:
            yield "", (part.name,), getattr(part.agg, attribute)

    return samples


def _gauge(attribute: str) -> Callable[[ConnectionPart, ScrapeSettings], Iterator[Row]]:
    """A per-connection gauge of the aggregate, when known (none for the overflow: gauges do not add up)."""

    def samples(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
        if _admitted(part):
            return _one(getattr(part.agg, attribute), part.name)
        return iter(())

    return samples


def _last_job(attribute: str) -> Callable[[ConnectionPart, ScrapeSettings], Iterator[Row]]:
    """A value of the connection's latest finished job."""

    def samples(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
        if _admitted(part) and part.agg is not None and part.agg.last_job_status is not None:
            return _one(getattr(part.agg, attribute), part.name)
        return iter(())

    return samples


def _threshold(key: str) -> Callable[[ConnectionPart, ScrapeSettings], Iterator[Row]]:
    # Every part, the overflow and a forgotten connection's jobs in progress included: the stuck
    # and pending alerts compare their jobs in progress with these.
    def samples(part: ConnectionPart, settings: ScrapeSettings) -> Iterator[Row]:
        yield "", (part.name,), settings.thresholds.value(part.name, key)

    return samples


def _schedule_in_use(part: ConnectionPart, settings: ScrapeSettings) -> Usual | None:
    """The connection's expected interval and its spread: declared in the configuration, else the one the
    platform reports, else the one learned from its successes (the only one with a spread)."""
    declared = settings.thresholds.value(part.name, "expected_interval_seconds")
    if declared:
        return Usual(declared, 0.0)
    if part.state is not None and part.state.schedule_seconds is not None:
        return Usual(part.state.schedule_seconds, 0.0)
    agg = part.agg
    if agg is not None and agg.interval_seconds is not None and agg.interval_spread_seconds is not None:
        return Usual(agg.interval_seconds, agg.interval_spread_seconds)
    return None


def _expected_interval(part: ConnectionPart, settings: ScrapeSettings) -> Iterator[Row]:
    schedule = _schedule_in_use(part, settings) if _admitted(part) else None
    if schedule is not None:
        yield "", (part.name,), schedule.median


def _overdue_threshold(part: ConnectionPart, settings: ScrapeSettings) -> Iterator[Row]:
    schedule = _schedule_in_use(part, settings) if _admitted(part) else None
    if schedule is not None:
        yield "", (part.name,), overdue_threshold(schedule.median, schedule.spread)


def _records_score(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
    agg = part.agg
    if not _admitted(part) or agg is None or agg.last_success_records is None:
        return
    if agg.records_expected is not None and agg.records_spread is not None:
        yield "", (part.name,), score(agg.last_success_records, Usual(agg.records_expected, agg.records_spread))


def _objective(part: ConnectionPart, settings: ScrapeSettings) -> Iterator[Row]:
    # Only where there are jobs to judge: no series for the overflow or a forgotten connection's last runs.
    if _admitted(part):
        yield "", (part.name,), settings.thresholds.value(part.name, "slo_objective")


def _rate_limit(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
    if part.name != OVERFLOW:
        yield from _one(part.rate_limit, part.name)


def _paused(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
    if part.state is not None and part.state.paused is not None:
        yield "", (part.name,), 1.0 if part.state.paused else 0.0


def _schedule(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
    if part.state is not None:
        yield from _one(part.state.schedule_seconds, part.name)


def _states(part: ConnectionPart, _: ScrapeSettings) -> Iterator[Row]:
    if part.state is None:
        return
    for kind, known in fivetran_api.STATES.items():
        current = part.state.states.get(kind)
        if current is None:
            continue
        for state in known if current in known else (*known, current):
            yield "", (part.name, kind, state), 1.0 if state == current else 0.0


_C: Final = ("connection",)
_CS: Final = ("connection", "status")


def _last_job_family(key: str, what: str) -> Family[ConnectionPart]:
    help_text = f"{what} of the connection's latest finished job."
    return Family(f"calabi_sync_last_job_{key}", "gauge", help_text, _C, _last_job(f"last_job_{key}"))


def _threshold_family(key: str, help_text: str) -> Family[ConnectionPart]:
    return Family(f"calabi_sync_{key}", "gauge", help_text, _C, _threshold(key))


#: Every per-connection family, in the order a scrape shows them.
CONNECTION_FAMILIES: Final[tuple[Family[ConnectionPart], ...]] = (
    Family("calabi_sync_jobs_total", "counter", "Finished sync jobs by final status.", _CS, _jobs),
    Family("calabi_sync_jobs_in_progress", "gauge", "Jobs queued (pending) or running now.", _CS, _in_progress),
    Family(
        "calabi_sync_oldest_job_start_timestamp_seconds",
        "gauge",
        "Queue time of the oldest pending job, or start time of the oldest running job.",
        _CS,
        _oldest_active,
    ),
    Family(
        "calabi_sync_job_duration_seconds",
        "histogram",
        "Wall-clock duration of finished sync jobs, start to end.",
        _CS,
        _durations,
    ),
    Family(
        "calabi_sync_records_synced_total",
        "counter",
        "Rows written to the destination by finished jobs.",
        _C,
        _counter("records_synced"),
    ),
    Family(
        "calabi_sync_records_failed_total",
        "counter",
        "Rows finished jobs could not write (schema mismatch, type errors).",
        _C,
        _counter("records_failed"),
    ),
    Family(
        "calabi_sync_bytes_synced_total",
        "counter",
        "Compressed bytes processed by finished jobs.",
        _C,
        _counter("bytes_synced"),
    ),
    Family("calabi_sync_streams_total", "counter", "Stream results of finished jobs.", _CS, _streams),
    Family(
        "calabi_sync_stream_records_synced_total",
        "counter",
        "Rows written per stream by finished jobs.",
        ("connection", "stream"),
        _stream_records,
    ),
    Family(
        "calabi_sync_stream_last_status",
        "gauge",
        "1 for the stream's latest status, 0 for the others.",
        ("connection", "stream", "status"),
        _stream_last_status,
    ),
    Family(
        "calabi_sync_consecutive_failures",
        "gauge",
        "Failed jobs since the connection's latest success, by finish time; cancelled jobs neither add nor reset.",
        _C,
        _gauge("consecutive_failures"),
    ),
    Family(
        "calabi_sync_last_success_timestamp_seconds",
        "gauge",
        "End time of the connection's latest succeeded job.",
        _C,
        _gauge("last_success_at"),
    ),
    Family(
        "calabi_sync_last_failure_timestamp_seconds",
        "gauge",
        "End time of the connection's latest failed job.",
        _C,
        _gauge("last_failure_at"),
    ),
    Family(
        "calabi_sync_last_job_status",
        "gauge",
        "1 for the status of the connection's latest finished job, 0 for the others.",
        _CS,
        _last_job_status,
    ),
    _last_job_family("records_synced", "Records Synced"),
    _last_job_family("records_failed", "Records Failed"),
    _last_job_family("bytes_synced", "Bytes Synced"),
    _last_job_family("duration_seconds", "Duration"),
    _last_job_family("streams_succeeded", "Streams Succeeded"),
    _last_job_family("streams_failed", "Streams Failed"),
    Family(
        "calabi_sync_last_job_info",
        "gauge",
        "The connection's latest finished job, for alert messages (always 1).",
        ("connection", "job_id", "status", "error_summary", "job_url"),
        _last_job_info,
    ),
    Family(
        "calabi_sync_connection_info",
        "gauge",
        "Connection metadata (always 1): its id, source and destination as its jobs name them, and the platform"
        " that runs it.",
        ("connection", "connection_id", "source", "destination", "platform"),
        _connection_info,
    ),
    Family(
        "calabi_sync_connection_first_seen_timestamp_seconds",
        "gauge",
        "The earliest time of the connection's jobs, or when the exporter first heard of it if earlier: "
        "the staleness clock until it first succeeds.",
        _C,
        _gauge("first_seen"),
    ),
    _threshold_family("failure_threshold", "Consecutive failed jobs before the connection pages (configuration)."),
    _threshold_family(
        "freshness_threshold_seconds",
        "Longest tolerated time since the connection's latest success (configuration).",
    ),
    _threshold_family(
        "stuck_floor_seconds",
        "A running job is stuck after three times the connection's usual duration, and never before this "
        "(configuration).",
    ),
    _threshold_family(
        "pending_threshold_seconds", "Longest tolerated wait of a pending job for a worker slot (configuration)."
    ),
    Family(
        "calabi_sync_slo_objective",
        "gauge",
        "Share of the connection's finished jobs (cancelled left out) that should succeed over 30 days "
        "(configuration): the error budget of CalabiSyncErrorBudgetBurn.",
        _C,
        _objective,
    ),
    Family(
        "calabi_sync_expected_interval_seconds",
        "gauge",
        "The connection's usual interval between successful syncs: declared in the configuration, else as the "
        "platform reports it, else the median interval of its newest successes (at least six of them).",
        _C,
        _expected_interval,
    ),
    Family(
        "calabi_sync_overdue_threshold_seconds",
        "gauge",
        "Time after the connection's latest success beyond which it is overdue: the expected interval plus half "
        "of it, at least an hour, and three spreads of a learned one (CalabiSyncOverdue).",
        _C,
        _overdue_threshold,
    ),
    Family(
        "calabi_sync_records_expected",
        "gauge",
        "Usual records of one successful job: the median of the connection's earlier successes, resets left out "
        "(at least ten of them; none for a connection whose syncs usually move nothing).",
        _C,
        _gauge("records_expected"),
    ),
    Family(
        "calabi_sync_last_success_records",
        "gauge",
        "Records synced by the connection's newest successful job that is not a reset.",
        _C,
        _gauge("last_success_records"),
    ),
    Family(
        "calabi_sync_last_success_records_score",
        "gauge",
        "How far the newest success's records lie from the usual, in robust spreads (1.4826 median absolute "
        "deviations, at least 1 % of the usual): below -5 with under a quarter of the usual is a volume drop.",
        _C,
        _records_score,
    ),
    Family(
        "calabi_sync_log_lines_total",
        "counter",
        "Job log lines stored, by level.",
        ("connection", "level"),
        _log_counts(LEVEL_FAMILY, LEVEL_LABELS),
    ),
    Family(
        "calabi_sync_errors_total",
        "counter",
        "Errors by kind, from ERROR log lines and from failed jobs' error summaries (one each).",
        ("connection", "kind"),
        _log_counts(ERROR_FAMILY, ERROR_KINDS),
    ),
    Family(
        "calabi_sync_rate_limit_usage_ratio",
        "gauge",
        "Latest share of the source API's rate limit a log line reported as used (0 to 1).",
        _C,
        _rate_limit,
    ),
    Family(
        "calabi_sync_connection_paused",
        "gauge",
        "1 while the platform reports the connection paused, 0 while not (polled connections only).",
        _C,
        _paused,
    ),
    Family(
        "calabi_sync_connection_schedule_interval_seconds",
        "gauge",
        "The connection's sync interval as the platform reports it (polled connections with a fixed interval).",
        _C,
        _schedule,
    ),
    Family(
        "calabi_sync_connection_state",
        "gauge",
        "1 for the state the platform reports of each part of the connection (setup, sync, update), 0 for "
        'the others; update="delayed" is Fivetran\'s own lateness signal (polled connections only).',
        ("connection", "kind", "state"),
        _states,
    ),
)


# What this replica shows of itself, whether or not it shows the store.


def _build_info(_view: ReplicaView, _: ScrapeSettings) -> Iterator[Row]:
    yield "", (__version__,), 1.0


def _roles_held(view: ReplicaView, _: ScrapeSettings) -> Iterable[Row] | None:
    if view.roles is None:
        return None
    return [("", (view.replica, role), float(mine)) for role, mine in view.roles.items()]


REPLICA_FAMILIES: Final[tuple[Family[ReplicaView], ...]] = (
    Family("calabi_exporter_build_info", "gauge", "Exporter version (always 1).", ("version",), _build_info),
    Family(
        "calabi_exporter_role_held",
        "gauge",
        "1 when this replica does the background role; one replica at a time does each.",
        ("replica", "role"),
        _roles_held,
    ),
)


# The store's own figures (shown by one replica of several sharing it).


def _ingested(snap: MetricsSnapshot, _: ScrapeSettings) -> Iterator[Row]:
    for endpoint in INGEST_ENDPOINTS:
        for outcome in OUTCOMES:
            yield "", (endpoint, outcome), snap.ingest_counts.get((endpoint, outcome), 0)


def _overflow_jobs(snap: MetricsSnapshot, _: ScrapeSettings) -> Iterator[Row]:
    for kind in OVERFLOW_KINDS:
        yield "", (kind,), snap.overflow_jobs.get(kind, 0)


def _overflowed_failing(snap: MetricsSnapshot, settings: ScrapeSettings) -> Iterator[Row]:
    """Connections beyond the budget have no gauges of their own: their alerts count them here."""
    failing = 0
    threshold = settings.thresholds.value
    for connection in snap.overflowed:
        failing += connection.consecutive_failures >= threshold(connection.connection, "failure_threshold")
    yield "", (), failing


def _overflowed_stale(snap: MetricsSnapshot, settings: ScrapeSettings) -> Iterator[Row]:
    now = settings.clock()
    stale = 0
    threshold = settings.thresholds.value
    for connection in snap.overflowed:
        stale += now - connection.healthy_since > threshold(connection.connection, "freshness_threshold_seconds")
    yield "", (), stale


def _notices(snap: MetricsSnapshot, _: ScrapeSettings) -> Iterator[Row]:
    for source, kinds in SOURCE_NOTICE_KINDS.items():
        for kind in kinds:
            yield "", (source, kind), snap.notices.get((source, kind), 0)


def _polls(snap: MetricsSnapshot, settings: ScrapeSettings) -> Iterable[Row] | None:
    if not settings.pollers:
        return None
    return [
        ("", (source, outcome), snap.polls.get((source, outcome), 0))
        for source in settings.pollers
        for outcome in POLL_OUTCOMES
    ]


def _last_polls(snap: MetricsSnapshot, settings: ScrapeSettings) -> Iterable[Row] | None:
    if not settings.pollers:
        return None
    return [("", (source,), snap.last_polls[source]) for source in settings.pollers if source in snap.last_polls]


def _rejected(snap: MetricsSnapshot, _: ScrapeSettings) -> Iterator[Row]:
    for (endpoint, field_name), count in sorted(snap.rejections.items()):
        yield "", (endpoint, field_name), count


def _log_records(snap: MetricsSnapshot, _: ScrapeSettings) -> Iterator[Row]:
    shipping = snap.shipping
    yield "", ("exported",), shipping.exported
    yield "", ("failed",), shipping.failed
    yield "", ("dead_lettered",), shipping.dead_lettered


def _shown(value: float | None) -> Iterable[Row] | None:
    """A family shown only when its value is known."""
    return None if value is None else [("", (), value)]


def _s3_objects(snap: MetricsSnapshot, settings: ScrapeSettings) -> Iterable[Row] | None:
    if not settings.s3_export:
        return None
    return [("", ("success",), snap.export.exported_objects), ("", ("failure",), snap.export.failed_objects)]


def _s3_last_success(snap: MetricsSnapshot, settings: ScrapeSettings) -> Iterable[Row] | None:
    return _shown(snap.export.last_success) if settings.s3_export else None


def _s3_lag(snap: MetricsSnapshot, settings: ScrapeSettings) -> Iterable[Row] | None:
    if not settings.s3_export:
        return None
    oldest = snap.export.oldest_waiting
    return [("", (), 0.0 if oldest is None else max(settings.clock() - oldest, 0.0))]


def _webhook_deliveries(snap: MetricsSnapshot, settings: ScrapeSettings) -> Iterable[Row] | None:
    if not settings.webhook_endpoints:
        return None
    return [
        ("", (endpoint, outcome), snap.webhook_counts.get((endpoint, outcome), 0))
        for endpoint in sorted(settings.webhook_endpoints)
        for outcome in WEBHOOK_OUTCOMES
    ]


def _webhook_depth(snap: MetricsSnapshot, settings: ScrapeSettings) -> Iterable[Row] | None:
    if not settings.webhook_endpoints:
        return None
    return [("", (endpoint,), snap.webhook_depth.get(endpoint, 0)) for endpoint in sorted(settings.webhook_endpoints)]


STORE_FAMILIES: Final[tuple[Family[MetricsSnapshot], ...]] = (
    Family(
        "calabi_exporter_ingested_records_total",
        "counter",
        "Records received, by endpoint and outcome.",
        ("endpoint", "outcome"),
        _ingested,
    ),
    Family(
        "calabi_exporter_stored_jobs", "gauge", "Jobs in the store.", (), lambda snap, _: [("", (), snap.stored_jobs)]
    ),
    Family(
        "calabi_exporter_cardinality_overflow_total",
        "counter",
        "Jobs counted under the __overflow__ connection (theirs is beyond limits.max_connections) "
        "or with streams under the __overflow__ stream (beyond limits.max_streams_per_connection).",
        ("kind",),
        _overflow_jobs,
    ),
    Family(
        "calabi_sync_overflow_connections_failing",
        "gauge",
        "Connections beyond the series budget whose failed jobs in a row reached their failure threshold.",
        (),
        _overflowed_failing,
    ),
    Family(
        "calabi_sync_overflow_connections_stale",
        "gauge",
        "Connections beyond the series budget without a success for longer than their freshness threshold.",
        (),
        _overflowed_stale,
    ),
    Family(
        "calabi_exporter_rejected_records_total",
        "counter",
        "Rejected records by the field their error names (positions removed).",
        ("endpoint", "field"),
        _rejected,
    ),
    Family(
        "calabi_exporter_source_notices_total",
        "counter",
        "Deliveries of each source's webhook by kind, those that make no job included (tests, notices).",
        ("platform", "kind"),
        _notices,
    ),
    Family(
        "calabi_exporter_source_polls_total",
        "counter",
        "Polls of each source's API by outcome (configured pollers only).",
        ("source", "outcome"),
        _polls,
    ),
    Family(
        "calabi_exporter_source_last_successful_poll_timestamp_seconds",
        "gauge",
        "When each source's poller last read its API to the end (none before its first good poll).",
        ("source",),
        _last_polls,
    ),
    Family(
        "calabi_exporter_purged_jobs_total",
        "counter",
        "Jobs deleted by retention (their counts stay in every counter).",
        (),
        lambda snap, _: [("", (), snap.purged_jobs)],
    ),
    Family(
        "calabi_exporter_oldest_job_timestamp_seconds",
        "gauge",
        "Finish time of the oldest job still in the store.",
        (),
        lambda snap, _: _shown(snap.oldest_finished_at),
    ),
    Family(
        "calabi_exporter_store_size_bytes",
        "gauge",
        "On-disk size of the store.",
        (),
        lambda snap, _: _shown(snap.store_bytes),
    ),
    Family(
        "calabi_exporter_log_records_total",
        "counter",
        "Log records (lines and job summaries) by shipping outcome; failed counts each failed attempt.",
        ("outcome",),
        _log_records,
    ),
    Family(
        "calabi_exporter_log_outbox_records",
        "gauge",
        "Log records waiting to be shipped.",
        (),
        lambda snap, _: [("", (), snap.shipping.waiting)],
    ),
    Family(
        "calabi_exporter_log_export_last_success_timestamp_seconds",
        "gauge",
        "When log records were last exported successfully.",
        (),
        lambda snap, _: _shown(snap.shipping.last_success),
    ),
    Family(
        "calabi_exporter_s3_exported_objects_total",
        "counter",
        "Objects uploaded to S3, by outcome.",
        ("outcome",),
        _s3_objects,
    ),
    Family(
        "calabi_exporter_s3_export_last_success_timestamp_seconds",
        "gauge",
        "When an S3 export batch was last uploaded.",
        (),
        _s3_last_success,
    ),
    Family(
        "calabi_exporter_s3_export_lag_seconds",
        "gauge",
        "Age of the oldest finished job not exported to S3 yet (0: all exported).",
        (),
        _s3_lag,
    ),
    Family(
        "calabi_exporter_webhook_deliveries_total",
        "counter",
        "Status-change webhook delivery attempts by outcome: delivered, failed (to be retried), dead_lettered.",
        ("endpoint", "outcome"),
        _webhook_deliveries,
    ),
    Family(
        "calabi_exporter_webhook_queue_depth",
        "gauge",
        "Status changes waiting to be delivered.",
        ("endpoint",),
        _webhook_depth,
    ),
)

#: The last family of every scrape: its value counts the scrape's samples, so the scrape writes it itself.
SERIES_FAMILY: Final[Family[int]] = Family(
    "calabi_exporter_series",
    "gauge",
    "Samples in this scrape, this one included: the exporter's share of Prometheus' series.",
    (),
    lambda samples, _: [("", (), float(samples + 1))],
)
