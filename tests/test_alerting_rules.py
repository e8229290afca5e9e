"""The shipped rule files load in Debian's promtool and pass their unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import require_binary

RULES_DIR = Path(__file__).resolve().parent.parent / "alerting-rules"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
TEST_FILES = sorted(RULES_DIR.glob("*.tests.yml"))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120, check=False
    )


def test_every_rule_file_passes_promtool_check_rules() -> None:
    assert RULE_FILES
    result = promtool("check", "rules", *(p.name for p in RULE_FILES))

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_has_promtool_unit_tests_and_they_pass() -> None:
    result = promtool("test", "rules", *(p.name for p in TEST_FILES))

    assert result.returncode == 0, result.stdout + result.stderr
    tested = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", [])}
            tested |= {t["expr"] for t in case.get("promql_expr_test", [])}
    rules = [r for p in RULE_FILES for g in yaml.safe_load(p.read_text(encoding="utf-8"))["groups"] for r in g["rules"]]
    assert {r.get("alert") or r["record"] for r in rules} <= tested


def test_every_alert_carries_severity_summary_description_runbook_and_dashboard() -> None:
    alerts = [
        r
        for p in RULE_FILES
        for g in yaml.safe_load(p.read_text(encoding="utf-8"))["groups"]
        for r in g["rules"]
        if "alert" in r
    ]
    for alert in alerts:
        assert alert["alert"][0].isupper() and "_" not in alert["alert"], alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning", "info"), alert["alert"]
        assert {"summary", "description", "runbook_url", "dashboard_url"} <= set(alert["annotations"]), alert["alert"]
        assert alert["annotations"]["runbook_url"] == f"docs/runbook.md#{alert['alert'].lower()}"


def test_every_alert_has_a_runbook_section() -> None:
    runbook = (RULES_DIR.parent / "docs" / "runbook.md").read_text(encoding="utf-8")
    sections = {line[3:].strip().lower() for line in runbook.splitlines() if line.startswith("## ")}
    alerts = {
        r["alert"].lower()
        for p in RULE_FILES
        for g in yaml.safe_load(p.read_text(encoding="utf-8"))["groups"]
        for r in g["rules"]
        if "alert" in r
    }

    assert alerts <= sections
    assert "Retry without reset" in runbook and "Reset and Re-Sync" in runbook


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("amtool"), *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_alertmanager_config_passes_amtool_check_config() -> None:
    result = amtool("check-config", "alertmanager.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "templates" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["severity=warning", "alertname=CalabiSyncJobFailed", "connection=Stripe → Postgres"], "team"),
        (["severity=info", "alertname=CalabiSyncRateLimitHigh", "connection=Stripe → Postgres"], "team"),
        (
            ["severity=critical", "alertname=CalabiSyncConsecutiveFailures", "connection=Stripe → Postgres"],
            "pagerduty,team",
        ),
        (["severity=critical", "alertname=CalabiExporterDown", "instance=exporter:9188"], "pagerduty,team"),
    ],
)
def test_warnings_go_to_slack_email_and_webhook_and_critical_alerts_also_page(
    labels: list[str], receivers: str
) -> None:
    # The "team" receiver holds Slack, email and the custom webhook; "pagerduty" only PagerDuty.
    result = amtool(
        "config", "routes", "test", "--config.file=alertmanager.yml", f"--verify.receivers={receivers}", *labels
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receivers


def test_the_team_receiver_has_slack_email_and_webhook_with_resolved_and_secrets_in_files() -> None:
    config = yaml.safe_load((RULES_DIR / "alertmanager.yml").read_text(encoding="utf-8"))
    receivers = {r["name"]: r for r in config["receivers"]}
    team, pagerduty = receivers["team"], receivers["pagerduty"]

    assert [len(team[k]) for k in ("slack_configs", "email_configs", "webhook_configs")] == [1, 1, 1]
    assert all(c["send_resolved"] for k in ("slack_configs", "email_configs", "webhook_configs") for c in team[k])
    assert "api_url" not in team["slack_configs"][0] and team["slack_configs"][0]["api_url_file"]
    assert "routing_key" not in pagerduty["pagerduty_configs"][0]
    assert pagerduty["pagerduty_configs"][0]["routing_key_file"]
    assert "smtp_auth_password" not in config["global"] and config["global"]["smtp_auth_password_file"]
    assert config["route"]["group_by"] == ["alertname", "connection"]
