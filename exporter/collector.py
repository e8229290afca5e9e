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
from typing import Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    Sample,
)
from prometheus_client.registry import Collector

from . import __version__
from .aggregates import ConnectionAgg
from .lifecycle import OUTCOMES
from .logsignals import ERROR_KINDS
from .model import ACTIVE_STATUSES, FAILED, FINISHED_STATUSES, SUCCEEDED
from .store import MetricsSnapshot
from .timeutil import Clock, system_clock

STREAM_STATUSES: Final = (SUCCEEDED, FAILED, "cancelled")
INGEST_ENDPOINTS: Final = ("jobs", "logs", "webhook")
LOG_LEVELS: Final = ("info", "warn", "error", "debug")


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
class Thresholds:
    """Alerting thresholds per connection, from the configuration; exposed as gauges for the alert rules."""

    failure_threshold: int = 2
    freshness_threshold_seconds: float = 3 * 24 * 3600
    stuck_floor_seconds: float = 3600
    pending_threshold_seconds: float = 1800
    overrides: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

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
    ) -> None:
        """``s3_export`` and ``webhook_endpoints``: the features whose metrics are exposed (configured ones only)."""
        self._snapshot = snapshot
        self._thresholds = thresholds
        self._clock = clock
        self._s3_export = s3_export
        self._webhook_endpoints = tuple(webhook_endpoints)

    def describe(self) -> list[Metric]:
        # Describing must not touch the store: registration happens at start-up.
        return []

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        conns = sorted(snap.connections, key=lambda c: c.connection)

        jobs = CounterMetricFamily(
            "calabi_sync_jobs", "Finished sync jobs by final status.", labels=["connection", "status"]
        )
        durations = HistogramMetricFamily(
            "calabi_sync_job_duration_seconds",
            "Wall-clock duration of finished sync jobs, start to end.",
            labels=["connection", "status"],
        )
        records = CounterMetricFamily(
            "calabi_sync_records_synced", "Rows written to the destination by finished jobs.", labels=["connection"]
        )
        records_failed = CounterMetricFamily(
            "calabi_sync_records_failed",
            "Rows finished jobs could not write (schema mismatch, type errors).",
            labels=["connection"],
        )
        bytes_synced = CounterMetricFamily(
            "calabi_sync_bytes_synced", "Compressed bytes processed by finished jobs.", labels=["connection"]
        )
        streams = CounterMetricFamily(
            "calabi_sync_streams", "Stream results of finished jobs.", labels=["connection", "status"]
        )
        consecutive = GaugeMetricFamily(
            "calabi_sync_consecutive_failures",
            "Failed jobs since the connection's latest success, by finish time; cancelled jobs neither add nor reset.",
            labels=["connection"],
        )
        last_success = GaugeMetricFamily(
            "calabi_sync_last_success_timestamp_seconds",
            "End time of the connection's latest succeeded job.",
            labels=["connection"],
        )
        last_failure = GaugeMetricFamily(
            "calabi_sync_last_failure_timestamp_seconds",
            "End time of the connection's latest failed job.",
            labels=["connection"],
        )
        last_status = GaugeMetricFamily(
            "calabi_sync_last_job_status",
            "1 for the status of the connection's latest finished job, 0 for the others.",
            labels=["connection", "status"],
        )
        last_values = {
            name: GaugeMetricFamily(f"calabi_sync_last_job_{name}", help_text, labels=["connection"])
            for name, help_text in (
                ("records_synced", "Records Synced of the connection's latest finished job."),
                ("records_failed", "Records Failed of the connection's latest finished job."),
                ("bytes_synced", "Bytes Synced of the connection's latest finished job."),
                ("duration_seconds", "Duration of the connection's latest finished job."),
                ("streams_succeeded", "Streams Succeeded of the connection's latest finished job."),
                ("streams_failed", "Streams Failed of the connection's latest finished job."),
            )
        }
        last_info = GaugeMetricFamily(
            "calabi_sync_last_job_info",
            "The connection's latest finished job, for alert messages (always 1).",
            labels=["connection", "job_id", "status", "error_summary", "job_url"],
        )
        info = GaugeMetricFamily(
            "calabi_sync_connection_info",
            "Connection metadata (always 1).",
            labels=["connection", "connection_id", "source", "destination"],
        )
        first_seen = GaugeMetricFamily(
            "calabi_sync_connection_first_seen_timestamp_seconds",
            "The earliest time of the connection's jobs, or when the exporter first heard of it if earlier: "
            "the staleness clock until it first succeeds.",
            labels=["connection"],
        )
        thresholds = {
            key: GaugeMetricFamily(name, help_text, labels=["connection"])
            for key, (name, help_text) in THRESHOLD_METRICS.items()
        }

        for c in conns:
            name = c.connection
            for status in FINISHED_STATUSES:
                jobs.add_metric([name, status], c.jobs[status])
                histogram = c.durations.get(status)
                if histogram is not None:
                    durations.add_metric([name, status], histogram.cumulative(), histogram.total)
            records.add_metric([name], c.records_synced)
            records_failed.add_metric([name], c.records_failed)
            bytes_synced.add_metric([name], c.bytes_synced)
            streams.add_metric([name, SUCCEEDED], c.streams_succeeded)
            streams.add_metric([name, FAILED], c.streams_failed)
            consecutive.add_metric([name], c.consecutive_failures)
            if c.last_success_at is not None:
                last_success.add_metric([name], c.last_success_at)
            if c.last_failure_at is not None:
                last_failure.add_metric([name], c.last_failure_at)
            if c.last_job_status is not None:
                for status in FINISHED_STATUSES:
                    last_status.add_metric([name, status], 1.0 if c.last_job_status == status else 0.0)
                for key, family in last_values.items():
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
            for key, value in self._thresholds.for_connection(name).items():
                thresholds[key].add_metric([name], value)

        yield jobs
        yield from self._active(snap, conns)
        yield durations
        yield records
        yield records_failed
        yield bytes_synced
        yield streams
        yield from self._streams(snap)
        yield consecutive
        yield last_success
        yield last_failure
        yield last_status
        yield from last_values.values()
        yield last_info
        yield info
        yield first_seen
        yield from thresholds.values()
        yield from self._logs(snap, conns)
        yield from self._exporter(snap)

    def _active(self, snap: MetricsSnapshot, conns: list[ConnectionAgg]) -> Iterator[Metric]:
        in_progress = GaugeMetricFamily(
            "calabi_sync_jobs_in_progress", "Jobs queued (pending) or running now.", labels=["connection", "status"]
        )
        oldest = GaugeMetricFamily(
            "calabi_sync_oldest_job_start_timestamp_seconds",
            "Queue time of the oldest pending job, or start time of the oldest running job.",
            labels=["connection", "status"],
        )
        active = {(a.connection, a.status): a for a in snap.active}
        for c in conns:
            for status in ACTIVE_STATUSES:
                entry = active.get((c.connection, status))
                in_progress.add_metric([c.connection, status], entry.count if entry else 0)
                if entry is not None:
                    oldest.add_metric([c.connection, status], entry.oldest_since)
        yield in_progress
        yield oldest

    def _streams(self, snap: MetricsSnapshot) -> Iterator[Metric]:
        records = CounterMetricFamily(
            "calabi_sync_stream_records_synced",
            "Rows written per stream by finished jobs.",
            labels=["connection", "stream"],
        )
        last = GaugeMetricFamily(
            "calabi_sync_stream_last_status",
            "1 for the stream's latest status, 0 for the others.",
            labels=["connection", "stream", "status"],
        )
        # The largest families (connections × streams): samples are appended
        # directly, skipping add_metric's per-sample label checks; the label
        # names are the family's own.
        records_samples, last_samples = records.samples, last.samples
        for s in sorted(snap.streams, key=lambda s: (s.connection, s.stream)):
            records_samples.append(
                Sample(
                    "calabi_sync_stream_records_synced_total",
                    {"connection": s.connection, "stream": s.stream},
                    s.records_synced,
                )
            )
            if s.last_status is not None:
                for status in STREAM_STATUSES:
                    last_samples.append(
                        Sample(
                            "calabi_sync_stream_last_status",
                            {"connection": s.connection, "stream": s.stream, "status": status},
                            1.0 if s.last_status == status else 0.0,
                        )
                    )
        yield records
        yield last

    def _logs(self, snap: MetricsSnapshot, conns: list[ConnectionAgg]) -> Iterator[Metric]:
        lines = CounterMetricFamily(
            "calabi_sync_log_lines", "Job log lines stored, by level.", labels=["connection", "level"]
        )
        errors = CounterMetricFamily(
            "calabi_sync_errors",
            "Errors by kind, from ERROR log lines and from failed jobs' error summaries (one each).",
            labels=["connection", "kind"],
        )
        usage = GaugeMetricFamily(
            "calabi_sync_rate_limit_usage_ratio",
            "Latest share of the source API's rate limit a log line reported as used (0 to 1).",
            labels=["connection"],
        )
        counts = snap.log_counts
        for c in conns:
            name = c.connection
            for level in LOG_LEVELS:
                lines.add_metric([name, level], counts.get((name, "level", level), 0))
            for kind in ERROR_KINDS:
                errors.add_metric([name, kind], counts.get((name, "error", kind), 0))
            ratio = snap.rate_limits.get(name)
            if ratio is not None:
                usage.add_metric([name], ratio)
        yield lines
        yield errors
        yield usage

    def _exporter(self, snap: MetricsSnapshot) -> Iterator[Metric]:
        build = GaugeMetricFamily("calabi_exporter_build_info", "Exporter version (always 1).", labels=["version"])
        build.add_metric([__version__], 1.0)
        yield build
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
