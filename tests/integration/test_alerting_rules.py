"""The shipped rule files load in Debian's promtool and pass their unit tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from tests.support.paths import ROOT, RULE_FILES
from tests.support.processes import free_port, require_binary
from tests.support.waiting import wait_until

RULES_DIR = ROOT / "alerting-rules"
TEST_FILES = sorted(RULES_DIR.glob("*.tests.yml"))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120, check=False
    )


def test_every_rule_file_in_the_directory_is_one_the_tests_load() -> None:
    assert sorted(RULES_DIR.glob("*.rules.yml")) == sorted(RULE_FILES)


def test_every_rule_file_passes_promtool_check_rules() -> None:
    result = promtool("check", "rules", *(p.name for p in RULE_FILES))

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
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


def run_build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RULES_DIR / "build.py"), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("options", "name"), [([], "calabi-sync.rules.yml"), (["--slo"], "calabi-slo.rules.yml")], ids=["sync", "slo"]
)
def test_the_generator_with_the_default_links_writes_the_committed_rules_file(options: list[str], name: str) -> None:
    result = run_build(*options)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (RULES_DIR / name).read_text(encoding="utf-8")


def test_the_slo_rules_file_says_it_is_generated_and_how() -> None:
    header = (RULES_DIR / "calabi-slo.rules.yml").read_text(encoding="utf-8").splitlines()[:2]

    assert header == [
        "# Generated by alerting-rules/build.py from its SLO table (BURN_RATES and the constants beside it);",
        "# do not edit: python alerting-rules/build.py --slo -o alerting-rules/calabi-slo.rules.yml",
    ]


@pytest.mark.parametrize(
    ("options", "name", "alert_rules"),
    [
        pytest.param([], "calabi-sync.rules.yml", 19, id="sync"),
        pytest.param(["--slo"], "calabi-slo.rules.yml", 4, id="slo"),  # CalabiSyncErrorBudgetBurn, one per window
    ],
)
def test_rules_generated_with_a_deployments_links_point_every_alert_there_and_load_in_promtool(
    tmp_path: Path, options: list[str], name: str, alert_rules: int
) -> None:
    output = tmp_path / name

    result = run_build(
        *options, "--runbook-url", "https://wiki.example.com/ops/calabi-runbook/",
        "--grafana-url", "https://grafana.example.com", "-o", str(output),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    shipped = [r for g in yaml.safe_load((RULES_DIR / name).read_text())["groups"] for r in g["rules"]]
    built = [r for g in yaml.safe_load(output.read_text())["groups"] for r in g["rules"]]
    alerts = [rule for rule in built if "alert" in rule]
    assert len(alerts) == alert_rules
    for rule in alerts:
        links = rule["annotations"]
        assert links["runbook_url"] == f"https://wiki.example.com/ops/calabi-runbook#{rule['alert'].lower()}"
        assert links["dashboard_url"].startswith("https://grafana.example.com/d/calabi-")
    for before, after in zip(shipped, built, strict=True):  # nothing else changes
        assert {k: v for k, v in before.items() if k != "annotations"} == {
            k: v for k, v in after.items() if k != "annotations"
        }
        assert before.get("annotations", {}).keys() == after.get("annotations", {}).keys()
    check = subprocess.run(
        [require_binary("promtool"), "check", "rules", str(output)], capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("bad", ["https://grafana.example.com/d?x=1", "https://wiki example.com", "'quoted'", ""])
def test_a_base_url_that_would_break_the_links_is_refused(bad: str) -> None:
    result = run_build("--grafana-url", bad)

    assert result.returncode == 2
    assert "--grafana-url: must be a URL without spaces" in result.stderr


def test_the_null_alertmanager_config_is_what_the_generator_writes_and_passes_amtool() -> None:
    result = run_build("--null-alertmanager")

    assert result.returncode == 0, result.stderr
    assert result.stdout == (RULES_DIR / "alertmanager-null.yml").read_text(encoding="utf-8")
    checked = amtool("check-config", "alertmanager-null.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_null_config_routes_and_inhibits_as_the_real_one_and_names_no_secret() -> None:
    real = yaml.safe_load((RULES_DIR / "alertmanager.yml").read_text(encoding="utf-8"))
    null = yaml.safe_load((RULES_DIR / "alertmanager-null.yml").read_text(encoding="utf-8"))

    assert (null["route"], null["inhibit_rules"]) == (real["route"], real["inhibit_rules"])
    assert null["receivers"] == [{"name": "team"}, {"name": "pagerduty"}]
    assert "_file" not in (RULES_DIR / "alertmanager-null.yml").read_text(encoding="utf-8").replace("# ", "")


#: Each inhibit rule of alertmanager.yml: the alert that holds others back, and the ones it holds back.
INHIBITIONS = [
    ("CalabiSyncAuthFailing", 'alertname=~"CalabiSyncJobFailed|CalabiSyncConsecutiveFailures"'),
    ("CalabiSyncConsecutiveFailures", 'alertname="CalabiSyncJobFailed"'),
    ("CalabiSyncOverdue", 'alertname="CalabiSyncStale"'),
    ("CalabiSyncConsecutiveFailures", 'alertname="CalabiSyncErrorBudgetBurn"'),
]


def test_every_inhibit_rule_requires_the_label_it_compares_on_its_source() -> None:
    """An inhibit rule whose ``equal`` labels are missing on both sides mutes every target alert."""
    rules = yaml.safe_load((RULES_DIR / "alertmanager.yml").read_text(encoding="utf-8"))["inhibit_rules"]

    assert rules == [
        {
            "source_matchers": [f'alertname="{source}"', 'connection=~".+"'],
            "target_matchers": [targets],
            "equal": ["connection"],
        }
        for source, targets in INHIBITIONS
    ]


def start_script(config: Path, tmp_path: Path, port: int = 0) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "sh",
            str(RULES_DIR / "start-alertmanager.sh"),
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        env={**os.environ, "ALERTMANAGER_BIN": require_binary("prometheus-alertmanager")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_alertmanager_refuses_to_start_while_a_secret_file_is_missing(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "slack_webhook_url").write_text("https://hooks.slack.com/services/T0/B0/x\n")
    (secrets / "smtp_password").write_text("")  # there, but empty
    config = tmp_path / "alertmanager.yml"
    config.write_text((RULES_DIR / "alertmanager.yml").read_text().replace("/etc/alertmanager/secrets", str(secrets)))

    process = start_script(config, tmp_path)
    stdout, stderr = process.communicate(timeout=60)

    assert (process.returncode, stdout) == (1, b"")
    assert stderr.decode().splitlines() == [
        f"alertmanager: refusing to start: {config} names secret files that are missing or empty: "
        f"{secrets}/smtp_password {secrets}/pagerduty_routing_key",
        "alertmanager: put them in alerting-rules/secrets/ (its README says what goes in each), "
        "or set ALERTMANAGER_CONFIG=alertmanager-null.yml in .env to run without notifications",
    ]


@pytest.mark.parametrize("chosen", ["alertmanager.yml", "alertmanager-null.yml"])
def test_alertmanager_starts_with_every_secret_in_place_or_with_the_null_config(tmp_path: Path, chosen: str) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("slack_webhook_url", "smtp_password", "pagerduty_routing_key"):
        (secrets / name).write_text("https://hooks.slack.com/services/T0/B0/x" if name.startswith("slack") else "x1")
    config = tmp_path / chosen
    config.write_text((RULES_DIR / chosen).read_text().replace("/etc/alertmanager/secrets", str(secrets)))
    (tmp_path / "templates").symlink_to(RULES_DIR / "templates")
    port = free_port()
    process = start_script(config, tmp_path, port)

    def ready() -> bool:
        assert process.poll() is None, process.communicate()
        try:
            return requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(ready, timeout=30, what=f"Alertmanager on {chosen}")
    finally:
        process.terminate()
        process.communicate(timeout=30)
