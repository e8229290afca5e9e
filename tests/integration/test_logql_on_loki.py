"""Every LogQL query of the dashboards, the runbook and docs/logs.md returns the same rows from a real Loki
with the project's ``otlp_config`` and with Loki's default OTLP mapping."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from calabi_exporter.config import Config
from calabi_exporter.logship import LogShipper
from calabi_exporter.store import Store
from calabi_exporter.timeutil import format_rfc3339
from calabi_exporter.web import create_app

from tests.support.job_history import HistoryJob, post_records_then_logs
from tests.support.logql_samples import logql_queries
from tests.support.loki_server import MAPPINGS, Loki, ship_everything, true_time
from tests.support.paths import ROOT

SERVICE = "calabi-connect"  # what the dashboards select: no other test ships under this name
SALESFORCE = "Salesforce → Snowflake"
HUBSPOT = "HubSpot → BigQuery"


def dataset(now: float) -> list[HistoryJob]:
    """A failed job with the product's error, rate-limit and schema lines, and a succeeded one two hours old."""
    failed = (
        "Syncing stream: Account",
        "Stream Account: 4,218 records synced in 18.2s",
        "Salesforce API rate limit at 85% — throttling requests",
        "Retrying after 30s backoff",
        'Failed to refresh OAuth token for source "HubSpot Production"',
        'Response 401: {"error": "invalid_token"}',
        "Stream Contact: schema mismatch on column email (type cast failed)",
    )
    start = now - 1200
    sf = HistoryJob(
        {
            "job_id": "job-sf-1",
            "connection_name": SALESFORCE,
            "status": "failed",
            "started_at": format_rfc3339(start),
            "finished_at": format_rfc3339(start + 60),
            "records_synced": 4218,
            "records_failed": 12,
            "bytes_synced": 3_200_000,
            "streams": [{"name": "Account", "status": "succeeded"}, {"name": "Contact", "status": "failed"}],
            "error_summary": "Stream Contact: schema mismatch",
        },
        tuple((start + i, text) for i, text in enumerate(failed)),
        ("INFO", "INFO", "WARN", "INFO", "ERROR", "ERROR", "ERROR"),
    )
    old = now - 7200
    hs = HistoryJob(
        {
            "job_id": "job-hs-1",
            "connection_name": HUBSPOT,
            "status": "succeeded",
            "started_at": format_rfc3339(old),
            "finished_at": format_rfc3339(old + 30),
            "records_synced": 1200,
            "records_failed": 0,
            "bytes_synced": 90_000,
            "streams": [{"name": "contacts", "status": "succeeded"}],
        },
        ((old + 1, "Syncing stream: contacts"), (old + 5, "Stream contacts: 1,200 records synced in 4.0s")),
    )
    return [sf, hs]


def document_queries(name: str) -> list[tuple[str, str]]:
    """(where, LogQL) of every query in the ``logql`` blocks of a document."""
    text = (ROOT / name).read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```logql\n(.*?)```", text, flags=re.S):
        for number, line in enumerate(block.splitlines()):
            if line.strip() and not line.startswith("#"):
                out.append((f"{name} logql line {number}", line))
    return out


#: Grafana's values for the dashboards' variables: one connection, or All (``.*``).
ONE = {"$connection": SALESFORCE, "$status": ".*", "$job_id": "job-sf-1", "$level": ".*", "$search": ""}
ALL = {**ONE, "$connection": ".*"}
PLACEHOLDERS = {"<connection>": SALESFORCE, "<job_id>": "job-sf-1", "job_01HV8X": "job-sf-1"}  # docs/logs.md's id


def substituted(expr: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        expr = expr.replace(name, value)
    return expr


@pytest.fixture(scope="module")
def shipped(lokis: dict[str, Loki], tmp_path_factory: pytest.TempPathFactory) -> Iterator[float]:
    """The data set shipped by the exporter to both Lokis; yields the time it was made for."""
    now = time.time()
    jobs = dataset(now)
    expected = sum(len(j.lines) + 1 for j in jobs)
    for mapping, loki in lokis.items():
        config = Config(
            data_dir=str(tmp_path_factory.mktemp(f"logql-{mapping}")),
            otlp_logs_endpoint=loki.otlp_url,
            service_instance_id="exporter-1",
        )
        store = Store.sqlite(config.data_path, outbox=True)
        shipper = LogShipper(store, config)
        post_records_then_logs(create_app(config, store=store).test_client(), "", jobs)
        ship_everything(shipper, store)
        assert store.outbox.dead_letters() == []
        shipper.stop()
        store.close()
        loki.flush(f'{{service_name="{SERVICE}"}}', expected=expected, at=now + 60, days=1)
    yield now


def rows(loki: Loki, expr: str, now: float) -> Any:
    """What a query returns, keyed so that two Lokis can be compared: log lines by true time, samples by labels."""
    if expr.startswith(("sum", "count", "rate")):
        params = {"query": expr, "time": str(int((now + 60) * 1e9))}
        response = requests.get(loki.url + "/loki/api/v1/query", params=params, timeout=30)
        assert response.status_code == 200, (expr, response.text)
        return sorted((sorted(r["metric"].items()), r["value"][1]) for r in response.json()["data"]["result"])
    entries = loki.entries(expr, start=now - 86400, end=now + 60)
    return sorted((round(true_time(e), 3), e.line) for e in entries)


QUERIES = [
    *(
        pytest.param(expr, values, id=f"{where} ({label})")
        for where, expr in logql_queries()
        for label, values in (("one connection", ONE), ("All", ALL))
    ),
    *(pytest.param(expr, PLACEHOLDERS, id=where) for where, expr in document_queries("docs/runbook.md")),
    *(pytest.param(expr, PLACEHOLDERS, id=where) for where, expr in document_queries("docs/logs.md")),
]


@pytest.mark.parametrize(("expr", "values"), QUERIES)
def test_the_query_returns_the_same_rows_with_the_projects_mapping_and_lokis_default(
    expr: str, values: dict[str, str], lokis: dict[str, Loki], shipped: float
) -> None:
    query = substituted(expr, values)

    found = {mapping: rows(lokis[mapping], query, shipped) for mapping in MAPPINGS}

    assert found["project"], query
    assert found["project"] == found["default"], query


def test_the_logs_panel_shows_the_true_time_of_a_line_loki_took_later(lokis: dict[str, Loki], shipped: float) -> None:
    (logs,) = [expr for where, expr in logql_queries() if where == "calabi-sync-job / Logs"]
    query = substituted(logs, {**ONE, "$job_id": "job-hs-1"})
    old = shipped - 7200

    for loki in lokis.values():
        lines = [e.line for e in loki.entries(query, start=shipped - 86400, end=shipped + 60)]
        assert lines == [
            f"[{format_rfc3339(old + 1)}] Syncing stream: contacts",
            f"[{format_rfc3339(old + 5)}] Stream contacts: 1,200 records synced in 4.0s",
        ]


def test_the_jobs_table_shows_each_jobs_true_finish_time(lokis: dict[str, Loki], shipped: float) -> None:
    (jobs,) = [expr for where, expr in logql_queries() if where == "calabi-sync-jobs / Jobs"]
    board = json.loads((ROOT / "dashboards" / "calabi-sync-jobs.json").read_text(encoding="utf-8"))
    (table,) = [p for p in board["panels"] if p["title"] == "Jobs"]
    columns = next(t for t in table["transformations"] if t["id"] == "organize")["options"]["includeByName"]

    for loki in lokis.values():
        entries = loki.entries(substituted(jobs, ALL), start=shipped - 86400, end=shipped + 60)
        assert sorted((e.labels["job_id"], e.labels["finished_at"]) for e in entries) == [
            ("job-hs-1", format_rfc3339(shipped - 7200 + 30)),
            ("job-sf-1", format_rfc3339(shipped - 1200 + 60)),
        ]
    assert "finished_at" in columns and "Time" not in columns
