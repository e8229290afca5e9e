"""The job metric families the demo must show with a non-zero value: its test and its benchmark wait for them."""

from __future__ import annotations

from .samples import parse_samples

#: Every family a job's records feed, each of which the demo's simulated history makes non-zero.
JOB_FAMILIES = [
    "calabi_sync_jobs_total",
    "calabi_sync_jobs_in_progress",
    "calabi_sync_job_duration_seconds_count",
    "calabi_sync_records_synced_total",
    "calabi_sync_records_failed_total",
    "calabi_sync_bytes_synced_total",
    "calabi_sync_streams_total",
    "calabi_sync_stream_records_synced_total",
    "calabi_sync_stream_last_status",
    "calabi_sync_consecutive_failures",
    "calabi_sync_last_success_timestamp_seconds",
    "calabi_sync_last_failure_timestamp_seconds",
    "calabi_sync_last_job_status",
    "calabi_sync_last_job_records_synced",
    "calabi_sync_last_job_records_failed",
    "calabi_sync_last_job_bytes_synced",
    "calabi_sync_last_job_duration_seconds",
    "calabi_sync_last_job_streams_succeeded",
    "calabi_sync_last_job_streams_failed",
    "calabi_sync_last_job_info",
    "calabi_sync_oldest_job_start_timestamp_seconds",
    "calabi_sync_connection_info",
    "calabi_sync_failure_threshold",
    "calabi_sync_freshness_threshold_seconds",
    "calabi_sync_log_lines_total",
    "calabi_sync_errors_total",
    "calabi_sync_rate_limit_usage_ratio",
    "calabi_sync_expected_interval_seconds",
    "calabi_sync_overdue_threshold_seconds",
    "calabi_sync_records_expected",
    "calabi_sync_last_success_records",
    "calabi_sync_last_success_records_score",
    "calabi_sync_slo_objective",
]


def families_without_a_nonzero_value(text: str) -> list[str]:
    """The names in :data:`JOB_FAMILIES` that the scrape ``text`` has no non-zero sample of."""
    samples = parse_samples(text)
    return [name for name in JOB_FAMILIES if not any(v != 0 for v in samples.family(name).values())]
