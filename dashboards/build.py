"""Grafana dashboards as code: writes dashboards/*.json from grafana-foundation-sdk builders.

Run from the project root after changing a panel::

    .venv/bin/python dashboards/build.py

The JSON files are committed; a test fails when they differ from what this writes.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Final

from calabi_exporter.model import SUMMARY_FIELDS

# The SDK deprecates its classic dashboard model in favour of the v2 schema, which Grafana's file
# provisioning loads only behind feature flags; the classic JSON loads in every current Grafana.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Prefer using dashboardv2", category=DeprecationWarning)
    from grafana_foundation_sdk.builders import (
        dashboard,
        logs,
        loki,
        prometheus,
        stat,
        statushistory,
        table,
        timeseries,
    )
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import (
        DataSourceRef,
        DataTransformerConfig,
        DynamicConfigValue,
        Threshold,
        ThresholdsMode,
        ValueMap,
        ValueMappingResult,
        VariableRefresh,
    )

HERE: Final = Path(__file__).resolve().parent
PROMETHEUS: Final = DataSourceRef(type_val="prometheus", uid="prometheus")
LOKI: Final = DataSourceRef(type_val="loki", uid="loki")
SELECTOR: Final = 'connection=~"$connection"'
#: Job logs of the selected connections. `connection` is filtered in the pipeline, not the stream
#: selector: it is an index label with the project's Loki otlp_config but structured metadata with
#: Loki's default OTLP mapping, and a label filter reads both.
JOB_LOGS: Final = '{service_name="calabi-connect"} | ' + SELECTOR
#: A line Loki took at another time than its own carries its true time as `log_time`: shown first.
TRUE_TIME: Final = '| line_format "{{ if .log_time }}[{{ .log_time }}] {{ end }}{{ __line__ }}"'
SYNC_JOBS_UID: Final = "calabi-sync-jobs"
SYNC_JOB_UID: Final = "calabi-sync-job"
EXPORTER_UID: Final = "calabi-exporter"
TAGS: Final = ["calabi-connect", "sync-jobs"]


def _base(title: str, uid: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .tags(TAGS)
        .editable()
        .readonly()
        .refresh("30s")
        .time("now-24h", "now")
        .timezone("browser")
    )


def _promql(expr: str, legend: str = "", *, instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id("A")
    return query.instant() if instant else query.range()


# The product's status look: Succeeded green check, Failed red X, Running blue spinner,
# Cancelled grey dash, Pending yellow clock.
STATUS_LOOK: Final = {
    "succeeded": ("✔ Succeeded", "green"),
    "failed": ("✖ Failed", "red"),
    "running": ("⟳ Running", "blue"),
    "cancelled": ("— Cancelled", "gray"),
    "pending": ("◷ Pending", "yellow"),
}


def _status_mappings() -> list[ValueMap]:
    return [
        ValueMap(
            options={
                status: ValueMappingResult(text=text, color=color, index=i)
                for i, (status, (text, color)) in enumerate(STATUS_LOOK.items())
            }
        )
    ]


def _timeseries(title: str, unit: str) -> timeseries.Panel:
    """A half-width Prometheus time series panel."""
    return timeseries.Panel().title(title).datasource(PROMETHEUS).unit(unit).height(8).span(12)


def _gained(selector: str) -> str:
    """How much the selected counters grew over the dashboard's time range, exactly.

    The exporter's counters never go backwards (they live in its store), so the
    difference with their value one range ago is exact, and a connection that
    appeared within the range counts in full; increase() would extrapolate to the
    range's edges and drop a new series' first value.
    """
    return f"sum({selector}) - (sum({selector} offset $__range) or vector(0))"


def _stat(title: str, expr: str, unit: str, *, width: int = 3, height: int = 4, legend: str = "") -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .datasource(PROMETHEUS)
        .unit(unit)
        .height(height)
        .span(width)
        .with_target(_promql(expr, legend, instant=True))
    )


def _per_connection(metric: str) -> str:
    """A per-connection gauge of the selected connections, one series each (every exporter replica reports it)."""
    return "max by (connection) (" + metric + "{" + SELECTOR + "})"


def _burn_rate(window: str) -> str:
    """Failed share of finished jobs over ``window`` per share the objective allows: 1 spends the budget in 30 days.

    The recording rules of alerting-rules/calabi-slo.rules.yml give the failed share.
    """
    return (
        "connection:calabi_sync_job_errors:ratio" + window + "{" + SELECTOR + "}"
        " / on (connection) (1 - " + _per_connection("calabi_sync_slo_objective") + ")"
    )


def sync_jobs() -> dashboard.Dashboard:
    """The product's Jobs page: every job across connections, scoped by the Platform and Connection dropdowns.

    Platform narrows the Connection dropdown (through ``calabi_sync_connection_info{platform}``),
    which scopes every panel: one variable's choice reaches all panels without a join in each query.
    """
    platform = (
        dashboard.QueryVariable("platform")
        .label("Platform")
        .datasource(PROMETHEUS)
        .query("label_values(calabi_sync_connection_info, platform)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    connection = (
        dashboard.QueryVariable("connection")
        .label("Connection")
        .datasource(PROMETHEUS)
        .query('label_values(calabi_sync_connection_info{platform=~"$platform"}, connection)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    status = (
        dashboard.CustomVariable("status")
        .label("Status")
        .values("succeeded,failed,cancelled")
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )

    def jobs(status: str) -> str:
        return _gained("calabi_sync_jobs_total{" + SELECTOR + f', status="{status}"' + "}")

    board = _base("Calabi Connect / Sync Jobs", SYNC_JOBS_UID).with_variable(platform).with_variable(connection)
    board = board.with_variable(status)
    board = (
        board.with_panel(_stat("Succeeded", jobs("succeeded"), "short"))
        .with_panel(_stat("Failed", jobs("failed"), "short"))
        .with_panel(_stat("Cancelled", jobs("cancelled"), "short"))
        .with_panel(_stat("Running", "sum(calabi_sync_jobs_in_progress{" + SELECTOR + ', status="running"})', "short"))
        .with_panel(_stat("Pending", "sum(calabi_sync_jobs_in_progress{" + SELECTOR + ', status="pending"})', "short"))
        .with_panel(
            _stat(
                "Success rate",
                "("
                + jobs("succeeded")
                + ") / ("
                + _gained("calabi_sync_jobs_total{" + SELECTOR + ', status=~"succeeded|failed"}')
                + ")",
                "percentunit",
            )
        )
        .with_panel(
            _stat(
                "Records synced",
                _gained("calabi_sync_records_synced_total{" + SELECTOR + "}"),
                "short",
                width=4,
            )
        )
        .with_panel(
            _stat(
                "Records failed",
                _gained("calabi_sync_records_failed_total{" + SELECTOR + "}"),
                "short",
                width=4,
            )
        )
        .with_panel(
            _stat(
                "Bytes synced",
                _gained("calabi_sync_bytes_synced_total{" + SELECTOR + "}"),
                "bytes",
                width=4,
            )
        )
    )
    jobs_table = (
        table.Panel()
        .title("Jobs")
        .description(
            "One row per finished job, from the job_summary events in Loki, with its true finish time;"
            " a row opens the job."
        )
        .datasource(LOKI)
        .unit("short")
        .height(10)
        .span(24)
        .with_target(loki.Dataquery().expr(JOB_LOGS + ' | event="job_summary" | status=~"$status"').ref_id("A"))
        .data_links([_job_link()])
        .mappings(_status_mappings())
        .with_transformation(DataTransformerConfig(id_val="extractFields", options={"source": "labels"}))
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={
                    "includeByName": {
                        name: True
                        for name in (
                            "finished_at",
                            "connection",
                            "job_id",
                            "status",
                            *SUMMARY_FIELDS,
                        )
                    }
                },
            )
        )
    )
    board = board.with_panel(jobs_table)
    board = board.with_panel(
        statushistory.Panel()
        .title("Latest job status by connection")
        .datasource(PROMETHEUS)
        .unit("short")
        .height(8)
        .span(24)
        .mappings(
            [
                ValueMap(
                    options={
                        str(i): ValueMappingResult(text=text, color=color, index=i)
                        for i, (text, color) in enumerate(
                            [STATUS_LOOK["succeeded"], STATUS_LOOK["failed"], STATUS_LOOK["cancelled"]], start=1
                        )
                    }
                )
            ]
        )
        .with_target(
            _promql(
                # 1 succeeded, 2 failed, 3 cancelled: one value per connection, mapped to the product's look.
                "max by (connection) ("
                "1 * calabi_sync_last_job_status{" + SELECTOR + ', status="succeeded"} == 1'
                " or 2 * (calabi_sync_last_job_status{" + SELECTOR + ', status="failed"} == 1)'
                " or 3 * (calabi_sync_last_job_status{" + SELECTOR + ', status="cancelled"} == 1))',
                "{{connection}}",
            )
        )
    )
    board = (
        board.with_panel(
            _timeseries("Job duration p50 / p95", "s")
            .with_target(
                _promql(
                    "histogram_quantile(0.5, sum by (connection, le) "
                    "(rate(calabi_sync_job_duration_seconds_bucket{" + SELECTOR + "}[$__rate_interval])))",
                    "p50 {{connection}}",
                )
            )
            .with_target(
                _promql(
                    "histogram_quantile(0.95, sum by (connection, le) "
                    "(rate(calabi_sync_job_duration_seconds_bucket{" + SELECTOR + "}[$__rate_interval])))",
                    "p95 {{connection}}",
                ).ref_id("B")
            )
        )
        .with_panel(
            _timeseries("Consecutive failures", "short").with_target(
                _promql("max by (connection) (calabi_sync_consecutive_failures{" + SELECTOR + "})")
            )
        )
        .with_panel(
            table.Panel()
            .title("Connections without a successful sync in 3 days")
            .datasource(PROMETHEUS)
            .unit("s")
            .height(8)
            .span(12)
            .with_target(_promql("connection:calabi_sync_seconds_since_success:over3d{" + SELECTOR + "}", instant=True))
        )
        .with_panel(
            table.Panel()
            .title("Running and pending now, by age")
            .datasource(PROMETHEUS)
            .unit("s")
            .height(8)
            .span(12)
            .with_target(
                _promql(
                    "time() - max by (connection, status) "
                    "(calabi_sync_oldest_job_start_timestamp_seconds{" + SELECTOR + "})",
                    instant=True,
                )
            )
        )
    )
    return _reliability(_schedule_and_volume(board))


def _schedule_and_volume(board: dashboard.Dashboard) -> dashboard.Dashboard:
    """What each connection usually does, against what it did last: its schedule and its volume."""
    overdue = (
        _timeseries("Time since last success vs overdue threshold", "s")
        .description(
            "How long ago each connection's newest job succeeded, against its overdue threshold: past it the"
            " connection is late by its own rhythm (CalabiSyncOverdue). The threshold follows from the usual"
            " interval between successes, shown too: declared in the configuration, reported by the platform,"
            " or learned from the connection's newest successes. Without any of these a connection has no"
            " threshold and is held to its fixed freshness threshold alone (CalabiSyncStale)."
        )
        .with_target(
            _promql(
                "time() - " + _per_connection("calabi_sync_last_success_timestamp_seconds"),
                "since last success {{connection}}",
            )
        )
    )
    for ref, metric, legend in (
        ("B", "calabi_sync_overdue_threshold_seconds", "overdue after {{connection}}"),
        ("C", "calabi_sync_expected_interval_seconds", "usual interval {{connection}}"),
    ):
        overdue = overdue.with_target(_promql(_per_connection(metric), legend).ref_id(ref))
    volume = (
        _timeseries("Newest success: records vs usual", "short")
        .description(
            "Records the newest successful job of each connection moved, against its usual count (the median of"
            " its earlier successes), and on the right axis the score: how many robust spreads the newest count"
            " lies from the usual, negative when fewer. Far below the usual and strongly negative raises"
            " CalabiSyncVolumeDrop. Resets are left out; absent until the connection has enough successes to"
            " learn from, or when its syncs usually move nothing."
        )
        .override_by_query(
            "C",
            [
                DynamicConfigValue(id_val="unit", value="none"),
                DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
            ],
        )
    )
    for ref, metric, legend in (
        ("A", "calabi_sync_last_success_records", "newest {{connection}}"),
        ("B", "calabi_sync_records_expected", "usual {{connection}}"),
        ("C", "calabi_sync_last_success_records_score", "score {{connection}}"),
    ):
        volume = volume.with_target(_promql(_per_connection(metric), legend).ref_id(ref))
    return board.with_panel(overdue).with_panel(volume)


def _reliability(board: dashboard.Dashboard) -> dashboard.Dashboard:
    """Reliability (SLO): the job-error objective, its 30-day error budget and burn rate, and freshness.

    The windowed series come from the recording rules of alerting-rules/calabi-slo.rules.yml.
    """
    budget_colours = (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(None, "red"), Threshold(0, "yellow"), Threshold(0.25, "green")])
    )
    return (
        board.with_row(dashboard.Row("Reliability (SLO)"))
        .with_panel(
            _stat(
                "SLO objective",
                _per_connection("calabi_sync_slo_objective"),
                "percentunit",
                width=6,
                height=8,
                legend="{{connection}}",
            ).description(
                "The share of each connection's finished jobs that should succeed over 30 days (99 % by default)."
                " The rest is the error budget: the failures the connection may have in 30 days."
            )
        )
        .with_panel(
            _stat(
                "Error budget left, 30 days",
                "connection:calabi_sync_error_budget:remaining30d{" + SELECTOR + "}",
                "percentunit",
                width=9,
                height=8,
                legend="{{connection}}",
            )
            .description(
                "How much of the 30-day error budget each connection has left: 100 % without a failed job, 0 % with"
                " exactly as many failures as the objective allows, below 0 the objective is missed."
                " Yellow under 25 %, red below 0. Absent for a connection without a finished job in 30 days."
            )
            .thresholds(budget_colours)
        )
        .with_panel(
            _stat(
                "Freshness SLI, 30 days",
                "connection:calabi_sync_fresh:ratio30d{" + SELECTOR + "}",
                "percentunit",
                width=9,
                height=8,
                legend="{{connection}}",
            ).description(
                "Share of the last 30 days in which each connection was fresh: its latest success within its"
                " overdue threshold (connection:calabi_sync_fresh:bool, over the time Prometheus recorded it)."
                " Absent for a connection without an overdue threshold."
            )
        )
        .with_panel(
            _timeseries("Error budget burn rate, 1 h and 6 h", "short")
            .span(24)
            .description(
                "The failed share of finished jobs over the last hour and the last six hours, divided by the share"
                " the objective allows: at 1 the budget lasts exactly 30 days, at 10 it is gone in three."
                " CalabiSyncErrorBudgetBurn fires when a long and a short window both burn fast (its rates are"
                " in alerting-rules/build.py); a short spike in the 1 h line alone spends little."
            )
            .with_target(_promql(_burn_rate("1h"), "1 h {{connection}}"))
            .with_target(_promql(_burn_rate("6h"), "6 h {{connection}}").ref_id("B"))
        )
    )


def _job_link() -> dashboard.DashboardLink:
    """From a jobs-table row to that job's detail, keeping the time range."""
    return dashboard.DashboardLink("Open job ${__data.fields.job_id}").url(
        f"/d/{SYNC_JOB_UID}/calabi-sync-job?var-job_id=${{__data.fields.job_id}}&${{__url_time_range}}"
    )


def sync_job() -> dashboard.Dashboard:
    """One job's Summary and Logs."""
    job_id = dashboard.TextBoxVariable("job_id").label("Job ID")
    level = (
        dashboard.CustomVariable("level")
        .label("Level")
        .values("info,warn,error,debug")
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    search = dashboard.TextBoxVariable("search").label("Search")
    summary = '{service_name="calabi-connect"} | event="job_summary" | job_id="$job_id"'
    board = _base("Calabi Connect / Job Detail", SYNC_JOB_UID).with_variable(job_id).with_variable(level)
    board = board.with_variable(search)
    for title, field, unit in (
        ("Records Synced", "records_synced", "short"),
        ("Records Failed", "records_failed", "short"),
        ("Bytes Synced", "bytes_synced", "bytes"),
        ("Duration", "duration_seconds", "s"),
        ("Streams Succeeded", "streams_succeeded", "short"),
        ("Streams Failed", "streams_failed", "short"),
    ):
        board = board.with_panel(_summary_stat(title, field, unit, summary))
    board = board.with_panel(
        table.Panel()
        .title("Streams")
        .description("Each stream's result as the job's log lines report it: 'Stream X: N records synced in Ts'.")
        .datasource(LOKI)
        .unit("short")
        .height(8)
        .span(24)
        .with_target(
            loki.Dataquery()
            .expr(
                '{service_name="calabi-connect"} | job_id="$job_id" | event="log" | stream!=""'
                ' | regexp "^Stream (?P<stream_name>.+?): (?P<records>[0-9,]+) records? synced'
                ' in (?P<seconds>[0-9.]+)s"'
            )
            .ref_id("A")
        )
        .with_transformation(DataTransformerConfig(id_val="extractFields", options={"source": "labels"}))
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={"includeByName": {"Time": True, "stream_name": True, "records": True, "seconds": True}},
            )
        )
    )
    board = board.with_panel(
        logs.Panel()
        .title("Logs")
        .datasource(LOKI)
        .height(16)
        .span(24)
        .show_time(True)
        .wrap_log_message(True)
        .with_target(
            loki.Dataquery()
            .expr(
                '{service_name="calabi-connect"} | job_id="$job_id" | event="log"'
                ' | detected_level=~"$level" |= "$search" ' + TRUE_TIME
            )
            .ref_id("A")
        )
    )
    return board


def _summary_stat(title: str, field: str, unit: str, summary: str) -> stat.Panel:
    """One Summary number of the job, read from the structured metadata of its job_summary event."""
    return (
        stat.Panel()
        .title(title)
        .datasource(LOKI)
        .unit(unit)
        .height(4)
        .span(4)
        .with_target(loki.Dataquery().expr(summary).ref_id("A"))
        .with_transformation(DataTransformerConfig(id_val="extractFields", options={"source": "labels"}))
        .with_transformation(
            DataTransformerConfig(
                id_val="convertFieldType",
                options={"conversions": [{"targetField": field, "destinationType": "number"}]},
            )
        )
        .reduce_options(_last_of(field))
    )


def _last_of(field: str) -> object:
    from grafana_foundation_sdk.builders.common import ReduceDataOptions

    return ReduceDataOptions().calcs(["lastNotNull"]).fields(f"/^{field}$/")


def exporter() -> dashboard.Dashboard:
    """The exporter's own health: ingest, store, log shipping, scrapes."""
    board = _base("Calabi Connect / Exporter", EXPORTER_UID)
    return (
        board.with_panel(
            _timeseries("Ingested records by outcome", "reqps").with_target(
                _promql(
                    "sum by (endpoint, outcome) (rate(calabi_exporter_ingested_records_total[$__rate_interval]))",
                    "{{endpoint}} {{outcome}}",
                )
            )
        )
        .with_panel(
            _timeseries("Rejected records by field", "reqps").with_target(
                _promql(
                    "sum by (endpoint, field) (rate(calabi_exporter_rejected_records_total[$__rate_interval]))",
                    "{{endpoint}} {{field}}",
                )
            )
        )
        .with_panel(_stat("Stored jobs", "sum(calabi_exporter_stored_jobs)", "short", width=6))
        .with_panel(_stat("Store size", "max(calabi_exporter_store_size_bytes)", "bytes", width=6))
        .with_panel(_stat("Log outbox", "sum(calabi_exporter_log_outbox_records)", "short", width=6))
        .with_panel(
            _timeseries("Log shipping outcomes", "reqps").with_target(
                _promql("sum by (outcome) (rate(calabi_exporter_log_records_total[$__rate_interval]))", "{{outcome}}")
            )
        )
        .with_panel(_stat("S3 export lag", "max(calabi_exporter_s3_export_lag_seconds)", "s", width=6))
        .with_panel(_stat("Webhook queue", "sum(calabi_exporter_webhook_queue_depth)", "short", width=6))
        .with_panel(
            _timeseries("Webhook deliveries", "reqps").with_target(
                _promql(
                    "sum by (endpoint, outcome) (rate(calabi_exporter_webhook_deliveries_total[$__rate_interval]))",
                    "{{endpoint}} {{outcome}}",
                )
            )
        )
        .with_panel(
            _timeseries("Source polls by outcome", "reqps").with_target(
                _promql(
                    "sum by (source, outcome) (rate(calabi_exporter_source_polls_total[$__rate_interval]))",
                    "{{source}} {{outcome}}",
                )
            )
        )
        .with_panel(
            _timeseries("Scrape duration", "s").with_target(
                _promql('scrape_duration_seconds{job="calabi-exporter"}', "{{instance}}")
            )
        )
        .with_panel(_stat("Samples per scrape", "max(calabi_exporter_series)", "short", width=6))
        .with_panel(
            _stat(
                "Jobs past the series budget",
                "sum(increase(calabi_exporter_cardinality_overflow_total[$__range]))",
                "short",
                width=6,
            )
        )
        .with_panel(
            table.Panel()
            .title("Build")
            .datasource(PROMETHEUS)
            .unit("short")
            .height(4)
            .span(12)
            .with_target(_promql("calabi_exporter_build_info", instant=True))
        )
    )


DASHBOARDS: Final[dict[str, Callable[[], dashboard.Dashboard]]] = {
    "calabi-sync-jobs.json": sync_jobs,
    "calabi-sync-job.json": sync_job,
    "calabi-exporter.json": exporter,
}


def render(factory: Callable[[], dashboard.Dashboard]) -> str:
    """The dashboard's JSON text, stable key order, as committed."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Prefer using dashboardv2", category=DeprecationWarning)
        built = factory().build()
    model = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(built))
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    for name, factory in DASHBOARDS.items():
        (HERE / name).write_text(render(factory), encoding="utf-8")
        print(f"wrote dashboards/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
