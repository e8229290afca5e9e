"""Failed jobs reach Slack, email, the webhook and PagerDuty through the real Prometheus and Alertmanager.

The exporter, Debian's Prometheus (both shipped rules files with a deployment's own links, as
``alerting-rules/build.py`` writes them; 1 s evaluation) and Debian's Alertmanager (the shipped config
and templates, with short group waits and local endpoints from a test overlay) run on loopback; local
capture servers stand in for Slack, PagerDuty's Events API, the custom webhook and SMTP.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from calabi_exporter.timeutil import format_rfc3339

from tests.support.capture_servers import HttpCapture, SmtpCapture
from tests.support.exporter_process import ExporterProcess
from tests.support.paths import ROOT, RULE_FILES
from tests.support.processes import free_port, require_binary, start_server, stop_server
from tests.support.prometheus_server import Prometheus
from tests.support.waiting import wait_until

RULES_DIR = ROOT / "alerting-rules"
CONNECTION = "Salesforce → Snowflake"
ROUTING_KEY = "test-routing-key-0123456789"
# The jobs ran within the last hour: a connection whose history is days old and never succeeded is
# stale (CalabiSyncStale), which is not what this test is about.
BASE = int(time.time()) // 3600 * 3600 - 3600
DEADLINE = 60  # seconds for each step: scrape 1 s, evaluation 1 s, group wait 1 s, and slack
RUNBOOK_URL = "https://wiki.example.com/calabi/runbook"
GRAFANA_URL = "https://grafana.example.com"


def rules_with_links(tmp_path: Path) -> list[Path]:
    """The shipped rules files with this deployment's runbook and Grafana, from the generator."""
    spec = importlib.util.spec_from_file_location("alerting_rules_build", RULES_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    paths = []
    for shipped in RULE_FILES:
        path = tmp_path / shipped.name
        slo = shipped.name == build.SLO_RULES.name
        path.write_text(build.rules_text(RUNBOOK_URL, GRAFANA_URL, slo=slo), encoding="utf-8")
        paths.append(path)
    return paths


def overlay(tmp_path: Path, http: HttpCapture, smtp: SmtpCapture) -> Path:
    """The shipped alertmanager.yml with local endpoints, secret files and short waits."""
    config: dict[str, Any] = yaml.safe_load((RULES_DIR / "alertmanager.yml").read_text(encoding="utf-8"))
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "slack_webhook_url").write_text(http.url("/slack"))
    (secrets / "pagerduty_routing_key").write_text(ROUTING_KEY)
    config["global"].update(smtp_smarthost=f"127.0.0.1:{smtp.port}", smtp_require_tls=False)
    for key in ("smtp_auth_username", "smtp_auth_password_file"):
        config["global"].pop(key)
    config["templates"] = [str(RULES_DIR / "templates" / "*.tmpl")]
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for route in config["route"]["routes"]:
        route.update(group_wait="1s", group_interval="1s")
    receivers = {r["name"]: r for r in config["receivers"]}
    receivers["team"]["slack_configs"][0]["api_url_file"] = str(secrets / "slack_webhook_url")
    receivers["team"]["webhook_configs"][0]["url"] = http.url("/webhook")
    pagerduty = receivers["pagerduty"]["pagerduty_configs"][0]
    pagerduty["routing_key_file"] = str(secrets / "pagerduty_routing_key")
    pagerduty["url"] = http.url("/pagerduty/v2/enqueue")
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def captures() -> Iterator[tuple[HttpCapture, SmtpCapture]]:
    http, smtp = HttpCapture(), SmtpCapture()
    http.start()
    smtp.start()
    yield http, smtp
    http.stop()
    smtp.stop()


@pytest.fixture
def alertmanager(tmp_path: Path, captures: tuple[HttpCapture, SmtpCapture]) -> Iterator[str]:
    http, smtp = captures
    config = overlay(tmp_path, http, smtp)
    port = free_port()
    process, log = start_server(
        [
            require_binary("prometheus-alertmanager"),
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        ready_url=f"http://127.0.0.1:{port}/-/ready",
        log_path=tmp_path / "alertmanager.log",
        what="Alertmanager",
    )
    yield f"127.0.0.1:{port}"
    stop_server(process)
    log.close()


def post_job(exporter: ExporterProcess, job_id: str, status: str, minute: int, error: str | None = None) -> None:
    record = {
        "job_id": job_id,
        "connection_name": CONNECTION,
        "status": status,
        "started_at": format_rfc3339(BASE + minute * 60 + 1),
        "finished_at": format_rfc3339(BASE + (minute + 3) * 60 + 17),
        "error_summary": error,
        "job_url": f"https://app.calabi.io/connect/jobs/{job_id}",
    }
    response = requests.post(exporter.url + "/api/v1/jobs", json=record, timeout=10)
    assert response.status_code == 200, response.text


def go_time(epoch: float) -> str:
    """A time as Alertmanager's templates print it (Go's time.Time)."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def slack_texts(http: HttpCapture) -> list[str]:
    return [
        f"{b.get('attachments', [{}])[0].get('title', '')}\n{b['attachments'][0].get('text', '')}"
        for b in http.bodies("/slack")
    ]


@pytest.mark.slow
def test_a_failure_notifies_slack_and_email_a_second_pages_and_a_success_resolves(
    exporter_process: Callable[..., ExporterProcess],
    prometheus_for: Callable[..., Prometheus],
    alertmanager: str,
    captures: tuple[HttpCapture, SmtpCapture],
    tmp_path: Path,
) -> None:
    http, smtp = captures
    exporter = exporter_process()
    prometheus_for(f"127.0.0.1:{exporter.port}", rule_files=rules_with_links(tmp_path), alertmanager=alertmanager)

    # 1. A failed job: Slack, email and the webhook hear of it; PagerDuty does not. (Not an authentication
    # error: CalabiSyncAuthFailing would stand for the others, see the next test.)
    post_job(exporter, "job_01HX4M9QZPKR", "failed", 0, "Stream Account: 500 Internal Server Error from the source API")
    wait_until(lambda: any("job_01HX4M9QZPKR" in t for t in slack_texts(http)), timeout=DEADLINE, what="Slack")
    wait_until(lambda: any("job_01HX4M9QZPKR" in t for t in smtp.texts()), timeout=DEADLINE, what="email")
    wait_until(lambda: http.bodies("/webhook"), timeout=DEADLINE, what="the webhook")
    slack = next(t for t in slack_texts(http) if "job_01HX4M9QZPKR" in t)
    for expected in (
        CONNECTION,
        "Stream Account: 500 Internal Server Error from the source API",
        "https://app.calabi.io/connect/jobs/job_01HX4M9QZPKR",
        f"Started at: {go_time(BASE + 1)}",
        f"Failed at: {go_time(BASE + 3 * 60 + 17)}",
        f"Summary and logs: {GRAFANA_URL}/d/calabi-sync-job/calabi-sync-job"
        "?var-connection=Salesforce+%E2%86%92+Snowflake&var-job_id=job_01HX4M9QZPKR",
        f"Runbook: {RUNBOOK_URL}#calabisyncjobfailed",
    ):
        assert expected in slack
    email = next(t for t in smtp.texts() if "job_01HX4M9QZPKR" in t)
    assert CONNECTION in email and "Stream Account: 500 Internal Server Error from the source API" in email
    webhook = http.bodies("/webhook")[0]
    assert webhook["status"] == "firing" and webhook["commonLabels"]["alertname"] == "CalabiSyncJobFailed"
    assert http.bodies("/pagerduty/v2/enqueue") == []

    # 2. A second failure in a row: PagerDuty gets a trigger with the routing key and the connection's dedup key.
    post_job(exporter, "job_01HX4MB2", "failed", 10, "Stream Account: 500 Internal Server Error from the source API")
    wait_until(lambda: http.bodies("/pagerduty/v2/enqueue"), timeout=DEADLINE, what="a PagerDuty event")
    trigger = http.bodies("/pagerduty/v2/enqueue")[0]
    assert trigger["event_action"] == "trigger"
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["dedup_key"]
    assert trigger["payload"]["custom_details"]["connection"] == CONNECTION

    # 3. A success: Slack and PagerDuty hear that it is resolved.
    post_job(exporter, "job_01HX4MC3", "succeeded", 20)
    wait_until(
        lambda: any(b["event_action"] == "resolve" for b in http.bodies("/pagerduty/v2/enqueue")),
        timeout=DEADLINE,
        what="PagerDuty resolve",
    )
    resolve = next(b for b in http.bodies("/pagerduty/v2/enqueue") if b["event_action"] == "resolve")
    assert resolve["dedup_key"] == trigger["dedup_key"]
    wait_until(
        lambda: any(t.startswith("[RESOLVED] CalabiSyncConsecutiveFailures") for t in slack_texts(http)),
        timeout=DEADLINE,
        what="the resolved Slack message",
    )
    assert any(b["status"] == "resolved" for b in http.bodies("/webhook"))


def post_alerts(alertmanager: str, alerts: list[dict[str, str]]) -> None:
    """Firing alerts, as Prometheus sends them (API v2), each with the labels the rules give it."""
    now = format_rfc3339(time.time())
    body = [{"labels": labels, "annotations": {"summary": labels["alertname"]}, "startsAt": now} for labels in alerts]
    response = requests.post(f"http://{alertmanager}/api/v2/alerts", json=body, timeout=10)
    assert response.status_code == 200, response.text


def test_one_expired_token_pages_once_and_notifies_once_while_another_connection_still_notifies(
    alertmanager: str, captures: tuple[HttpCapture, SmtpCapture]
) -> None:
    http, _ = captures
    other = "Stripe → Postgres"
    # What the rules fire for a connection whose OAuth token expired (its second failed job), beside
    # a single failure of another connection.
    post_alerts(
        alertmanager,
        [
            {"alertname": "CalabiSyncJobFailed", "severity": "warning", "connection": CONNECTION, "job_id": "j2"},
            {"alertname": "CalabiSyncConsecutiveFailures", "severity": "critical", "connection": CONNECTION},
            {"alertname": "CalabiSyncAuthFailing", "severity": "critical", "connection": CONNECTION},
            {"alertname": "CalabiSyncJobFailed", "severity": "warning", "connection": other, "job_id": "k1"},
        ],
    )

    def states() -> dict[tuple[str, str], tuple[str, list[str]]]:
        alerts = requests.get(f"http://{alertmanager}/api/v2/alerts", timeout=10).json()
        by_fingerprint = {a["fingerprint"]: a["labels"]["alertname"] for a in alerts}
        return {
            (a["labels"]["alertname"], a["labels"]["connection"]): (
                a["status"]["state"],
                sorted(by_fingerprint[f] for f in a["status"]["inhibitedBy"]),
            )
            for a in alerts
        }

    wait_until(
        lambda: len(http.bodies("/slack")) >= 2 and http.bodies("/pagerduty/v2/enqueue") != [],
        timeout=DEADLINE,
        what="notifications",
    )
    time.sleep(3)  # three group intervals (1 s here): a notification still to come would have come

    assert states() == {
        ("CalabiSyncAuthFailing", CONNECTION): ("active", []),
        ("CalabiSyncConsecutiveFailures", CONNECTION): ("suppressed", ["CalabiSyncAuthFailing"]),
        ("CalabiSyncJobFailed", CONNECTION): ("suppressed", ["CalabiSyncAuthFailing"]),  # the first rule's source
        ("CalabiSyncJobFailed", other): ("active", []),
    }
    notified = sorted(  # the custom webhook gets Alertmanager's JSON: which alerts each notification held
        (alert["labels"]["alertname"], alert["labels"]["connection"])
        for body in http.bodies("/webhook")
        for alert in body["alerts"]
    )
    assert notified == [("CalabiSyncAuthFailing", CONNECTION), ("CalabiSyncJobFailed", other)]
    assert len(http.bodies("/slack")) == 2
    pages = http.bodies("/pagerduty/v2/enqueue")
    assert [(p["event_action"], p["payload"]["custom_details"]["connection"]) for p in pages] == [
        ("trigger", CONNECTION)
    ]


def inhibitions(alertmanager: str) -> dict[tuple[str, str], list[str]]:
    """(alert, connection) -> the names of the alerts holding it back, as Alertmanager reports them."""
    alerts = requests.get(f"http://{alertmanager}/api/v2/alerts", timeout=10).json()
    names = {a["fingerprint"]: a["labels"]["alertname"] for a in alerts}
    return {
        (a["labels"]["alertname"], a["labels"]["connection"]): sorted(names[f] for f in a["status"]["inhibitedBy"])
        for a in alerts
    }


def test_an_overdue_connection_holds_back_its_own_stale_alert_but_not_another_connections(alertmanager: str) -> None:
    other = "Stripe → Postgres"
    post_alerts(
        alertmanager,
        [
            {"alertname": "CalabiSyncOverdue", "severity": "warning", "connection": CONNECTION},
            {"alertname": "CalabiSyncStale", "severity": "warning", "connection": CONNECTION},
            {"alertname": "CalabiSyncStale", "severity": "warning", "connection": other},
        ],
    )
    expected = {
        ("CalabiSyncOverdue", CONNECTION): [],
        ("CalabiSyncStale", CONNECTION): ["CalabiSyncOverdue"],
        ("CalabiSyncStale", other): [],
    }

    wait_until(lambda: inhibitions(alertmanager) == expected, timeout=DEADLINE, what="the inhibitions")


def test_failures_in_a_row_hold_back_the_error_budget_burn_of_the_same_connection(alertmanager: str) -> None:
    other = "Stripe → Postgres"
    burn = {"alertname": "CalabiSyncErrorBudgetBurn", "severity": "critical", "window": "6h/30m"}
    post_alerts(
        alertmanager,
        [
            {"alertname": "CalabiSyncConsecutiveFailures", "severity": "critical", "connection": CONNECTION},
            burn | {"connection": CONNECTION},
            burn | {"connection": other},
        ],
    )
    expected = {
        ("CalabiSyncConsecutiveFailures", CONNECTION): [],
        ("CalabiSyncErrorBudgetBurn", CONNECTION): ["CalabiSyncConsecutiveFailures"],
        ("CalabiSyncErrorBudgetBurn", other): [],
    }

    wait_until(lambda: inhibitions(alertmanager) == expected, timeout=DEADLINE, what="the inhibitions")
