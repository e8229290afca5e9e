"""Every PromQL query of the dashboards runs against a real Prometheus that scraped a known data set."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import yaml
from calabi_exporter.timeutil import format_rfc3339

from tests.support.exporter_process import ExporterProcess
from tests.support.jobs import job
from tests.support.paths import ROOT, RULE_FILES
from tests.support.prometheus_checks import SF, STRIPE, post, settled
from tests.support.prometheus_server import Prometheus
from tests.support.waiting import wait_until


def promql_targets() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, expr) of every Prometheus target and query variable."""
    out = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        for panel in board["panels"]:
            if panel["type"] != "row" and panel["datasource"]["type"] == "prometheus":
                out += [(board["uid"], panel["title"], t["expr"]) for t in panel["targets"]]
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("type") == "query" and variable["datasource"]["type"] == "prometheus":
                out.append((board["uid"], f"variable {variable['name']}", variable["query"]))
    return out


def substitute(expr: str, connection: str) -> str:
    """The query Grafana sends for ``connection`` with every other variable at All."""
    return (
        expr.replace("$connection", connection)
        .replace("$platform", ".*")
        .replace("$status", ".*")
        .replace("$__rate_interval", "1m")
        .replace("$__range", "10m")
    )


HOURLY = "hourly-orders"
#: Records of its successes, oldest first: about 1,000 each, the newest as usual.
HOURLY_RECORDS = (1000, 1012, 988, 1005, 995, 1010, 990, 1003, 997, 1008, 992, 1001)

#: What each query variable lists for the jobs below (the product's own: platform calabi).
VARIABLE_VALUES = {"connection": sorted([SF, STRIPE, HOURLY]), "platform": ["calabi"]}


def hourly_orders(newest_finish: float) -> list[dict[str, Any]]:
    """An hourly connection's successes, one hour apart up to ``newest_finish``.

    Enough of them for the exporter to learn the connection's interval and usual records, so that the
    schedule, volume and freshness panels have series.
    """
    last = len(HOURLY_RECORDS) - 1
    return [
        job(
            f"ho{n}",
            connection=HOURLY,
            started_at=format_rfc3339(newest_finish - (last - n) * 3600 - 300),
            finished_at=format_rfc3339(newest_finish - (last - n) * 3600),
            records_synced=records,
        )
        for n, records in enumerate(HOURLY_RECORDS)
    ]


def rules_evaluated_every_second(tmp_path: Path) -> list[Path]:
    """The shipped rule files with every group at the test Prometheus's 1 s evaluation.

    The SLO file evaluates its 30-day group less often (it reads a month of samples); at that pace the
    error budget and freshness panels would have no series for minutes after the first jobs.
    """
    copies = []
    for path in RULE_FILES:
        rules = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in rules["groups"]:
            group.pop("interval", None)
        copy = tmp_path / path.name
        copy.write_text(yaml.safe_dump(rules, allow_unicode=True, sort_keys=False), encoding="utf-8")
        copies.append(copy)
    return copies


def test_every_promql_query_runs_and_returns_data_for_all_and_for_one_connection(
    exporter_process: Callable[..., ExporterProcess], prometheus_for: Callable[..., Prometheus], tmp_path: Path
) -> None:
    # S3 export, a webhook and the Airbyte poller configured (all unreachable), so that their panels have series.
    config = tmp_path / "calabi.yaml"
    config.write_text(
        "webhooks: [{name: ops, url: 'http://127.0.0.1:9/hook', secret: whsec-0123456789abcdef}]\n"
        "s3_export: {bucket: archive, endpoint_url: 'http://127.0.0.1:9'}\n"
        "sources: {airbyte: {api_url: 'http://127.0.0.1:9/v1', client_id: app, client_secret: secret-of-app}}\n",
        encoding="utf-8",
    )
    aws = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_EC2_METADATA_DISABLED": "true"}
    exporter = exporter_process(env={"CALABI_CONFIG": str(config), **aws})
    post(exporter, job("sf0", started_at="2026-04-06T07:00:00Z", finished_at="2026-04-06T07:01:00Z"))
    post(exporter, job("st0", connection=STRIPE, started_at="2026-04-06T07:00:00Z", finished_at="2026-04-06T07:01:00Z"))
    # Eleven hourly successes up to an hour before the newest one, which arrives with the next jobs.
    *hourly_history, hourly_newest = hourly_orders(newest_finish=time.time() // 60 * 60 - 600)
    post(exporter, *hourly_history)
    prometheus = prometheus_for(f"127.0.0.1:{exporter.port}", rule_files=rules_evaluated_every_second(tmp_path))
    wait_until(settled(prometheus, "sum(calabi_sync_jobs_total)", 13), timeout=30, what="the first jobs in Prometheus")
    time.sleep(2)  # a few scrapes of the starting values, so that increase() sees the next ones
    post(
        exporter,
        job("sf1", started_at="2026-04-06T08:00:00Z", finished_at="2026-04-06T08:01:42Z", records_synced=100),
        job("sf2", "failed", started_at="2026-04-06T09:00:00Z", failed_at="2026-04-06T09:03:16Z", records_failed=4),
        job("sf3", started_at="2026-04-06T10:00:00Z", finished_at="2026-04-06T10:00:30Z", records_synced=50),
        job("sf4", "running", started_at="2026-04-06T11:00:00Z"),
        job("st1", "pending", connection=STRIPE, created_at="2026-04-06T11:00:00Z"),
        hourly_newest,
    )
    rejected = requests.post(exporter.url + "/api/v1/jobs", json=job("bad", "exploded"), timeout=10)
    assert rejected.status_code == 400
    wait_until(settled(prometheus, "sum(calabi_sync_jobs_total)", 17), timeout=30, what="the next jobs in Prometheus")
    time.sleep(3)  # rate() needs two samples after the change
    # The 30-day error budget of the two connections that finished jobs while Prometheus watched.
    wait_until(
        settled(prometheus, "count(connection:calabi_sync_error_budget:remaining30d)", 2),
        timeout=30,
        what="the SLO recording rules",
    )

    targets = promql_targets()
    assert len(targets) >= 15
    for uid, title, expr in [t for t in targets if t[2].startswith("label_values(")]:
        # Grafana's label_values(metric, label) is the label values API, not PromQL.
        metric, label = (part.strip() for part in substitute(expr, ".*")[len("label_values(") : -1].split(","))
        response = requests.get(
            prometheus.url + f"/api/v1/label/{label}/values", params={"match[]": metric}, timeout=10
        )
        assert sorted(response.json()["data"]) == VARIABLE_VALUES[label], (uid, title)
    targets = [t for t in targets if not t[2].startswith("label_values(")]
    for connection in (".*", SF):
        for uid, title, expr in targets:
            query = substitute(expr, connection)
            response = requests.get(prometheus.url + "/api/v1/query", params={"query": query}, timeout=10)
            body = response.json()
            assert body["status"] == "success", (uid, title, query, body)
            if title in ("Connections without a successful sync in 3 days",):
                continue  # nothing is 3 days stale in this data set: an empty answer is the right one
            if title == "Scrape duration" or uid != "calabi-sync-jobs" or connection == ".*" or "variable" in title:
                assert body["data"]["result"], (uid, title, query)

    def value(title: str, connection: str) -> float:
        expr = next(e for u, t, e in targets if u == "calabi-sync-jobs" and t == title)
        result = prometheus.query(substitute(expr, connection))
        return float(result[0]["value"][1])

    expected = {
        ".*": {
            "Succeeded": 16,
            "Failed": 1,
            "Cancelled": 0,
            "Running": 1,
            "Pending": 1,
            "Success rate": 16 / 17,
            "Records synced": 150 + sum(HOURLY_RECORDS),
            "Records failed": 4,
            "Bytes synced": 0,
        },
        SF: {
            "Succeeded": 3,
            "Failed": 1,
            "Cancelled": 0,
            "Running": 1,
            "Pending": 0,
            "Success rate": 0.75,
            "Records synced": 150,
            "Records failed": 4,
            "Bytes synced": 0,
        },
        STRIPE: {
            "Succeeded": 1,
            "Failed": 0,
            "Cancelled": 0,
            "Running": 0,
            "Pending": 1,
            "Success rate": 1.0,
            "Records synced": 0,
            "Records failed": 0,
            "Bytes synced": 0,
        },
        HOURLY: {
            "Succeeded": 12,
            "Failed": 0,
            "Cancelled": 0,
            "Success rate": 1.0,
            "Records synced": sum(HOURLY_RECORDS),
            "Newest success: records vs usual": HOURLY_RECORDS[-1],
            "SLO objective": 0.99,
            "Error budget left, 30 days": 1.0,
            "Error budget burn rate, 1 h and 6 h": 0.0,
            "Freshness SLI, 30 days": 1.0,
        },
    }
    for connection, stats in expected.items():
        assert {title: value(title, connection) for title in stats} == stats, connection
