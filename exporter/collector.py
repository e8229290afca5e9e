"""Store aggregates → Prometheus metric families, built afresh at each scrape.

Reading the store at scrape time (rather than keeping long-lived Counter objects)
means every worker process reports the same truth, a restart changes nothing,
and series of forgotten connections vanish by themselves.

Label bounds: ``connection`` is bounded by the number of connections (hundreds
to a few thousand), ``stream`` by the streams of each connection (tens),
``status`` by the five job statuses. A job id appears only on
``calabi_sync_last_job_info``, one series per connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    Sample,
)
from prometheus_client.registry import Collector

from . import __version__
from .aggregates import ConnectionAgg, StreamAgg
from .config import Config
from .joblogs import LEVEL_LABELS
from .lifecycle import OUTCOMES
from .logsignals import ERROR_KINDS
from .model import ACTIVE_STATUSES, FAILED, FINISHED_STATUSES, OVERFLOW, SUCCEEDED
from .store import MetricsSnapshot
from .store.records import ERROR_FAMILY, LEVEL_FAMILY, OVERFLOW_KINDS, OverflowedConnection, ReplicaView
from .timeutil import Clock, system_clock

INGEST_ENDPOINTS: Final = ("jobs", "logs", "webhook")


THRESHOLD_METRICS: Final = {
    "failure_threshold": (
        "calabi_sync_failure_threshold",
        "Consecutive failed jobs before the connection pages (configuration).",
    ),
    "freshness_threshold_seconds": (
        "calabi_sync_freshness_threshold_seconds",
        "Longest tolerated time since the connection's latest success (configuration).",
    ),
    "stuck_floor_seconds": (
        "calabi_sync_stuck_floor_seconds",
        "A running job is stuck after three times the connection's usual duration, and never before this "
        "(configuration).",
    ),
    "pending_threshold_seconds": (
        "calabi_sync_pending_threshold_seconds",
        "Longest tolerated wait of a pending job for a worker slot (configuration).",
    ),
}


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family with a sample (or several) per connection."""

    name: str  # as prometheus_client names it: a counter without ``_total``
    kind: str  # counter, gauge or histogram
    help: str
    labels: tuple[str, ...]

    def metric(self) -> Metric:
        """An empty library family, to add samples to."""
        kinds = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}
        family: Metric = kinds[self.kind](self.name, self.help, labels=list(self.labels))
        return family


LAST_JOB_VALUES: Final = (
    ("records_synced", "Records Synced of the connection's latest finished job."),
    ("records_failed", "Records Failed of the connection's latest finished job."),
    ("bytes_synced", "Bytes Synced of the connection's latest finished job."),
    ("duration_seconds", "Duration of the connection's latest finished job."),
    ("streams_succeeded", "Streams Succeeded of the connection's latest finished job."),
    ("streams_failed", "Streams Failed of the connection's latest finished job."),
)
_C: Final = ("connection",)
_CS: Final = ("connection", "status")

#: Every per-connection family, in the order a scrape shows them.
CONNECTION_FAMILIES: Final = (
    Family("calabi_sync_jobs", "counter", "Finished sync jobs by final status.", _CS),
    Family("calabi_sync_jobs_in_progress", "gauge", "Jobs queued (pending) or running now.", _CS),
    Family(
        "calabi_sync_oldest_job_start_timestamp_seconds",
        "gauge",
        "Queue time of the oldest pending job, or start time of the oldest running job.",
        _CS,
    ),
    Family(
        "calabi_sync_job_duration_seconds",
        "histogram",
        "Wall-clock duration of finished sync jobs, start to end.",
        _CS,
    ),
    Family("calabi_sync_records_synced", "counter", "Rows written to the destination by finished jobs.", _C),
    Family(
        "calabi_sync_records_failed",
        "counter",
        "Rows finished jobs could not write (schema mismatch, type errors).",
        _C,
    ),
    Family("calabi_sync_bytes_synced", "counter", "Compressed bytes processed by finished jobs.", _C),
    Family("calabi_sync_streams", "counter", "Stream results of finished jobs.", _CS),
    Family(
        "calabi_sync_stream_records_synced",
        "counter",
        "Rows written per stream by finished jobs.",
        ("connection", "stream"),
    ),
    Family(
        "calabi_sync_stream_last_status",
        "gauge",
        "1 for the stream's latest status, 0 for the others.",
        ("connection", "stream", "status"),
    ),
    Family(
        "calabi_sync_consecutive_failures",
        "gauge",
        "Failed jobs since the connection's latest success, by finish time; cancelled jobs neither add nor reset.",
        _C,
    ),
    Family(
        "calabi_sync_last_success_timestamp_seconds", "gauge", "End time of the connection's latest succeeded job.", _C
    ),
    Family(
        "calabi_sync_last_failure_timestamp_seconds", "gauge", "End time of the connection's latest failed job.", _C
    ),
    Family(
        "calabi_sync_last_job_status",
        "gauge",
        "1 for the status of the connection's latest finished job, 0 for the others.",
        _CS,
    ),
    *(Family(f"calabi_sync_last_job_{key}", "gauge", help_text, _C) for key, help_text in LAST_JOB_VALUES),
    Family(
        "calabi_sync_last_job_info",
        "gauge",
        "The connection's latest finished job, for alert messages (always 1).",
        ("connection", "job_id", "status", "error_summary", "job_url"),
    ),
    Family(
        "calabi_sync_connection_info",
        "gauge",
        "Connection metadata (always 1).",
        ("connection", "connection_id", "source", "destination"),
    ),
    Family(
        "calabi_sync_connection_first_seen_timestamp_seconds",
        "gauge",
        "The earliest time of the connection's jobs, or when the exporter first heard of it if earlier: "
        "the staleness clock until it first succeeds.",
        _C,
    ),
    *(Family(name, "gauge", help_text, _C) for name, help_text in THRESHOLD_METRICS.values()),
    Family("calabi_sync_log_lines", "counter", "Job log lines stored, by level.", ("connection", "level")),
    Family(
        "calabi_sync_errors",
        "counter",
        "Errors by kind, from ERROR log lines and from failed jobs' error summaries (one each).",
        ("connection", "kind"),
    ),
    Family(
        "calabi_sync_rate_limit_usage_ratio",
        "gauge",
        "Latest share of the source API's rate limit a log line reported as used (0 to 1).",
        _C,
    ),
)


@dataclass(slots=True)
class ConnectionPart:
    """What one connection's series are made of (or, named ``__overflow__``, those beyond the budget)."""

    name: str
    agg: ConnectionAgg | None  # None: an overflow with jobs in progress or log lines only
    streams: list[StreamAgg] = field(default_factory=list)  # sorted by stream name
    log_counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (family, key) -> count
    rate_limit: float | None = None
    active: dict[str, tuple[int, float]] = field(default_factory=dict)  # status -> (jobs, oldest since)


def connection_parts(snap: MetricsSnapshot) -> list[ConnectionPart]:
    """The snapshot grouped by connection: sorted by name, the overflow (if any) last.

    Jobs in progress of a connection with series of its own that a restricted
    snapshot left out are skipped (its kept lines show them); those of a connection
    forgotten while they ran stay under its name, as a part of their own, so that
    its stuck and pending alerts still see them.
    """
    parts = {c.connection: ConnectionPart(c.connection, c) for c in snap.connections}
    overflow = ConnectionPart(OVERFLOW, snap.overflow)
    for s in sorted(snap.streams, key=lambda s: s.stream):
        parts.get(s.connection, overflow).streams.append(s)
    for (connection, family_name, key), count in snap.log_counts.items():
        target = parts.get(connection, overflow)
        target.log_counts[(family_name, key)] = target.log_counts.get((family_name, key), 0) + count
    for connection, ratio in snap.rate_limits.items():
        if connection in parts:
            parts[connection].rate_limit = ratio
    for a in snap.active:  # jobs of connections beyond the budget add up under __overflow__
        if a.admitted is None:
            target = parts.setdefault(a.connection, ConnectionPart(a.connection, None))
        elif not a.admitted:
            target = overflow
        elif a.connection in parts:
            target = parts[a.connection]
        else:
            continue
        count, since = target.active.get(a.status, (0, a.oldest_since))
        target.active[a.status] = (count + a.count, min(since, a.oldest_since))
    ordered = [parts[name] for name in sorted(parts)]
    if overflow.agg is not None or overflow.streams or overflow.log_counts or overflow.active:
        ordered.append(overflow)
    return ordered


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Alerting thresholds per connection, from the configuration; exposed as gauges for the alert rules."""

    failure_threshold: int
    freshness_threshold_seconds: float
    stuck_floor_seconds: float
    pending_threshold_seconds: float
    overrides: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> Thresholds:
        """The configured thresholds, with each connection's overrides (defaults live in the configuration)."""
        overrides = {
            name: {key: value for key in THRESHOLD_METRICS if (value := getattr(settings, key)) is not None}
            for name, settings in config.connections.items()
        }
        return cls(
            failure_threshold=config.failure_threshold,
            freshness_threshold_seconds=config.freshness_threshold_seconds,
            stuck_floor_seconds=config.stuck_floor_seconds,
            pending_threshold_seconds=config.pending_threshold_seconds,
            overrides=overrides,
        )

    def for_connection(self, connection: str) -> dict[str, float]:
        values: dict[str, float] = {key: getattr(self, key) for key in THRESHOLD_METRICS}
        values.update(self.overrides.get(connection, {}))
        return values


class SyncJobCollector(Collector):
    """Yields every ``calabi_sync_*`` and ``calabi_exporter_*`` family from one store snapshot."""

    def __init__(
        self,
        snapshot: Callable[[], MetricsSnapshot],
        thresholds: Thresholds,
        *,
        clock: Clock = system_clock,
        s3_export: bool = False,
        webhook_endpoints: Sequence[str] = (),
        streams_exposed: Callable[[str], bool] = lambda _connection: True,
    ) -> None:
        """``s3_export`` and ``webhook_endpoints``: the features whose metrics are exposed (configured ones only).

        ``streams_exposed(connection)``: whether its per-stream series are shown (``per_stream_metrics``).
        """
        self._snapshot = snapshot
        self._thresholds = thresholds
        self._clock = clock
        self._s3_export = s3_export
        self._webhook_endpoints = tuple(webhook_endpoints)
        self._streams_exposed = streams_exposed

    def describe(self) -> list[Metric]:
        # Describing must not touch the store: registration happens at start-up.
        return []

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        families, _ = self.connection_families(connection_parts(snap))
        yield from families
        yield from self.replica_families(ReplicaView(""))
        yield from self.exporter_families(snap)

    def connection_families(self, parts: Sequence[ConnectionPart]) -> tuple[list[Metric], list[list[int]]]:
        """The per-connection families (:data:`CONNECTION_FAMILIES`) holding the samples of ``parts``, in order.

        Also where each part's samples end in each family, so that a renderer can
        cut one connection's lines out of them (see :mod:`.scrape`).
        """
        families = [family.metric() for family in CONNECTION_FAMILIES]
        ends: list[list[int]] = []
        for part in parts:
            self._add(part, families)
            ends.append([len(family.samples) for family in families])
        return families, ends

    def _add(self, part: ConnectionPart, families: Sequence[Any]) -> None:
        """Add one connection's samples; the overflow part gets only what adds up (counters, jobs in progress)."""
        (
            jobs,
            in_progress,
            oldest,
            durations,
            records,
            records_failed,
            bytes_synced,
            streams,
            stream_records,
            stream_last,
            consecutive,
            last_success,
            last_failure,
            last_status,
            *rest,
        ) = families
        last_values, (last_info, info, first_seen), rest = rest[:6], rest[6:9], rest[9:]
        thresholds, (lines, errors, usage) = rest[:4], rest[4:]
        name, c = part.name, part.agg
        overflow = name == OVERFLOW
        if c is not None:
            for status in FINISHED_STATUSES:
                jobs.add_metric([name, status], c.jobs[status])
        for status in ACTIVE_STATUSES:
            entry = part.active.get(status)
            in_progress.add_metric([name, status], entry[0] if entry else 0)
            if entry is not None:
                oldest.add_metric([name, status], entry[1])
        if c is not None:
            for status in FINISHED_STATUSES:
                histogram = c.durations.get(status)
                if histogram is not None:
                    durations.add_metric([name, status], histogram.cumulative(), histogram.total)
            records.add_metric([name], c.records_synced)
            records_failed.add_metric([name], c.records_failed)
            bytes_synced.add_metric([name], c.bytes_synced)
            streams.add_metric([name, SUCCEEDED], c.streams_succeeded)
            streams.add_metric([name, FAILED], c.streams_failed)
        if self._streams_exposed(name):
            # The largest families (connections × streams): samples are appended
            # directly, skipping add_metric's per-sample label checks.
            for s in part.streams:
                stream_records.samples.append(
                    Sample(
                        "calabi_sync_stream_records_synced_total",
                        {"connection": name, "stream": s.stream},
                        s.records_synced,
                    )
                )
                if s.last_status is not None and s.stream != OVERFLOW:  # no one latest status for many streams
                    for status in FINISHED_STATUSES:
                        stream_last.samples.append(
                            Sample(
                                "calabi_sync_stream_last_status",
                                {"connection": name, "stream": s.stream, "status": status},
                                1.0 if s.last_status == status else 0.0,
                            )
                        )
        if c is not None and not overflow:
            consecutive.add_metric([name], c.consecutive_failures)
            if c.last_success_at is not None:
                last_success.add_metric([name], c.last_success_at)
            if c.last_failure_at is not None:
                last_failure.add_metric([name], c.last_failure_at)
            if c.last_job_status is not None:
                for status in FINISHED_STATUSES:
                    last_status.add_metric([name, status], 1.0 if c.last_job_status == status else 0.0)
                for (key, _), family in zip(LAST_JOB_VALUES, last_values, strict=True):
                    value = getattr(c, f"last_job_{key}")
                    if value is not None:
                        family.add_metric([name], value)
                last_info.add_metric(
                    [
                        name,
                        c.last_job_id or "",
                        c.last_job_status,
                        c.last_job_error_summary or "",
                        c.last_job_url or "",
                    ],
                    1.0,
                )
            info.add_metric([name, c.connection_id or "", c.source or "", c.destination or ""], 1.0)
            first_seen.add_metric([name], c.first_seen)
        # Every part, the overflow and a forgotten connection's jobs in progress included: the stuck
        # and pending alerts compare their jobs in progress with these.
        for family, value in zip(thresholds, self._thresholds.for_connection(name).values(), strict=True):
            family.add_metric([name], value)
        if c is not None or part.log_counts:
            for level in LEVEL_LABELS:
                lines.add_metric([name, level], part.log_counts.get((LEVEL_FAMILY, level), 0))
            for kind in ERROR_KINDS:
                errors.add_metric([name, kind], part.log_counts.get((ERROR_FAMILY, kind), 0))
        if part.rate_limit is not None and not overflow:
            usage.add_metric([name], part.rate_limit)

    def replica_families(self, view: ReplicaView) -> Iterator[Metric]:
        """What this replica shows of itself: its version and, beside other replicas, the roles it holds."""
        build = GaugeMetricFamily("calabi_exporter_build_info", "Exporter version (always 1).", labels=["version"])
        build.add_metric([__version__], 1.0)
        yield build
        if view.roles is not None:
            held = GaugeMetricFamily(
                "calabi_exporter_role_held",
                "1 when this replica does the background role; one replica at a time does each.",
                labels=["replica", "role"],
            )
            for role, mine in view.roles.items():
                held.add_metric([view.replica, role], float(mine))
            yield held

    def exporter_families(self, snap: MetricsSnapshot) -> Iterator[Metric]:
        ingested = CounterMetricFamily(
            "calabi_exporter_ingested_records",
            "Records received, by endpoint and outcome.",
            labels=["endpoint", "outcome"],
        )
        for endpoint in INGEST_ENDPOINTS:
            for outcome in OUTCOMES:
                ingested.add_metric([endpoint, outcome], snap.ingest_counts.get((endpoint, outcome), 0))
        yield ingested
        yield GaugeMetricFamily("calabi_exporter_stored_jobs", "Jobs in the store.", value=snap.stored_jobs)
        overflowed = CounterMetricFamily(
            "calabi_exporter_cardinality_overflow",
            "Jobs counted under the __overflow__ connection (theirs is beyond limits.max_connections) "
            "or with streams under the __overflow__ stream (beyond limits.max_streams_per_connection).",
            labels=["kind"],
        )
        for kind in OVERFLOW_KINDS:
            overflowed.add_metric([kind], snap.overflow_jobs.get(kind, 0))
        yield overflowed
        yield from self._overflowed_health(snap.overflowed)
        rejected = CounterMetricFamily(
            "calabi_exporter_rejected_records",
            "Rejected records by the field their error names (positions removed).",
            labels=["endpoint", "field"],
        )
        for (endpoint, field_name), count in sorted(snap.rejections.items()):
            rejected.add_metric([endpoint, field_name], count)
        yield rejected
        yield CounterMetricFamily(
            "calabi_exporter_purged_jobs",
            "Jobs deleted by retention (their counts stay in every counter).",
            value=snap.purged_jobs,
        )
        if snap.oldest_finished_at is not None:
            yield GaugeMetricFamily(
                "calabi_exporter_oldest_job_timestamp_seconds",
                "Finish time of the oldest job still in the store.",
                value=snap.oldest_finished_at,
            )
        if snap.store_bytes is not None:
            yield GaugeMetricFamily(
                "calabi_exporter_store_size_bytes", "On-disk size of the store.", value=snap.store_bytes
            )
        shipping = snap.shipping
        records = CounterMetricFamily(
            "calabi_exporter_log_records",
            "Log records (lines and job summaries) by shipping outcome; failed counts each failed attempt.",
            labels=["outcome"],
        )
        records.add_metric(["exported"], shipping.exported)
        records.add_metric(["failed"], shipping.failed)
        records.add_metric(["dead_lettered"], shipping.dead_lettered)
        yield records
        yield GaugeMetricFamily(
            "calabi_exporter_log_outbox_records", "Log records waiting to be shipped.", value=shipping.waiting
        )
        if shipping.last_success is not None:
            yield GaugeMetricFamily(
                "calabi_exporter_log_export_last_success_timestamp_seconds",
                "When log records were last exported successfully.",
                value=shipping.last_success,
            )
        if self._s3_export:
            yield from self._s3_metrics(snap)
        if self._webhook_endpoints:
            yield from self._webhook_metrics(snap)

    def _overflowed_health(self, overflowed: Sequence[OverflowedConnection]) -> Iterator[Metric]:
        """How many connections beyond the series budget are failing or stale, each by its own thresholds.

        They have no gauges of their own, so their alerts (``CalabiSyncOverflowConnectionsFailing``,
        ``...Stale``) count them here; ``GET /api/v1/connections`` names them.
        """
        now = self._clock()
        failing = stale = 0
        for connection in overflowed:
            limits = self._thresholds.for_connection(connection.connection)
            failing += connection.consecutive_failures >= limits["failure_threshold"]
            stale += now - connection.healthy_since > limits["freshness_threshold_seconds"]
        yield GaugeMetricFamily(
            "calabi_sync_overflow_connections_failing",
            "Connections beyond the series budget whose failed jobs in a row reached their failure threshold.",
            value=failing,
        )
        yield GaugeMetricFamily(
            "calabi_sync_overflow_connections_stale",
            "Connections beyond the series budget without a success for longer than their freshness threshold.",
            value=stale,
        )

    def _s3_metrics(self, snap: MetricsSnapshot) -> Iterator[Metric]:
        export = snap.export
        objects = CounterMetricFamily(
            "calabi_exporter_s3_exported_objects", "Objects uploaded to S3, by outcome.", labels=["outcome"]
        )
        objects.add_metric(["success"], export.exported_objects)
        objects.add_metric(["failure"], export.failed_objects)
        yield objects
        if export.last_success is not None:
            yield GaugeMetricFamily(
                "calabi_exporter_s3_export_last_success_timestamp_seconds",
                "When an S3 export batch was last uploaded.",
                value=export.last_success,
            )
        lag = 0.0 if export.oldest_waiting is None else max(self._clock() - export.oldest_waiting, 0.0)
        yield GaugeMetricFamily(
            "calabi_exporter_s3_export_lag_seconds",
            "Age of the oldest finished job not exported to S3 yet (0: all exported).",
            value=lag,
        )

    def _webhook_metrics(self, snap: MetricsSnapshot) -> Iterator[Metric]:
        deliveries = CounterMetricFamily(
            "calabi_exporter_webhook_deliveries",
            "Status-change webhook delivery attempts by outcome: delivered, failed (to be retried), dead_lettered.",
            labels=["endpoint", "outcome"],
        )
        depth = GaugeMetricFamily(
            "calabi_exporter_webhook_queue_depth", "Status changes waiting to be delivered.", labels=["endpoint"]
        )
        for endpoint in sorted(self._webhook_endpoints):
            for outcome in ("delivered", "failed", "dead_lettered"):
                deliveries.add_metric([endpoint, outcome], snap.webhook_counts.get((endpoint, outcome), 0))
            depth.add_metric([endpoint], snap.webhook_depth.get(endpoint, 0))
        yield deliveries
        yield depth
