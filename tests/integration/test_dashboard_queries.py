"""Every PromQL query of the dashboards runs against a real Prometheus that scraped a known data set."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.exporter_process import ExporterProcess
from tests.support.jobs import job
from tests.support.paths import ROOT
from tests.support.prometheus_checks import SF, STRIPE, post, settled
from tests.support.prometheus_server import Prometheus
from tests.support.waiting import wait_until


def promql_targets() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, expr) of every Prometheus target and query variable."""
    out = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        for panel in board["panels"]:
            if panel["datasource"]["type"] == "prometheus":
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


#: What each query variable lists for the jobs below (the product's own: platform calabi).
VARIABLE_VALUES = {"connection": sorted([SF, STRIPE]), "platform": ["calabi"]}


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
    prometheus = prometheus_for(
        f"127.0.0.1:{exporter.port}", rule_files=[ROOT / "alerting-rules" / "calabi-sync.rules.yml"]
    )
    wait_until(settled(prometheus, "sum(calabi_sync_jobs_total)", 2), timeout=30, what="the first jobs in Prometheus")
    time.sleep(2)  # a few scrapes of the starting values, so that increase() sees the next ones
    post(
        exporter,
        job("sf1", started_at="2026-04-06T08:00:00Z", finished_at="2026-04-06T08:01:42Z", records_synced=100),
        job("sf2", "failed", started_at="2026-04-06T09:00:00Z", failed_at="2026-04-06T09:03:16Z", records_failed=4),
        job("sf3", started_at="2026-04-06T10:00:00Z", finished_at="2026-04-06T10:00:30Z", records_synced=50),
        job("sf4", "running", started_at="2026-04-06T11:00:00Z"),
        job("st1", "pending", connection=STRIPE, created_at="2026-04-06T11:00:00Z"),
    )
    rejected = requests.post(exporter.url + "/api/v1/jobs", json=job("bad", "exploded"), timeout=10)
    assert rejected.status_code == 400
    wait_until(settled(prometheus, "sum(calabi_sync_jobs_total)", 5), timeout=30, what="the next jobs in Prometheus")
    time.sleep(3)  # rate() needs two samples after the change

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
            "Succeeded": 4,
            "Failed": 1,
            "Cancelled": 0,
            "Running": 1,
            "Pending": 1,
            "Success rate": 0.8,
            "Records synced": 150,
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
    }
    for connection, stats in expected.items():
        assert {title: value(title, connection) for title in stats} == stats, connection
